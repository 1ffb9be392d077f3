// Multi-scale deformable attention on CUDA (Deformable DETR eq. 3), forward and backward: float32 / float64 /
// float16 / bfloat16 values, float32 (float64) positions, weights and accumulation, output in value's dtype.
// Registered under TORCH_LIBRARY_IMPL(rotated_ddetr, CUDA). Inputs are checked without a device-to-host copy
// (ms_deform_attn_checks.h): metadata on the host, the level table by an asynchronous assert on the stream.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace rotated_ddetr::msda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// The D channels of one (batch, query, head) group are spread over `lanes` consecutive lanes of a warp: 32 when
// D > 16, otherwise the next power of two >= D, so small heads still fill the warp (several groups per warp) and
// the lanes of a group read value[b, token, m, :] with coalesced loads.
int lanes_for(int64_t channels) {
  int lanes = 1;
  while (lanes < channels && lanes < kWarp) lanes *= 2;
  return lanes;
}

// Sizes of one launch (one im2col_step chunk of the batch); pointers are offset to the chunk's first batch.
struct Launch {
  int64_t groups;   // chunk batch * Q * M
  int64_t tokens;   // S
  int64_t queries;  // Q
  int heads, channels, levels, points, lanes;
};

// The lanes of this thread's group; a group never straddles a warp because `lanes` divides 32.
__device__ __forceinline__ unsigned group_mask(int lanes) {
  if (lanes == kWarp) return 0xffffffffu;
  const int first = (threadIdx.x % kWarp) / lanes * lanes;
  return ((1u << lanes) - 1u) << first;
}

template <typename T>
__device__ __forceinline__ T group_sum(T v, unsigned mask, int lanes) {
  for (int offset = lanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset, lanes);
  return v;
}

// One thread per (b, q, m, channel): eq. 3's sum over levels and points for one output channel, in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                   const int64_t* __restrict__ starts, const acc_t* __restrict__ locs,
                   const acc_t* __restrict__ weights, scalar_t* __restrict__ out, Launch n) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t g = thread / n.lanes;  // (b*Q + q)*M + m within the chunk
  if (g >= n.groups) return;
  const int64_t b = g / (n.queries * n.heads);
  const int64_t m = g % n.heads;
  const int64_t row = static_cast<int64_t>(n.heads) * n.channels;  // value's stride between tokens
  const scalar_t* v_bm = value + b * n.tokens * row + m * n.channels;
  for (int d = static_cast<int>(thread % n.lanes); d < n.channels; d += n.lanes) {
    acc_t acc = 0;
    const acc_t* loc = locs + g * n.levels * n.points * 2;
    const acc_t* att = weights + g * n.levels * n.points;
    for (int l = 0; l < n.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1], start = starts[l];
      for (int p = 0; p < n.points; ++p, loc += 2, ++att) {
        const Bilinear<acc_t> s = locate(loc[0], loc[1], height, width);
        if (!s.any) continue;
        Corner<acc_t> k;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (corner(s, c, height, width, k)) {
            acc += *att * k.weight * static_cast<acc_t>(v_bm[(start + k.token) * row + d]);
          }
        }
      }
    }
    out[g * n.channels + d] = static_cast<scalar_t>(acc);
  }
}

// Gradients of one sample for this lane's channel d (zero contributions from lanes past D): adds A * w_c * g to
// the value of each neighbour c, and returns this lane's parts of d/dA = sum_c w_c v_c g and of
// d/d(pixel x, y) = A * sum_c (d w_c / d pixel) v_c g.
template <typename scalar_t, typename acc_t, typename grad_t>
__device__ __forceinline__ void sample_backward(const Bilinear<acc_t>& s, int64_t height, int64_t width,
                                                const scalar_t* v, grad_t* grad_v, int64_t row, bool has_channel,
                                                acc_t g, acc_t att, acc_t& d_att, acc_t& d_x, acc_t& d_y) {
  d_att = d_x = d_y = 0;
  Corner<acc_t> k;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    if (!has_channel || !corner(s, c, height, width, k)) continue;
    const acc_t v_c = static_cast<acc_t>(v[k.token * row]);
    d_att += k.weight * v_c;
    d_x += k.dweight_dx * v_c;
    d_y += k.dweight_dy * v_c;
    atomicAdd(grad_v + k.token * row, static_cast<grad_t>(att * k.weight * g));
  }
  d_att *= g;
  d_x *= att * g;
  d_y *= att * g;
}

