"""The one rotated-box convention of rotated_ddetr (placeholder: completed in the next commit)."""

import torch

_CORNER_SIGNS = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))


def rboxes_to_corners(rboxes: torch.Tensor) -> torch.Tensor:
    """(..., 5) rboxes (cx, cy, w, h, angle[rad], clockwise on screen) -> (..., 4, 2) corners."""
    cx, cy, w, h, a = rboxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    signs = torch.tensor(_CORNER_SIGNS, dtype=rboxes.dtype, device=rboxes.device)  # (4, 2)
    dx = signs[:, 0] * w[..., None]
    dy = signs[:, 1] * h[..., None]
    x = cx[..., None] + dx * cos[..., None] - dy * sin[..., None]
    y = cy[..., None] + dx * sin[..., None] + dy * cos[..., None]
    return torch.stack((x, y), dim=-1)
