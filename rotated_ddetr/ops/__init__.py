"""Compiled ops (rotated IoU, rotated NMS, multi-scale deformable attention) and their pure-PyTorch twins.

Each op dispatches to the compiled kernel of `rotated_ddetr._C` when one exists for the inputs' device and to its
`*_reference` twin otherwise; `backend(op, device)` says which one runs.
"""

from rotated_ddetr.ops._extension import backend, extension_loaded, has_kernel
from rotated_ddetr.ops.box_iou_rotated import box_iou_rotated, box_iou_rotated_reference
from rotated_ddetr.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference, ms_deform_attn_static
from rotated_ddetr.ops.nms_rotated import (
    batched_nms_rotated,
    batched_nms_rotated_reference,
    nms_rotated,
    nms_rotated_reference,
)

__all__ = [
    "backend",
    "batched_nms_rotated",
    "batched_nms_rotated_reference",
    "box_iou_rotated",
    "box_iou_rotated_reference",
    "extension_loaded",
    "has_kernel",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "ms_deform_attn_static",
    "nms_rotated",
    "nms_rotated_reference",
]
