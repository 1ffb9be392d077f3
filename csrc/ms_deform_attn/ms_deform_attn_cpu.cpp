// Multi-scale deformable attention on CPU (Deformable DETR eq. 3), forward and backward, float32 / float64.
// Sampling and weighting are fused: each output row is accumulated straight from value, with no per-level or
// per-sample intermediate tensors. Also defines the input checks shared with the CUDA kernel (ms_deform_attn.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "ms_deform_attn/ms_deform_attn.h"

namespace rotated_ddetr::msda {
namespace {

void check_placement(const at::Tensor& value, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device() == value.device(), "ms_deform_attn: all inputs must be on value's device ",
                    value.device(), ", got ", name, " on ", t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous");
}

void check_dtypes(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights, c10::DeviceType device,
                  bool reduced_precision) {
  const auto vt = value.scalar_type();
  const bool value_ok =
      vt == at::kFloat || vt == at::kDouble || (reduced_precision && (vt == at::kHalf || vt == at::kBFloat16));
  TORCH_CHECK_TYPE(value_ok, "ms_deform_attn: value must be ",
                   reduced_precision ? "float32, float64, float16 or bfloat16" : "float32 or float64", " on ",
                   device, ", got ", vt);
  // Positions and weights stay in float32 (float64) whatever value's dtype: a float16 location is off by up to
  // 2^-11, i.e. a third of a pixel on a 512-wide level.
  const auto acc = vt == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_TYPE(sampling_locations.scalar_type() == acc && attention_weights.scalar_type() == acc,
                   "ms_deform_attn: sampling_locations and attention_weights must be ", acc, " for a ", vt,
                   " value, got ", sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
  TORCH_CHECK_TYPE(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
                   "ms_deform_attn: spatial_shapes and level_start_index must be int64, got ",
                   spatial_shapes.scalar_type(), " and ", level_start_index.scalar_type());
}

// Reads the level table on the host (one device-to-host copy for CUDA inputs) and checks that it describes exactly
// value's S tokens, level after level.
std::vector<Level> read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                               int64_t tokens) {
  const int64_t num_levels = spatial_shapes.size(0);
  const at::Tensor table = at::cat({spatial_shapes.reshape({-1}), level_start_index}).cpu();
  const int64_t* p = table.const_data_ptr<int64_t>();
  std::vector<Level> levels;
  int64_t total = 0;
  for (int64_t l = 0; l < num_levels; ++l) {
    const int64_t height = p[2 * l], width = p[2 * l + 1], start = p[2 * num_levels + l];
    TORCH_CHECK_VALUE(height > 0 && width > 0 && height <= tokens && width <= tokens, "ms_deform_attn: spatial_shapes[",
                      l, "] = [", height, ", ", width, "] must be positive and at most S = ", tokens);
    TORCH_CHECK_VALUE(start == total, "ms_deform_attn: level_start_index[", l, "] = ", start, " but the levels before it",
                      " hold ", total, " tokens (it must be the running sum of H*W)");
    total += height * width;
    levels.push_back({height, width, start});
  }
  TORCH_CHECK_VALUE(total == tokens, "ms_deform_attn: spatial_shapes describe ", total,
                    " tokens (sum of H*W) but value has S = ", tokens);
  return levels;
}

}  // namespace

Checked check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_locations, const at::Tensor& attention_weights, int64_t im2col_step,
                     c10::DeviceType device, bool reduced_precision) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn: value must be (B, S, M, D), got shape ", value.sizes());
  TORCH_CHECK_VALUE(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.size(0) > 0,
                    "ms_deform_attn: spatial_shapes must be (L, 2) rows of [H, W] with L >= 1, got shape ",
                    spatial_shapes.sizes());
  const int64_t num_levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(level_start_index.dim() == 1 && level_start_index.size(0) == num_levels,
                    "ms_deform_attn: level_start_index must be (L,) with L = ", num_levels,
                    " as in spatial_shapes, got shape ", level_start_index.sizes());
  const auto& loc = sampling_locations;
  TORCH_CHECK_VALUE(loc.dim() == 6 && loc.size(5) == 2,
                    "ms_deform_attn: sampling_locations must be (B, Q, M, L, P, 2), got shape ", loc.sizes());
  TORCH_CHECK_VALUE(loc.size(0) == value.size(0) && loc.size(2) == value.size(2) && loc.size(3) == num_levels,
                    "ms_deform_attn: sampling_locations (B, Q, M, L, P, 2) = ", loc.sizes(),
                    " does not match value (B, S, M, D) = ", value.sizes(), " and L = ", num_levels, " levels");
  TORCH_CHECK_VALUE(attention_weights.sizes() == loc.sizes().slice(0, 5),
                    "ms_deform_attn: attention_weights must be (B, Q, M, L, P) = ", loc.sizes().slice(0, 5),
                    " like sampling_locations, got shape ", attention_weights.sizes());
  TORCH_CHECK_VALUE(im2col_step > 0, "ms_deform_attn: im2col_step must be positive, got ", im2col_step);
  check_dtypes(value, spatial_shapes, level_start_index, loc, attention_weights, device, reduced_precision);
  TORCH_CHECK_VALUE(value.device().type() == device, "ms_deform_attn: the ", device, " kernel got value on ",
                    value.device());
  check_placement(value, "value", value);
  check_placement(value, "spatial_shapes", spatial_shapes);
  check_placement(value, "level_start_index", level_start_index);
  check_placement(value, "sampling_locations", loc);
  check_placement(value, "attention_weights", attention_weights);
  const Dims dims{value.size(0), value.size(1), value.size(2), value.size(3), loc.size(1), num_levels, loc.size(4)};
  return {dims, read_levels(spatial_shapes, level_start_index, dims.tokens)};
}

void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value, const Dims& d) {
  TORCH_CHECK_VALUE(grad_output.dim() == 3 && grad_output.size(0) == d.batch && grad_output.size(1) == d.queries &&
                        grad_output.size(2) == d.heads * d.channels,
                    "ms_deform_attn_backward: grad_output must be (B, Q, M*D) = (", d.batch, ", ", d.queries, ", ",
                    d.heads * d.channels, "), got shape ", grad_output.sizes());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == value.scalar_type(), "ms_deform_attn_backward: grad_output must have ",
                   "value's dtype ", value.scalar_type(), ", got ", grad_output.scalar_type());
  check_placement(value, "grad_output", grad_output);
}

namespace {

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
  const Checked in = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                  im2col_step, c10::DeviceType::CPU, /*reduced_precision=*/false);
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
  const Checked in = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                  im2col_step, c10::DeviceType::CPU, /*reduced_precision=*/false);
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
