"""Positional encodings: padding masks -> 2-d sine encodings of feature maps, and rboxes -> query sine embeddings.

Used by the detector (encoder tokens, with a learned level embedding added there) and by the decoder (the query
positional embedding is recomputed from each layer's reference rbox, as in DAB-DETR / DINO).
"""

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """The normalised 2-d sine encoding of DETR / Deformable DETR ("Attention is all you need" eq. of sec. 3.5).

    Positions are the cumulative count of valid pixels along each axis, offset by -0.5 (pixel centres, as in
    Deformable DETR), divided by the valid extent and scaled to [0, 2*pi], so each image is encoded relative to its own
    valid area, whatever the padding.

    Args:
        num_pos_feats: channels per axis; the output has 2 * num_pos_feats channels (d_model / 2 each).
        temperature: base of the geometric frequency ladder.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Encodes every position of a feature map.

        Args:
            mask: (B, H, W) bool, True at padding.

        Returns:
            (B, 2 * num_pos_feats, H, W) float32: y-channels first, then x-channels (Deformable DETR's order).
        """
        not_mask = (~mask).to(torch.float32)
        eps, scale = 1e-6, 2 * math.pi
        y_embed = (not_mask.cumsum(1) - 0.5) / (not_mask.sum(1, keepdim=True) + eps) * scale  # (B, H, W)
        x_embed = (not_mask.cumsum(2) - 0.5) / (not_mask.sum(2, keepdim=True) + eps) * scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, mask.device)
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)  # (B, H, W, num_pos_feats)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def rbox_sine_embedding(rboxes: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of normalised rboxes, the input of the decoder's query positional MLP.

    cx, cy, w, h (in [0, 1]) get the DAB-DETR sine embedding (x * 2*pi over a frequency ladder). The angle gets
    integer harmonics sin(2ka), cos(2ka), k = 1..num_feats/2: periodic in pi, so the embedding is continuous where the
    reference angle wraps from pi/2 to -pi/2 (a and a + pi describe the same rectangle).

    Args:
        rboxes: (..., 5) normalised rboxes (cx, cy, w, h, angle in radians).
        num_feats: channels per value (even).

    Returns:
        (..., 5 * num_feats) float, in the order cx, cy, w, h, angle.
    """
    if num_feats % 2:
        raise ValueError(f"num_feats must be even, got {num_feats}")
    dim_t = _frequencies(num_feats, temperature, rboxes.device)
    sizes = _interleave_sin_cos(rboxes[..., :4, None] * (2 * math.pi) / dim_t)  # (..., 4, num_feats)
    harmonics = 2 * torch.arange(1, num_feats // 2 + 1, dtype=torch.float32, device=rboxes.device)
    angle = rboxes[..., 4:, None] * harmonics  # (..., 1, num_feats / 2)
    angle = torch.cat((angle.sin(), angle.cos()), dim=-1)  # (..., 1, num_feats)
    return torch.cat((sizes, angle), dim=-2).flatten(-2)


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """(num_feats,) divisors temperature^(2*floor(i/2)/num_feats): each frequency is used for one sin and one cos."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) phases (F even) -> (..., F): sin of the even entries interleaved with cos of the odd ones."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)
