// Input checks of multi-scale deformable attention, shared by the CPU and CUDA kernels (host code, compiled in every
// build). In: the op's arguments; out: the sizes of the call, and on CPU the level table read on the host.
// Every kernel calls check_inputs first, then the level-table check of its device: read_levels (CPU, exact
// messages) or assert_levels_async (CUDA, no device-to-host copy).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <vector>

namespace rotated_ddetr::msda {

// Sizes of one call: value (B,S,M,D); sampling_locations (B,Q,M,L,P,2).
struct Dims {
  int64_t batch, tokens, heads, channels, queries, levels, points;
};

// One feature level as read on the host: its H x W tokens start at row `start` of value's S axis.
struct Level {
  int64_t height, width, start;
};

// Checks value, spatial_shapes, level_start_index, sampling_locations, attention_weights and im2col_step from their
// metadata alone (dims, shapes including L and S consistency, dtypes, devices, contiguity) and returns the sizes.
// Reads no tensor element, so it never synchronises a device. `device` is the kernel's device type;
// `reduced_precision` allows float16/bfloat16 values. Throws c10::ValueError / c10::TypeError (Python ValueError /
// TypeError).
Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights, int64_t im2col_step,
                  c10::DeviceType device, bool reduced_precision);

// CPU: reads the level table of checked CPU inputs and checks that it describes exactly value's S = `tokens` tokens,
// level after level (every H, W in [1, S]; level_start_index the running sum of H*W; sum of H*W == S). Throws
// c10::ValueError naming the first bad entry.
std::vector<Level> read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t tokens);

// CUDA (any device): the same conditions as read_levels, computed on the tables' device and enqueued on the current
// stream as one asynchronous assert (at::_assert_async), without a device-to-host copy. A bad table makes the
// assert kernel fail before the MSDA kernel launched after it can read out of bounds; the error surfaces at the
// next synchronising call as a device-side assert (rerun on CPU for the message naming the entry).
void assert_levels_async(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t tokens);

// Checks grad_output (B,Q,M*D) of the backward against value (dtype, device, contiguity) and the sizes.
void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value, const Dims& dims);

}  // namespace rotated_ddetr::msda
