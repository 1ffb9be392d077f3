// CPU kernel of rotated_ddetr::box_iou_rotated: (N,5) x (M,5) rboxes -> (N,M) IoU, or (N,) when aligned.
// Pairs are split across threads with at::parallel_for; each pair uses the shared exact clipping geometry.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/rboxes_checks.h"
#include "common/rotated_geometry.h"

namespace rotated_ddetr {
namespace {

// One IoU costs ~100 ns when the boxes overlap and a few ns when they are rejected early: 4096 pairs per task
// keeps the threading overhead small on both kinds of input.
constexpr int64_t kPairsPerTask = 4096;

template <typename scalar_t>
void iou_pairs(const scalar_t* boxes1, const scalar_t* boxes2, int64_t cols, bool aligned, scalar_t* ious,
               int64_t total) {
  at::parallel_for(0, total, kPairsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t i = aligned ? k : k / cols;
      const int64_t j = aligned ? k : k % cols;
      ious[k] = geometry::rotated_iou(boxes1 + 5 * i, boxes2 + 5 * j);
    }
  });
}

at::Tensor box_iou_rotated_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, bool aligned) {
  check_rboxes(boxes1, "boxes1", c10::DeviceType::CPU);
  check_rboxes(boxes2, "boxes2", c10::DeviceType::CPU);
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "boxes1 and boxes2 must have the same dtype, got ",
              boxes1.scalar_type(), " and ", boxes2.scalar_type());
  const int64_t rows = boxes1.size(0);
  const int64_t cols = boxes2.size(0);
  TORCH_CHECK(!aligned || rows == cols, "aligned=True needs as many boxes1 as boxes2, got ", rows, " and ", cols);
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  at::Tensor ious = aligned ? at::empty({rows}, b1.options()) : at::empty({rows, cols}, b1.options());
  if (ious.numel() == 0) return ious;
  AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated_cpu", [&] {
    iou_pairs(b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), cols, aligned,
              ious.mutable_data_ptr<scalar_t>(), ious.numel());
  });
  return ious;
}

}  // namespace
}  // namespace rotated_ddetr

TORCH_LIBRARY_IMPL(rotated_ddetr, CPU, m) { m.impl("box_iou_rotated", &rotated_ddetr::box_iou_rotated_cpu); }
