"""Rotated IoU: (N,5) and (M,5) rboxes in -> (N,M) IoU (or (N,) aligned) out; used by the matcher and NMS.

`box_iou_rotated` runs the compiled kernel of `rotated_ddetr._C` when one exists for the device and the pure-PyTorch
twin `box_iou_rotated_reference` (same algorithm: clipping in the second box's frame) otherwise.
"""

import torch

from rotated_ddetr.boxes import rboxes_to_corners
from rotated_ddetr.ops._extension import extension_loaded, has_kernel

# Each Sutherland-Hodgman clip of an n-gon yields at most n + n // 2 vertices (one extra per run of outside
# vertices), so after the four half-planes of a rectangle: 4 -> 6 -> 9 -> 13 -> 19. Truncating to these is lossless.
_CLIP_CAPACITY = (6, 9, 13, 19)
# Pairs per chunk in the reference: bounds its temporaries to ~30 MB in float64 whatever N and M are (larger chunks
# were not faster on CPU: every temporary then costs fresh pages).
_PAIRS_PER_CHUNK = 1 << 14
# Pairs per chunk of the cheap circle test that picks the pairs worth clipping.
_MASK_PAIRS_PER_CHUNK = 1 << 20


def check_rboxes(boxes: torch.Tensor, name: str) -> None:
    """Raises ValueError/TypeError unless `boxes` is an (N, 5) floating-point tensor of rboxes."""
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"{name} must have shape (N, 5) (cx, cy, w, h, angle), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {boxes.dtype}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the geometry runs in: float64 stays, everything else (float32, half, bfloat16) uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# A constant for torch.compile: dynamo then traces straight into the op (or the twin) without a graph break.
@torch.compiler.assume_constant_result
def _kernel_runs_on(device_type: str) -> bool:
    return has_kernel("box_iou_rotated", device_type)


def _check_pair(boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool) -> None:
    check_rboxes(boxes1, "boxes1")
    check_rboxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(f"boxes1 and boxes2 must be on the same device, got {boxes1.device} and {boxes2.device}")
    if aligned and boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(f"aligned=True needs as many boxes1 as boxes2, got {boxes1.shape[0]} and {boxes2.shape[0]}")


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool = False) -> torch.Tensor:
    """Exact IoU of rotated boxes: area of the intersection of the two rectangles over the area of their union.

    Args:
        boxes1: (N, 5) rboxes (cx, cy, w, h, angle), pixels (any isotropic unit) and radians, floating point.
        boxes2: (M, 5) rboxes, same device as `boxes1`; M == N when `aligned`.
        aligned: if True, the IoU of each pair (boxes1[i], boxes2[i]) instead of all pairs.

    Returns:
        (N, M) IoU, or (N,) when `aligned`, in [0, 1], in the dtype of `boxes1` (half and bfloat16 are computed in
        float32). 0 for a box of zero area; never NaN. The compiled kernel runs when built for the device,
        `box_iou_rotated_reference` otherwise (`rotated_ddetr.ops.backend("box_iou_rotated", device)` says which).
    """
    _check_pair(boxes1, boxes2, aligned)
    if not _kernel_runs_on(boxes1.device.type):
        return box_iou_rotated_reference(boxes1, boxes2, aligned)
    dtype = compute_dtype(boxes1.dtype)
    ious = torch.ops.rotated_ddetr.box_iou_rotated(boxes1.to(dtype), boxes2.to(dtype), aligned)
    return ious.to(boxes1.dtype)