// A group of `lanes` threads per (b, q, m); each lane owns channels d = lane, lane + lanes, ... Value gradients are
// scattered with atomicAdd (many queries read the same pixel) into grad_t (float32 for half types). The location
// and weight gradients of a sample are summed over channels by shuffles inside the group; the group is their only
// writer, so they are stored without atomics and are deterministic.
template <typename scalar_t, typename acc_t, typename grad_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                    const int64_t* __restrict__ starts, const acc_t* __restrict__ locs,
                    const acc_t* __restrict__ weights, const scalar_t* __restrict__ grad_out,
                    grad_t* __restrict__ grad_value, acc_t* __restrict__ grad_locs, acc_t* __restrict__ grad_weights,
                    Launch n) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t g = thread / n.lanes;
  if (g >= n.groups) return;  // whole groups leave together: the shuffle masks below name only live groups
  const int lane = static_cast<int>(thread % n.lanes);
  const unsigned mask = group_mask(n.lanes);
  const int64_t b = g / (n.queries * n.heads);
  const int64_t m = g % n.heads;
  const int64_t row = static_cast<int64_t>(n.heads) * n.channels;
  const int64_t first = g * n.levels * n.points;  // the group's first sample
  for (int d0 = 0; d0 < n.channels; d0 += n.lanes) {
    const int d = d0 + lane;
    const bool has_channel = d < n.channels;
    const acc_t go = has_channel ? static_cast<acc_t>(grad_out[g * n.channels + d]) : acc_t(0);
    const int64_t offset = b * n.tokens * row + m * n.channels + (has_channel ? d : 0);
    for (int l = 0; l < n.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1], start = starts[l];
      for (int p = 0; p < n.points; ++p) {
        const int64_t i = first + l * n.points + p;
        const Bilinear<acc_t> s = locate(locs[2 * i], locs[2 * i + 1], height, width);
        if (!s.any) continue;  // the same for every lane of the group
        const acc_t att = weights[i];
        acc_t d_att, d_x, d_y;
        sample_backward(s, height, width, value + offset + start * row, grad_value + offset + start * row, row,
                        has_channel, go, att, d_att, d_x, d_y);
        d_att = group_sum(d_att, mask, n.lanes);
        d_x = group_sum(d_x, mask, n.lanes);
        d_y = group_sum(d_y, mask, n.lanes);
        if (lane == 0) {  // pixel = location * size - 0.5, hence the factors W and H
          grad_weights[i] += d_att;
          grad_locs[2 * i] += d_x * static_cast<acc_t>(width);
          grad_locs[2 * i + 1] += d_y * static_cast<acc_t>(height);
        }
      }
    }
  }
}

Launch launch_sizes(const Dims& d, int64_t chunk_batch) {
  return {chunk_batch * d.queries * d.heads,
          d.tokens,
          d.queries,
          static_cast<int>(d.heads),
          static_cast<int>(d.channels),
          static_cast<int>(d.levels),
          static_cast<int>(d.points),
          lanes_for(d.channels)};
}

unsigned blocks_for(const Launch& n) {
  const int64_t blocks = (n.groups * n.lanes + kThreads - 1) / kThreads;
  TORCH_CHECK_VALUE(blocks <= INT32_MAX, "ms_deform_attn: ", n.groups,
                    " (batch, query, head) groups in one launch are too many; lower im2col_step");
  return static_cast<unsigned>(blocks);
}

// Checks a CUDA call (metadata on the host, the level table asynchronously on value's device; no sync) and
// returns its sizes. The assert is enqueued on the current stream of value's device, where the caller's launches
// follow it.
Dims check_cuda_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                       const at::Tensor& sampling_locations, const at::Tensor& attention_weights, int64_t im2col_step) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              im2col_step, c10::DeviceType::CUDA, /*reduced_precision=*/true);
  TORCH_CHECK_VALUE(d.heads <= INT32_MAX && d.channels <= INT32_MAX && d.levels <= INT32_MAX &&
                        d.points <= INT32_MAX,
                    "ms_deform_attn: M, D, L and P must each fit in int32 on CUDA");
  const c10::cuda::CUDAGuard guard(value.device());  // valid now that value is known to be on CUDA
  assert_levels_async(spatial_shapes, level_start_index, d.tokens);
  return d;
}

// The forward inputs of one call, already checked.
struct Inputs {
  const at::Tensor &value, &spatial_shapes, &level_start_index, &locs, &weights;
};

