"""Rotated NMS: (N,5) rboxes, (N,) scores and optionally (N,) labels in -> int64 indices of the kept boxes out,
by decreasing score; the last step of postprocessing and of merging tiles.

`nms_rotated` / `batched_nms_rotated` run the compiled kernel when one exists for the device and the pure-PyTorch
twins `nms_rotated_reference` / `batched_nms_rotated_reference` otherwise. The twins follow the CUDA kernel's
chunked structure (chunks of 4096 boxes by decreasing score) and give the result of plain greedy NMS.
"""

import torch

from rotated_ddetr.ops._extension import extension_loaded, has_kernel
from rotated_ddetr.ops.box_iou_rotated import box_iou_rotated_reference, check_rboxes, compute_dtype

# Boxes per chunk, kChunkBoxes of csrc/nms_rotated/nms_rotated_cuda.cu: the twin follows the CUDA kernel's blocking.
_CHUNK_BOXES = 4096
# Pairs per slab of the reference's dense circle test (bounds its temporaries to ~50 MB in float64).
_PAIRS_PER_SLAB = 1 << 20


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

    Memory: the CUDA kernel processes the sorted boxes in chunks of 4096, so besides O(N) buffers (the sorted
    copies, a byte and a bit per box: under 100 bytes per box) it holds one fixed 2 MiB suppression mask (4096 x
    64 words) whatever N is, instead of the N x N/64 words (1.25 GB at 100k boxes) of an unchunked bitmask. Time
    stays O(N^2) IoU tests in the worst case. The CPU kernel and the twin need O(N) memory too (the twin's dense
    circle tests use slabs of about 2^20 pairs).
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
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor | None,
    iou_threshold: float,
    chunk_boxes: int = _CHUNK_BOXES,
) -> torch.Tensor:
    """Greedy NMS in chunks of `chunk_boxes` boxes by decreasing score, as the CUDA kernel runs it.

    Each chunk runs the greedy rule over its boxes not removed yet, then its kept boxes remove the later boxes they
    suppress. A box is kept iff no earlier kept box of its label overlaps it above the threshold, whatever
    `chunk_boxes` is: the result is that of plain greedy NMS.
    """
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes.to(compute_dtype(boxes.dtype))[order]
    labels = labels[order] if labels is not None else torch.zeros_like(order)
    count = boxes.shape[0]
    removed = torch.zeros(count, dtype=torch.bool, device=device)
    kept = []
    for first in range(0, count, chunk_boxes):
        last = min(first + chunk_boxes, count)
        alive = first + torch.nonzero(~removed[first:last]).squeeze(1)
        rows, cols = _suppressing_pairs(boxes[alive], labels[alive], boxes[alive], labels[alive], iou_threshold, True)
        chunk_kept = alive[_greedy_walk(rows, cols, alive.numel()).to(device)]
        kept.append(chunk_kept)
        later = last + torch.nonzero(~removed[last:]).squeeze(1)
        if later.numel() > 0 and chunk_kept.numel() > 0:
            k, j = chunk_kept, later
            _, cols = _suppressing_pairs(boxes[k], labels[k], boxes[j], labels[j], iou_threshold, False)
            removed[later[cols]] = True
    return order[torch.cat(kept)]


def _suppressing_pairs(
    earlier: torch.Tensor,
    earlier_labels: torch.Tensor,
    later: torch.Tensor,
    later_labels: torch.Tensor,
    iou_threshold: float,
    upper_only: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) int64 of the pairs where earlier[row] suppresses later[col]: same label, IoU above the threshold.

    With `upper_only` (both sets are the same boxes in score order) only pairs with col > row count. Boxes whose
    circumscribed circles do not meet cannot overlap; that test runs over dense slabs of about _PAIRS_PER_SLAB
    pairs, and the IoU (in earlier-then-later order, as the kernels) only for the pairs that pass it.
    """
    device = earlier.device
    radius_earlier = 0.5 * torch.hypot(earlier[:, 2], earlier[:, 3])
    radius_later = 0.5 * torch.hypot(later[:, 2], later[:, 3])
    columns = torch.arange(later.shape[0], device=device)
    found = [(columns[:0], columns[:0])]
    step = max(1, _PAIRS_PER_SLAB // max(later.shape[0], 1))
    for start in range(0, earlier.shape[0], step):
        slab = slice(start, start + step)
        dx = earlier[slab, None, 0] - later[None, :, 0]  # (rows, cols)
        dy = earlier[slab, None, 1] - later[None, :, 1]
        near = torch.hypot(dx, dy) <= radius_earlier[slab, None] + radius_later[None]
        near &= earlier_labels[slab, None] == later_labels[None]
        if upper_only:
            near &= columns[None] > torch.arange(start, start + near.shape[0], device=device)[:, None]
        rows, cols = torch.nonzero(near, as_tuple=True)
        rows = rows + start
        over = box_iou_rotated_reference(earlier[rows], later[cols], aligned=True) > iou_threshold
        found.append((rows[over], cols[over]))
    return torch.cat([r for r, _ in found]), torch.cat([c for _, c in found])


def _greedy_walk(rows: torch.Tensor, cols: torch.Tensor, count: int) -> torch.Tensor:
    """(K,) int64 CPU positions in [0, count) kept by the greedy rule when box rows[k] suppresses box cols[k] > rows[k].

    The one sequential part: box i is kept unless a kept box before it suppresses it.
    """
    rows, cols = rows.cpu(), cols.cpu()
    suppressed_by_row = cols[torch.argsort(rows, stable=True)].tolist()
    ends = torch.bincount(rows, minlength=count).cumsum(0).tolist()
    suppressed = [False] * count
    kept, begin = [], 0
    for i, end in enumerate(ends):
        if not suppressed[i]:
            kept.append(i)
            for j in suppressed_by_row[begin:end]:
                suppressed[j] = True
        begin = end
    return torch.tensor(kept, dtype=torch.int64)


if extension_loaded():
    # Shape propagation for torch.compile / FakeTensor: the number of kept boxes is only known at run time.
    @torch.library.register_fake("rotated_ddetr::nms_rotated")
    def _nms_rotated_fake(
        boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float
    ) -> torch.Tensor:
        kept = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((kept,), dtype=torch.int64)