def box_iou_rotated_reference(boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool = False) -> torch.Tensor:
    """Pure-PyTorch twin of `box_iou_rotated`: same arguments, same result (to rounding), on CPU or CUDA, batched.

    Args:
        boxes1: (N, 5) rboxes (cx, cy, w, h, angle), pixels and radians, floating point.
        boxes2: (M, 5) rboxes, same device as `boxes1`; M == N when `aligned`.
        aligned: if True, the IoU of each pair (boxes1[i], boxes2[i]) instead of all pairs.

    Returns:
        (N, M) IoU, or (N,) when `aligned`, in the dtype of `boxes1` (half and bfloat16 are computed in float32).
    """
    _check_pair(boxes1, boxes2, aligned)
    dtype = compute_dtype(boxes1.dtype)
    first, second = boxes1.to(dtype), boxes2.to(dtype)
    if aligned:
        index = torch.arange(first.shape[0], device=first.device)
        return _near_pairs_iou(first, second, index, index, first.new_zeros(first.shape[0])).to(boxes1.dtype)
    cols = second.shape[0]
    ious = first.new_zeros(first.shape[0], cols)
    # Whole rows of the (N, M) matrix at a time, so that the pair lists stay within _MASK_PAIRS_PER_CHUNK.
    rows_per_chunk = max(1, _MASK_PAIRS_PER_CHUNK // max(cols, 1))
    for start in range(0, first.shape[0], rows_per_chunk):
        block = first[start : start + rows_per_chunk]
        rows = torch.arange(block.shape[0], device=first.device).repeat_interleave(cols)
        columns = torch.arange(cols, device=first.device).repeat(block.shape[0])
        _near_pairs_iou(block, second, rows, columns, ious[start : start + rows_per_chunk].view(-1))
    return ious.to(boxes1.dtype)


def _near_pairs_iou(
    first: torch.Tensor, second: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """Writes into `out` (P,) (zeros) the IoU of the pairs (first[rows], second[columns]) that may overlap.

    Boxes whose circumscribed circles do not meet cannot overlap; as in the kernel they get 0 without clipping,
    which on scene-like inputs skips nearly all pairs.
    """
    radius1 = 0.5 * torch.hypot(first[:, 2], first[:, 3])
    radius2 = 0.5 * torch.hypot(second[:, 2], second[:, 3])
    distance = torch.hypot(first[rows, 0] - second[columns, 0], first[rows, 1] - second[columns, 1])
    near = torch.nonzero(distance <= radius1[rows] + radius2[columns]).squeeze(1)
    for start in range(0, near.numel(), _PAIRS_PER_CHUNK):
        pairs = near[start : start + _PAIRS_PER_CHUNK]
        out[pairs] = _pair_iou(first[rows[pairs]], second[columns[pairs]])
    return out


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, 5) and (P, 5) rboxes -> (P,) IoU of each pair; mirrors `rotated_iou` of csrc/common/rotated_geometry.h."""
    area_a = a[:, 2] * a[:, 3]
    area_b = b[:, 2] * b[:, 3]
    inter = torch.minimum(_intersection_area(a, b), torch.minimum(area_a, area_b))
    valid = (area_a > 0) & (area_b > 0)
    union = torch.where(valid, area_a + area_b - inter, torch.ones_like(inter))
    iou = torch.where(valid, inter / union, torch.zeros_like(inter))
    # `iou > 0` is False for NaN (infinite inputs), which therefore maps to 0 like zero-area boxes.
    return torch.where(iou > 0, iou, torch.zeros_like(iou)).clamp(max=1)


def _intersection_area(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, 5) and (P, 5) rboxes -> (P,) area of a clipped by b, computed in b's frame (b = axis-aligned, centred)."""
    ex, ey = a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]
    cos_b, sin_b = torch.cos(b[:, 4]), torch.sin(b[:, 4])
    # The angle difference in float64 so that large float32 angles keep their small difference (as the kernel).
    relative_angle = (a[:, 4].double() - b[:, 4].double()).to(a.dtype)
    a_in_b = torch.stack((cos_b * ex + sin_b * ey, -sin_b * ex + cos_b * ey, a[:, 2], a[:, 3], relative_angle), dim=-1)
    polygon = rboxes_to_corners(a_in_b)  # (P, 4, 2)
    count = torch.full((a.shape[0],), 4, dtype=torch.long, device=a.device)
    half_extents = (0.5 * b[:, 2], 0.5 * b[:, 2], 0.5 * b[:, 3], 0.5 * b[:, 3])
    planes = ((0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0))  # (axis, sign): sign * coordinate <= half extent
    for (axis, sign), half, capacity in zip(planes, half_extents, _CLIP_CAPACITY, strict=True):
        polygon, count = _clip(polygon, count, axis, sign, half, capacity)
    return _shoelace_area(polygon, count)


