// Multi-scale deformable attention on CPU (Deformable DETR eq. 3), forward and backward, float32 / float64.
// Sampling and weighting are fused: each output row is accumulated straight from value, with no per-level or
// per-sample intermediate tensors. Inputs are checked first (ms_deform_attn_checks.h), the level table on the host.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace rotated_ddetr::msda {
namespace {

// The sizes of a checked CPU call and its level table, read on the host.
struct Checked {
  Dims dims;
  std::vector<Level> levels;
};

Checked check_cpu_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, int64_t im2col_step) {
  const Dims dims = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                 im2col_step, c10::DeviceType::CPU, /*reduced_precision=*/false);
  return {dims, read_levels(spatial_shapes, level_start_index, dims.tokens)};
}

template <typename T>
inline void axpy(int64_t n, T a, const T* __restrict__ x, T* __restrict__ y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename scalar_t>
void forward_kernel(const Checked& in, const scalar_t* value, const scalar_t* locs, const scalar_t* weights,
                    scalar_t* out) {
  const Dims& d = in.dims;
  const int64_t row = d.heads * d.channels;          // value's stride between tokens
  const int64_t samples = d.levels * d.points;       // samples of one (b, q, m)
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, samples * d.channels));
  // Task g = (b*Q + q)*M + m owns out[b, q, m*D:(m+1)*D]: eq. 3's sum over levels and points, accumulated in place.
  at::parallel_for(0, d.batch * d.queries * d.heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t b = g / (d.queries * d.heads);
      const int64_t m = g % d.heads;
      const scalar_t* v_bm = value + b * d.tokens * row + m * d.channels;
      scalar_t* o = out + g * d.channels;
      std::fill(o, o + d.channels, scalar_t(0));
      const scalar_t* loc = locs + g * samples * 2;
      const scalar_t* att = weights + g * samples;
      for (const Level& lv : in.levels) {
        for (int64_t p = 0; p < d.points; ++p, loc += 2, ++att) {
          const Bilinear<scalar_t> s = locate(loc[0], loc[1], lv.height, lv.width);
          Corner<scalar_t> k;
          for (int c = 0; s.any && c < 4; ++c) {
            if (corner(s, c, lv.height, lv.width, k)) {
              axpy(d.channels, *att * k.weight, v_bm + (lv.start + k.token) * row, o);
            }
          }
        }
      }
    }
  });
}

// The gradients of one sample A * x_l(p) of eq. 3 given g = d loss / d out[b, q, m, :]: adds A * w_c * g to the
// value rows of its four neighbours c, and returns d/dA = sum_c w_c <g, v_c> and d/d(x, y) = A * (W, H) *
// sum_c (d w_c / d pixel) <g, v_c> (the pixel position is x*W - 0.5, y*H - 0.5).
template <typename scalar_t>
inline void backward_sample(const Level& lv, int64_t row, int64_t channels, const scalar_t* __restrict__ v,
                            const scalar_t* __restrict__ g, const scalar_t* loc, scalar_t att,
                            scalar_t* __restrict__ grad_v, scalar_t* grad_loc, scalar_t* grad_att) {
  scalar_t d_att = 0, d_x = 0, d_y = 0;
  const Bilinear<scalar_t> s = locate(loc[0], loc[1], lv.height, lv.width);
  Corner<scalar_t> k;
  for (int c = 0; s.any && c < 4; ++c) {
    if (!corner(s, c, lv.height, lv.width, k)) continue;
    const scalar_t* __restrict__ v_c = v + k.token * row;
    scalar_t* __restrict__ grad_v_c = grad_v + k.token * row;
    const scalar_t scale = att * k.weight;
    scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < channels; ++i) {
      dot += g[i] * v_c[i];
      grad_v_c[i] += scale * g[i];
    }
    d_att += k.weight * dot;
    d_x += k.dweight_dx * dot;
    d_y += k.dweight_dy * dot;
  }
  *grad_att = d_att;
  grad_loc[0] = att * static_cast<scalar_t>(lv.width) * d_x;
  grad_loc[1] = att * static_cast<scalar_t>(lv.height) * d_y;
}

template <typename scalar_t>
void backward_kernel(const Checked& in, const scalar_t* value, const scalar_t* locs, const scalar_t* weights,
                     const scalar_t* grad_out, scalar_t* grad_value, scalar_t* grad_locs, scalar_t* grad_weights) {
  const Dims& d = in.dims;
  const int64_t row = d.heads * d.channels;
  // Task (b, m, l) owns grad_value[b, tokens of level l, m, :] and the location / weight gradients of the samples
  // that read level l for head m: no element has two writers and every sum runs in a fixed order, so the result
  // is race-free and bitwise deterministic. B*M*L tasks of equal work (Q*P samples each).
  at::parallel_for(0, d.batch * d.heads * d.levels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (d.heads * d.levels);
      const int64_t m = (t / d.levels) % d.heads;
      const int64_t l = t % d.levels;
      const Level& lv = in.levels[l];
      const int64_t offset = (b * d.tokens + lv.start) * row + m * d.channels;
      scalar_t* grad_v = grad_value + offset;
      for (int64_t token = 0; token < lv.height * lv.width; ++token) {
        std::fill(grad_v + token * row, grad_v + token * row + d.channels, scalar_t(0));
      }
      for (int64_t q = 0; q < d.queries; ++q) {
        const int64_t g = (b * d.queries + q) * d.heads + m;  // the (b, q, m) group
        const int64_t first = (g * d.levels + l) * d.points;  // its first sample on level l
        for (int64_t p = first; p < first + d.points; ++p) {
          backward_sample(lv, row, d.channels, value + offset, grad_out + g * d.channels, locs + 2 * p, weights[p],
                          grad_v, grad_locs + 2 * p, grad_weights + p);
        }
      }
    }
  });
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, int64_t im2col_step) {
  // im2col_step only chunks CUDA launches; it is checked here so both devices accept the same arguments.
  const Checked in =
      check_cpu_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step);
  at::Tensor out = at::empty({in.dims.batch, in.dims.queries, in.dims.heads * in.dims.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu", [&] {
    forward_kernel<scalar_t>(in, value.const_data_ptr<scalar_t>(), sampling_locations.const_data_ptr<scalar_t>(),
                             attention_weights.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output,
    int64_t im2col_step) {
  const Checked in =
      check_cpu_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step);
  check_grad_output(grad_output, value, in.dims);
  // Every element is written by its owning task (value rows are zeroed there first), so no zero-fill pass here.
  at::Tensor grad_value = at::empty_like(value);
  at::Tensor grad_locs = at::empty_like(sampling_locations);
  at::Tensor grad_weights = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    backward_kernel<scalar_t>(in, value.const_data_ptr<scalar_t>(), sampling_locations.const_data_ptr<scalar_t>(),
                              attention_weights.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
                              grad_value.mutable_data_ptr<scalar_t>(), grad_locs.mutable_data_ptr<scalar_t>(),
                              grad_weights.mutable_data_ptr<scalar_t>());
  });
  return {grad_value, grad_locs, grad_weights};
}

}  // namespace
}  // namespace rotated_ddetr::msda

TORCH_LIBRARY_IMPL(rotated_ddetr, CPU, m) {
  m.impl("ms_deform_attn", &rotated_ddetr::msda::ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &rotated_ddetr::msda::ms_deform_attn_backward_cpu);
}
