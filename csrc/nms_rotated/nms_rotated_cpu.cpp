// CPU kernel of rotated_ddetr::nms_rotated: (N,5) rboxes, (N,) scores, optional (N,) int64 labels -> int64 indices
// of the kept boxes by decreasing score. Greedy: each kept box suppresses the later boxes (of its label) whose IoU
// with it exceeds the threshold.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <torch/library.h>

#include <vector>

#include "common/rboxes_checks.h"
#include "common/rotated_geometry.h"

namespace rotated_ddetr {
namespace {

// boxes and labels (nullable) are already in decreasing-score order; returns positions in that order.
template <typename scalar_t>
std::vector<int64_t> greedy_nms(const scalar_t* boxes, const int64_t* labels, int64_t count, double iou_threshold) {
  // Compared in the boxes' dtype, as the reference does with a tensor against a Python float.
  const scalar_t threshold = static_cast<scalar_t>(iou_threshold);
  std::vector<uint8_t> suppressed(count, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < count; ++i) {
    if (suppressed[i]) continue;
    kept.push_back(i);
    const scalar_t* box = boxes + 5 * i;
    for (int64_t j = i + 1; j < count; ++j) {
      if (suppressed[j] || (labels != nullptr && labels[j] != labels[i])) continue;
      if (geometry::rotated_iou(box, boxes + 5 * j) > threshold) suppressed[j] = 1;
    }
  }
  return kept;
}

at::Tensor nms_rotated_cpu(const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
                           double iou_threshold) {
  const bool with_labels = check_nms_inputs(boxes, scores, labels, c10::DeviceType::CPU);
  const int64_t count = boxes.size(0);
  if (count == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // Stable descending sort: equal scores keep the lower index first, so the result is deterministic.
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  const at::Tensor sorted_labels = with_labels ? labels->index_select(0, order).contiguous() : at::Tensor();
  std::vector<int64_t> kept;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated_cpu", [&] {
    kept = greedy_nms(sorted_boxes.const_data_ptr<scalar_t>(),
                      with_labels ? sorted_labels.const_data_ptr<int64_t>() : nullptr, count, iou_threshold);
  });
  const int64_t* order_data = order.const_data_ptr<int64_t>();
  at::Tensor result = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
  int64_t* result_data = result.mutable_data_ptr<int64_t>();
  for (size_t k = 0; k < kept.size(); ++k) result_data[k] = order_data[kept[k]];
  return result;
}

}  // namespace
}  // namespace rotated_ddetr

TORCH_LIBRARY_IMPL(rotated_ddetr, CPU, m) { m.impl("nms_rotated", &rotated_ddetr::nms_rotated_cpu); }
