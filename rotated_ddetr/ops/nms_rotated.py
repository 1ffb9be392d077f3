"""Rotated NMS: (N,5) rboxes, (N,) scores and optionally (N,) labels in -> int64 indices of the kept boxes out,
by decreasing score; the last step of postprocessing and of merging tiles.

`nms_rotated` / `batched_nms_rotated` run the compiled kernel when one exists for the device and the pure-PyTorch
twins `nms_rotated_reference` / `batched_nms_rotated_reference` otherwise.
"""

import torch

from rotated_ddetr.ops._extension import extension_loaded, has_kernel
from rotated_ddetr.ops.box_iou_rotated import box_iou_rotated_reference, check_rboxes, compute_dtype


def _check_inputs(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None) -> None:
    check_rboxes(boxes, "boxes")
    count = boxes.shape[0]
    if not isinstance(scores, torch.Tensor) or scores.shape != (count,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor of shape ({count},) to match boxes, got {shape}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    tensors = {"scores": scores}
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (count,):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a tensor of shape ({count},) to match boxes, got {shape}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        tensors["labels"] = labels
    for name, tensor in tensors.items():
        if tensor.device != boxes.device:
            raise ValueError(f"{name} must be on the device of boxes ({boxes.device}), got {tensor.device}")


# A constant for torch.compile: dynamo then traces straight into the op (or the twin) without a graph break.
@torch.compiler.assume_constant_result
def _kernel_runs_on(device_type: str) -> bool:
    return has_kernel("nms_rotated", device_type)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float) -> torch.Tensor:
    _check_inputs(boxes, scores, labels)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if not _kernel_runs_on(boxes.device.type):
        return _nms_reference(boxes, scores, labels, iou_threshold)
    dtype = compute_dtype(boxes.dtype)
    labels = labels.long() if labels is not None else None
    return torch.ops.rotated_ddetr.nms_rotated(
        boxes.to(dtype), scores.to(compute_dtype(scores.dtype)), labels, float(iou_threshold)
    )


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of rotated boxes.

    Boxes are visited by decreasing score (equal scores: lower index first); a box is dropped when its IoU with an
    already kept box is greater than `iou_threshold` (an IoU equal to it keeps the box, as torchvision).

    Args:
        boxes: (N, 5) rboxes (cx, cy, w, h, angle), pixels and radians, floating point.
        scores: (N,) floating-point scores, same device.
        iou_threshold: IoU above which the lower-scored box is suppressed, in [0, 1].

    Returns:
        (K,) int64 indices into `boxes` of the kept boxes, by decreasing score; empty for empty input. The compiled
        kernel runs when built for the device, `nms_rotated_reference` otherwise.
    """
    return _nms(boxes, scores, None, iou_threshold)


def batched_nms_rotated(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-wise `nms_rotated`: boxes with different labels never suppress each other.

    The labels go into the kernel itself (no coordinate-offset trick), so scene-sized coordinates stay exact.

    Args:
        boxes: (N, 5) rboxes (cx, cy, w, h, angle), pixels and radians, floating point.
        scores: (N,) floating-point scores, same device.
        labels: (N,) integer class labels, same device.
        iou_threshold: IoU above which the lower-scored box of the same label is suppressed, in [0, 1].

    Returns:
        (K,) int64 indices into `boxes` of the kept boxes, by decreasing score over all labels.
    """
    return _nms(boxes, scores, labels, iou_threshold)


def nms_rotated_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Pure-PyTorch twin of `nms_rotated`: same arguments, same result, on CPU or CUDA."""
    _check_inputs(boxes, scores, None)
    return _nms_reference(boxes, scores, None, iou_threshold)


def batched_nms_rotated_reference(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Pure-PyTorch twin of `batched_nms_rotated`: same arguments, same result, on CPU or CUDA."""
    _check_inputs(boxes, scores, labels)
    return _nms_reference(boxes, scores, labels, iou_threshold)


def _nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float
) -> torch.Tensor:
    """Greedy NMS, one kept box per step: it suppresses the remaining boxes (of its label) above the threshold."""
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes.to(compute_dtype(boxes.dtype))[order]
    labels = labels[order] if labels is not None else torch.zeros_like(order)
    # Boxes whose circumscribed circles do not meet cannot overlap: only the others need an IoU.
    radius = 0.5 * torch.hypot(boxes[:, 2], boxes[:, 3])
    remaining = torch.arange(boxes.shape[0], device=device)
    kept = []
    while remaining.numel() > 0:
        current, rest = remaining[0], remaining[1:]
        kept.append(current)
        distance = torch.hypot(boxes[rest, 0] - boxes[current, 0], boxes[rest, 1] - boxes[current, 1])
        candidates = (labels[rest] == labels[current]) & (distance <= radius[rest] + radius[current])
        candidate_boxes = boxes[rest[candidates]]
        ious = box_iou_rotated_reference(boxes[current].expand_as(candidate_boxes), candidate_boxes, aligned=True)
        suppressed = torch.zeros_like(candidates)
        suppressed[candidates] = ious > iou_threshold
        remaining = rest[~suppressed]
    return order[torch.stack(kept)]


if extension_loaded():
    # Shape propagation for torch.compile / FakeTensor: the number of kept boxes is only known at run time.
    @torch.library.register_fake("rotated_ddetr::nms_rotated")
    def _nms_rotated_fake(
        boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float
    ) -> torch.Tensor:
        kept = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((kept,), dtype=torch.int64)