def _clip(
    polygon: torch.Tensor, count: torch.Tensor, axis: int, sign: float, half: torch.Tensor, capacity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Sutherland-Hodgman step for a batch of polygons.

    Args:
        polygon: (P, K, 2) vertices; the first `count` of each row are valid, in order.
        count: (P,) int64 number of valid vertices.
        axis, sign, half: the half-plane sign * polygon[..., axis] <= half, `half` of shape (P,).
        capacity: the most vertices the output can have (the rest of the slots are dropped).

    Returns:
        (P, capacity, 2) clipped polygons (valid vertices first, in order) and their (P,) counts.
    """
    slots = torch.arange(polygon.shape[1], device=polygon.device)
    valid = slots < count[:, None]  # (P, K)
    margin = half[:, None] - sign * polygon[..., axis]  # (P, K); >= 0 inside
    # Edge k runs from the previous valid vertex (cyclically) to vertex k, as in the kernel.
    previous_slot = torch.where(slots == 0, (count - 1).clamp(min=0)[:, None], slots - 1)  # (P, K)
    previous = polygon.gather(1, previous_slot[..., None].expand(-1, -1, 2))
    previous_margin = margin.gather(1, previous_slot)
    inside = margin >= 0
    crossing = valid & (inside != (previous_margin >= 0))
    denominator = torch.where(crossing, previous_margin - margin, torch.ones_like(margin))
    t = torch.where(crossing, previous_margin / denominator, torch.zeros_like(margin))[..., None]
    crossing_point = previous + t * (polygon - previous)
    # Candidates in output order: for each k, the crossing on edge k, then vertex k.
    candidates = torch.stack((crossing_point, polygon), dim=2).flatten(1, 2)  # (P, 2K, 2)
    emitted = torch.stack((crossing, valid & inside), dim=2).flatten(1, 2)  # (P, 2K)
    # A stable sort on "not emitted" moves the emitted vertices to the front and keeps their order.
    order = torch.sort((~emitted).to(torch.uint8), dim=1, stable=True).indices[:, :capacity]
    clipped = candidates.gather(1, order[..., None].expand(-1, -1, 2))
    return clipped, emitted.sum(dim=1).clamp(max=capacity)


def _shoelace_area(polygon: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(P, K, 2) polygons with (P,) valid counts -> (P,) areas, cross products relative to the first vertex."""
    relative = polygon - polygon[:, :1]
    cross = relative[:, :-1, 0] * relative[:, 1:, 1] - relative[:, :-1, 1] * relative[:, 1:, 0]  # (P, K-1)
    # Term k spans vertices k and k+1; both must be valid. torch.where, not a product: unused slots may hold inf.
    used = torch.arange(1, polygon.shape[1], device=polygon.device) < count[:, None]
    return torch.where(used, cross, torch.zeros_like(cross)).sum(dim=1).abs() * 0.5


if extension_loaded():
    # Shape propagation for torch.compile / FakeTensor: the output shape depends only on the input shapes.
    @torch.library.register_fake("rotated_ddetr::box_iou_rotated")
    def _box_iou_rotated_fake(boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool = False) -> torch.Tensor:
        if aligned:
            torch._check(boxes1.shape[0] == boxes2.shape[0], lambda: "aligned=True needs N == M")
            return boxes1.new_empty((boxes1.shape[0],))
        return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
