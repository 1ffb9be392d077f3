"""Prediction heads shared by the encoder proposals and the decoder: an MLP, and the rbox delta parameterisation.

Deltas (B, Q, 5) from a box MLP + reference rboxes (B, Q, 5) normalised -> refined rboxes (B, Q, 5) normalised.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from rotated_ddetr.boxes import wrap_angle


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (DETR's box head).

    Args:
        in_dim, hidden_dim, out_dim: feature sizes.
        num_layers: number of linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x

    def zero_last_layer(self) -> None:
        """Zeroes the last layer, so the head first predicts a zero delta (Deformable DETR's box-head init)."""
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both x and 1 - x clamped to >= eps (Deformable DETR's)."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def activate_rboxes(raw: torch.Tensor) -> torch.Tensor:
    """Unconstrained (..., 5) -> normalised rboxes: sigmoid on cx, cy, w, h; the angle wrapped to [-pi/2, pi/2)."""
    return torch.cat((raw[..., :4].sigmoid(), wrap_angle(raw[..., 4:])), dim=-1)


def refine_rboxes(reference_rboxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Applies predicted deltas to reference rboxes (Deformable DETR's iterative box refinement, extended to angles).

    cx, cy, w, h: sigmoid(inverse_sigmoid(ref) + delta), so they stay in (0, 1); angle: ref + delta, wrapped to
    [-pi/2, pi/2). Not canonicalised (w may be smaller than h).

    Args:
        reference_rboxes: (..., 5) normalised rboxes.
        deltas: (..., 5) raw head outputs.

    Returns:
        (..., 5) normalised rboxes.
    """
    raw = torch.cat((inverse_sigmoid(reference_rboxes[..., :4]), reference_rboxes[..., 4:]), dim=-1)
    return activate_rboxes(raw + deltas)


def class_bias_init(prior_prob: float = 0.01) -> float:
    """Bias giving every class the prior probability `prior_prob` under a sigmoid (Focal loss paper, sec. 4.1)."""
    return -math.log((1 - prior_prob) / prior_prob)
