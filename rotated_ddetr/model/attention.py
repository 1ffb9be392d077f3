"""Rotated multi-scale deformable attention: queries + reference rboxes + flattened multi-scale values -> outputs.

One module serves the encoder (tokens with axis-aligned square references) and the decoder (queries with rotated
references). Offsets are rotated in pixels and only then normalised, so sampling is isotropic on any image shape.
"""

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rotated_ddetr.boxes import denormalize_rboxes
from rotated_ddetr.ops import ms_deform_attn, ms_deform_attn_static


@dataclass(frozen=True)
class MultiScaleLayout:
    """How the flattened multi-scale tokens are laid out and how normalised rboxes map to sampling locations.

    Normalised rboxes are relative to each image's valid (unpadded) area; MSDA locations are relative to the padded
    maps, which are assumed to cover the padded image exactly (pad images to a multiple of the largest stride).

    Attributes:
        level_shapes: ((H_l, W_l), ...) of each level, finest first, as Python ints (from the feature maps' shapes,
            so loops over levels never read a device tensor back).
        spatial_shapes: (L, 2) int64 tensor of the same (H_l, W_l), for the MSDA op.
        level_start_index: (L,) int64 offset of each level in the flattened token axis.
        padding_mask: (B, S) bool, True for tokens in the padding.
        image_sizes: (B, 2) float (height, width) of each image's valid area in pixels.
        valid_ratios: (B, 2) float valid size / padded size in (x, y) order, as the sampling locations they scale.
    """

    level_shapes: tuple[tuple[int, int], ...]
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    padding_mask: torch.Tensor
    image_sizes: torch.Tensor
    valid_ratios: torch.Tensor


def rbox_sampling_locations(
    reference_rboxes: torch.Tensor, offsets: torch.Tensor, image_sizes: torch.Tensor, valid_ratios: torch.Tensor
) -> torch.Tensor:
    """Sampling locations around reference rboxes, computed in pixels (DESIGN.md §2: isotropic geometry only).

    A box-frame offset (u, v), in units of the half-sides, is scaled to (u * w/2, v * h/2) pixels, rotated by the
    box angle, added to the pixel centre, then divided by the valid image size and multiplied by the valid ratio.
    This generalises Deformable DETR's eq. for 4-d references (p = ref_xy + offset * ref_wh / 2) to rotated boxes.

    Args:
        reference_rboxes: (B, Q, 5) normalised rboxes (cx, cy, w, h, angle in radians).
        offsets: (B, Q, M, L, P, 2) box-frame offsets (u, v) in half-side units.
        image_sizes: (B, 2) valid image (height, width) in pixels.
        valid_ratios: (B, 2) (x, y) ratios of valid to padded size.

    Returns:
        (B, Q, M, L, P, 2) locations (x, y) in [0, 1] of the padded maps (outside when the box reaches out).
    """
    pixels = denormalize_rboxes(reference_rboxes, image_sizes[:, None, :])  # (B, Q, 5)
    centre, half = pixels[..., :2], pixels[..., 2:4] / 2  # (B, Q, 2) pixels each
    cos = reference_rboxes[..., 4].cos()[:, :, None, None, None]  # (B, Q, 1, 1, 1)
    sin = reference_rboxes[..., 4].sin()[:, :, None, None, None]
    local = offsets * half[:, :, None, None, None, :]  # (B, Q, M, L, P, 2) pixels in the box frame
    dx, dy = local.unbind(-1)
    x = centre[..., 0, None, None, None] + dx * cos - dy * sin
    y = centre[..., 1, None, None, None] + dx * sin + dy * cos
    scale = (valid_ratios / image_sizes.flip(-1))[:, None, None, None, None, :]  # (x, y) pixels -> padded [0, 1]
    return torch.stack((x, y), dim=-1) * scale


class RotatedMSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR eq. 3) sampling around rotated reference boxes.

    Each head samples `n_points` points per level; offsets and weights are predicted from the query. Offsets are in
    units of the reference's half-sides divided by `n_points` (as for Deformable DETR's 4-d references) and rotated
    with the box, so a rotated box is sampled along its own axes.

    Args:
        d_model: channels of queries and values (divisible by n_heads).
        n_levels: feature levels.
        n_heads: attention heads.
        n_points: sampling points per head and level.

    Attributes:
        reference_ops: run the sampling with the pure-PyTorch twin (`ops.ms_deform_attn_static`: grid_sample, so
            traceable and exportable to ONNX) instead of the compiled op; set through `reference_ops(model)`.
    """

    def __init__(self, *, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        self.reference_ops = False
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on a ring of head directions, the k-th point k times further out."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack((thetas.cos(), thetas.sin()), dim=-1)
        grid = grid / grid.abs().amax(-1, keepdim=True)  # (M, 2) on the unit square's boundary
        grid = grid[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)  # (M, L, P, 2)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)  # uniform weights over levels and points after the softmax
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, query: torch.Tensor, reference_rboxes: torch.Tensor, value: torch.Tensor, layout: MultiScaleLayout
    ) -> torch.Tensor:
        """Attends from each query to points around its reference rbox.

        Args:
            query: (B, Q, d_model) queries (content + positional embedding).
            reference_rboxes: (B, Q, 5) normalised reference rboxes.
            value: (B, S, d_model) flattened multi-scale tokens.
            layout: where the tokens sit; its padding mask zeroes padded values.

        Returns:
            (B, Q, d_model).
        """
        b, q, _ = query.shape
        m, l, p = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value).masked_fill(layout.padding_mask[..., None], 0.0)
        value = value.unflatten(-1, (m, -1))  # (B, S, M, D)
        offsets = self.sampling_offsets(query).view(b, q, m, l, p, 2) / p  # half-side units
        weights = self.attention_weights(query).view(b, q, m, l * p)
        weights = F.softmax(weights, dim=-1).view(b, q, m, l, p)
        locations = rbox_sampling_locations(reference_rboxes, offsets, layout.image_sizes, layout.valid_ratios)
        # Locations and weights stay in their own (float32) precision: under bf16 autocast, rounding a location to
        # bf16 would move it by up to ~0.25 px on a 128-px level; the op computes positions in float32 itself.
        if self.reference_ops:
            output = ms_deform_attn_static(layout.level_shapes, value, locations, weights)
        else:
            output = ms_deform_attn(value, layout.spatial_shapes, layout.level_start_index, locations, weights)
        return self.output_proj(output)


@contextlib.contextmanager
def reference_ops(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, every `RotatedMSDeformAttn` of `model` samples with the pure-PyTorch twin (`enabled`) or
    with the compiled op where one exists (not `enabled`); each module's setting is restored on exit.

    The twin is what ONNX export traces (grid_sample becomes ONNX GridSample: no custom op); the results equal the
    compiled op's to float32 rounding.
    """
    modules = [module for module in model.modules() if isinstance(module, RotatedMSDeformAttn)]
    before = [module.reference_ops for module in modules]
    for module in modules:
        module.reference_ops = enabled
    try:
        yield model
    finally:
        for module, setting in zip(modules, before, strict=True):
            module.reference_ops = setting
