// Input checks of multi-scale deformable attention (ms_deform_attn_checks.h), used by the CPU and CUDA kernels.
// Metadata checks run on the host for both; the level table is read on the host only for CPU tensors, and checked
// on the device by an asynchronous assert for CUDA tensors, so a CUDA call never waits for the GPU.
#include "ms_deform_attn/ms_deform_attn_checks.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/_assert_async.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

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

void check_shapes(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& loc, const at::Tensor& attention_weights) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn: value must be (B, S, M, D), got shape ", value.sizes());
  TORCH_CHECK_VALUE(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.size(0) > 0,
                    "ms_deform_attn: spatial_shapes must be (L, 2) rows of [H, W] with L >= 1, got shape ",
                    spatial_shapes.sizes());
  const int64_t num_levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(level_start_index.dim() == 1 && level_start_index.size(0) == num_levels,
                    "ms_deform_attn: level_start_index must be (L,) with L = ", num_levels,
                    " as in spatial_shapes, got shape ", level_start_index.sizes());
  TORCH_CHECK_VALUE(loc.dim() == 6 && loc.size(5) == 2,
                    "ms_deform_attn: sampling_locations must be (B, Q, M, L, P, 2), got shape ", loc.sizes());
  TORCH_CHECK_VALUE(loc.size(0) == value.size(0) && loc.size(2) == value.size(2) && loc.size(3) == num_levels,
                    "ms_deform_attn: sampling_locations (B, Q, M, L, P, 2) = ", loc.sizes(),
                    " does not match value (B, S, M, D) = ", value.sizes(), " and L = ", num_levels, " levels");
  TORCH_CHECK_VALUE(attention_weights.sizes() == loc.sizes().slice(0, 5),
                    "ms_deform_attn: attention_weights must be (B, Q, M, L, P) = ", loc.sizes().slice(0, 5),
                    " like sampling_locations, got shape ", attention_weights.sizes());
}

}  // namespace

Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights, int64_t im2col_step,
                  c10::DeviceType device, bool reduced_precision) {
  check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK_VALUE(im2col_step > 0, "ms_deform_attn: im2col_step must be positive, got ", im2col_step);
  check_dtypes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, device,
               reduced_precision);
  TORCH_CHECK_VALUE(value.device().type() == device, "ms_deform_attn: the ", device, " kernel got value on ",
                    value.device());
  check_placement(value, "value", value);
  check_placement(value, "spatial_shapes", spatial_shapes);
  check_placement(value, "level_start_index", level_start_index);
  check_placement(value, "sampling_locations", sampling_locations);
  check_placement(value, "attention_weights", attention_weights);
  const auto& loc = sampling_locations;
  return {value.size(0), value.size(1), value.size(2), value.size(3), loc.size(1), spatial_shapes.size(0),
          loc.size(4)};
}

std::vector<Level> read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                               int64_t tokens) {
  TORCH_INTERNAL_ASSERT(spatial_shapes.device().is_cpu() && level_start_index.device().is_cpu(),
                        "read_levels reads CPU tables only (CUDA kernels use assert_levels_async)");
  const int64_t num_levels = spatial_shapes.size(0);
  const int64_t* shapes = spatial_shapes.const_data_ptr<int64_t>();
  const int64_t* starts = level_start_index.const_data_ptr<int64_t>();
  std::vector<Level> levels;
  int64_t total = 0;
  for (int64_t l = 0; l < num_levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1], start = starts[l];
    // width <= S / height bounds H*W by S without computing a product that could overflow.
    TORCH_CHECK_VALUE(height > 0 && width > 0 && width <= tokens / height, "ms_deform_attn: spatial_shapes[", l,
                      "] = [", height, ", ", width, "] must be positive with H*W at most S = ", tokens);
    TORCH_CHECK_VALUE(start == total, "ms_deform_attn: level_start_index[", l, "] = ", start,
                      " but the levels before it hold ", total, " tokens (it must be the running sum of H*W)");
    total += height * width;
    levels.push_back({height, width, start});
  }
  TORCH_CHECK_VALUE(total == tokens, "ms_deform_attn: spatial_shapes describe ", total,
                    " tokens (sum of H*W) but value has S = ", tokens);
  return levels;
}

void assert_levels_async(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t tokens) {
  // Elementwise ops on the tables' device (a dozen tiny launches, no copy to the host).
  const at::Tensor heights = spatial_shapes.select(1, 0);
  const at::Tensor widths = spatial_shapes.select(1, 1);
  const at::Tensor sizes = heights.mul(widths);  // (L,) H*W; meaningful where the bound below holds
  const at::Tensor ends = sizes.cumsum(0);       // (L,) tokens up to the end of each level
  // The product in float64 cannot overflow; H*W <= S (with H, W >= 1) bounds H, W and the running sums.
  const at::Tensor bounded = heights.to(at::kDouble).mul(widths).le(static_cast<double>(tokens));
  const at::Tensor level_ok =
      spatial_shapes.ge(1).all(1).logical_and_(bounded).logical_and_(level_start_index.eq(ends.sub(sizes)));
  const at::Tensor ok = level_ok.all().logical_and_(ends.select(0, -1).eq(tokens));
  at::_assert_async(ok,
                    "ms_deform_attn: the level table does not describe value's S tokens (every H, W >= 1, "
                    "level_start_index the running sum of H*W, sum of H*W == S); run on CPU for the failing entry");
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

}  // namespace rotated_ddetr::msda

// Any device: the ops inside run on the tables' device.
TORCH_LIBRARY_IMPL(rotated_ddetr, CompositeExplicitAutograd, m) {
  m.impl("_ms_deform_attn_assert_levels", &rotated_ddetr::msda::assert_levels_async);
}
