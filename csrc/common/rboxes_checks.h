// Input checks shared by the CPU and CUDA entry points of box_iou_rotated and nms_rotated (host code only).
// They run before any kernel, so a bad call fails with a message naming the argument instead of reading garbage.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace rotated_ddetr {

// `boxes` must be an (N, 5) float32/float64 tensor of rboxes on a device of type `device_type`.
inline void check_rboxes(const at::Tensor& boxes, const char* name, c10::DeviceType device_type) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 5, name, " must have shape (N, 5) (cx, cy, w, h, angle), got ",
              boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble, name,
              " must be float32 or float64 (half/bfloat16 are cast by the Python dispatcher), got ",
              boxes.scalar_type());
  TORCH_CHECK(boxes.device().type() == device_type, name, " must be on ", device_type, ", got ", boxes.device());
}

// `tensor` must be a 1-D tensor of `count` elements on the same device as `boxes`.
inline void check_per_box(const at::Tensor& tensor, const at::Tensor& boxes, const char* name) {
  TORCH_CHECK(tensor.dim() == 1 && tensor.size(0) == boxes.size(0), name, " must have shape (", boxes.size(0),
              ",) to match boxes, got ", tensor.sizes());
  TORCH_CHECK(tensor.device() == boxes.device(), name, " must be on the device of boxes (", boxes.device(),
              "), got ", tensor.device());
}

// The arguments of nms_rotated: (N, 5) rboxes on `device_type`, (N,) floating scores and optional (N,) int64 labels
// beside them. Returns whether labels were given.
inline bool check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
                             c10::DeviceType device_type) {
  check_rboxes(boxes, "boxes", device_type);
  check_per_box(scores, boxes, "scores");
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()), "scores must be floating point, got ", scores.scalar_type());
  const bool with_labels = labels.has_value() && labels->defined();
  if (with_labels) {
    check_per_box(*labels, boxes, "labels");
    TORCH_CHECK(labels->scalar_type() == at::kLong, "labels must be int64, got ", labels->scalar_type());
  }
  return with_labels;
}

}  // namespace rotated_ddetr