template <typename scalar_t>
void launch_forward(const Inputs& x, const Dims& d, int64_t im2col_step, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The batch is processed im2col_step images per launch, as in the original implementation.
  for (int64_t b0 = 0; b0 < d.batch; b0 += im2col_step) {
    const Launch n = launch_sizes(d, std::min(im2col_step, d.batch - b0));
    if (n.groups == 0) continue;
    forward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        x.value.const_data_ptr<scalar_t>() + b0 * d.tokens * d.heads * d.channels,
        x.spatial_shapes.const_data_ptr<int64_t>(), x.level_start_index.const_data_ptr<int64_t>(),
        x.locs.const_data_ptr<acc_t>() + b0 * d.queries * d.heads * d.levels * d.points * 2,
        x.weights.const_data_ptr<acc_t>() + b0 * d.queries * d.heads * d.levels * d.points,
        out.mutable_data_ptr<scalar_t>() + b0 * d.queries * d.heads * d.channels, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void launch_backward(const Inputs& x, const Dims& d, int64_t im2col_step, const at::Tensor& grad_out,
                     at::Tensor& grad_value, at::Tensor& grad_locs, at::Tensor& grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // float16 / bfloat16 value gradients are summed by atomicAdd in a float32 buffer of one chunk (im2col_step
  // images), then rounded once into grad_value: the chunk bounds the buffer's memory.
  at::Tensor buffer;
  if constexpr (!direct) {
    buffer = at::empty({std::min(im2col_step, d.batch), d.tokens, d.heads, d.channels},
                       x.value.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  }
  for (int64_t b0 = 0; b0 < d.batch; b0 += im2col_step) {
    const int64_t chunk = std::min(im2col_step, d.batch - b0);
    const Launch n = launch_sizes(d, chunk);
    const int64_t value_offset = b0 * d.tokens * d.heads * d.channels;
    acc_t* grad_v = nullptr;
    if constexpr (direct) {
      grad_v = grad_value.mutable_data_ptr<acc_t>() + value_offset;
    } else {
      grad_v = buffer.zero_().mutable_data_ptr<acc_t>();
    }
    if (n.groups > 0) {
      const int64_t sample_offset = b0 * d.queries * d.heads * d.levels * d.points;
      backward_kernel<scalar_t, acc_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          x.value.const_data_ptr<scalar_t>() + value_offset, x.spatial_shapes.const_data_ptr<int64_t>(),
          x.level_start_index.const_data_ptr<int64_t>(), x.locs.const_data_ptr<acc_t>() + 2 * sample_offset,
          x.weights.const_data_ptr<acc_t>() + sample_offset,
          grad_out.const_data_ptr<scalar_t>() + b0 * d.queries * d.heads * d.channels, grad_v,
          grad_locs.mutable_data_ptr<acc_t>() + 2 * sample_offset,
          grad_weights.mutable_data_ptr<acc_t>() + sample_offset, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if constexpr (!direct) grad_value.narrow(0, b0, chunk).copy_(buffer.narrow(0, 0, chunk));
  }
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights, int64_t im2col_step) {
  const Dims d = check_cuda_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                   im2col_step);
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.channels}, value.options());
  const Inputs x{value, spatial_shapes, level_start_index, sampling_locations, attention_weights};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda",
                                  [&] { launch_forward<scalar_t>(x, d, im2col_step, out); });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output,
    int64_t im2col_step) {
  const Dims d = check_cuda_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                   im2col_step);
  const c10::cuda::CUDAGuard guard(value.device());
  check_grad_output(grad_output, value, d);
  // Accumulated with += / atomicAdd, so zero-initialised (half types: filled chunk by chunk from the buffer).
  const bool half_type = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  at::Tensor grad_value = half_type ? at::empty_like(value) : at::zeros_like(value);
  at::Tensor grad_locs = at::zeros_like(sampling_locations);
  at::Tensor grad_weights = at::zeros_like(attention_weights);
  const Inputs x{value, spatial_shapes, level_start_index, sampling_locations, attention_weights};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    launch_backward<scalar_t>(x, d, im2col_step, grad_output, grad_value, grad_locs, grad_weights);
  });
  return {grad_value, grad_locs, grad_weights};
}

}  // namespace
}  // namespace rotated_ddetr::msda

TORCH_LIBRARY_IMPL(rotated_ddetr, CUDA, m) {
  m.impl("ms_deform_attn", &rotated_ddetr::msda::ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &rotated_ddetr::msda::ms_deform_attn_backward_cuda);
}
