"""One-to-many assignment for the dense two-stage proposals: `DenseProposals` + targets -> (token, target) pairs.

Deformable DETR supervises only the top-k encoder proposals, one-to-one. Supervising every token instead, with
several positives per object, turns the encoder into a dense detector that learns from many more positive samples
per image; this is the auxiliary one-to-many supervision of H-DETR and Co-DETR, and it shortens training markedly
when the backbone starts from scratch. The decoder keeps its one-to-one Hungarian loss, so its output stays free
of duplicates.
"""

import torch
from torch import nn

from rotated_ddetr.boxes import denormalize_rboxes
from rotated_ddetr.model.detector import DenseProposals
from rotated_ddetr.structures import Target
from rotated_ddetr.training.matcher import HungarianMatcher


def centre_prior(points: torch.Tensor, strides: torch.Tensor, targets: torch.Tensor, radius: float) -> torch.Tensor:
    """Which tokens may serve which targets: the token centre lies inside the target rbox, enlarged to half-sides
    of at least `radius` strides of the token's level (so that thin or small objects still cover a few tokens).

    Args:
        points: (S, 2) token centres in pixels.
        strides: (S,) token strides in pixels.
        targets: (T, 5) target rboxes in pixels.
        radius: smallest half-side of the region, in strides.

    Returns:
        (S, T) bool.
    """
    d = points[:, None, :] - targets[None, :, :2]  # (S, T, 2)
    cos, sin = targets[:, 4].cos(), targets[:, 4].sin()
    u, v = (d[..., 0] * cos + d[..., 1] * sin).abs(), (-d[..., 0] * sin + d[..., 1] * cos).abs()  # target frame
    reach = radius * strides[:, None]  # (S, 1)
    return (u <= torch.maximum(targets[:, 2] / 2, reach)) & (v <= torch.maximum(targets[:, 3] / 2, reach))


class TopKAssigner(nn.Module):
    """Each target takes its k cheapest tokens inside its centre prior; a token claimed twice keeps the cheaper.

    The cost is the Hungarian matcher's (focal class + L1 + 1 - rotated IoU), so the choice of tokens, levels
    included, follows the predictions as they improve; the centre prior keeps it local while they are still noise.

    Args:
        matcher: the `HungarianMatcher` whose cost ranks the tokens.
        k: positives per target (fewer when fewer tokens lie in its prior).
        radius: the prior's smallest half-side in strides (`centre_prior`).
    """

    def __init__(self, matcher: HungarianMatcher, k: int, radius: float = 1.0) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.matcher, self.k, self.radius = matcher, k, radius

    @torch.no_grad()
    def forward(self, dense: DenseProposals, targets: list[Target]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Assigns tokens to targets.

        Args:
            dense: the proposal head's output at every token.
            targets: B `Target`s (any may be empty).

        Returns:
            Per image, (token indices, target indices): int64 tensors on the logits' device, sorted by token; each
            token at most once.
        """
        device = dense.logits.device
        counts = [len(t) for t in targets]
        empty = torch.empty(0, dtype=torch.int64, device=device)
        if sum(counts) == 0:
            return [(empty, empty) for _ in targets]
        cost = self.matcher.cost_matrix(dense.logits, dense.rboxes, targets)  # (B, S, T_all)
        matches = []
        for index, (block, target) in enumerate(zip(cost.split(counts, dim=-1), targets, strict=True)):
            if not counts[index]:
                matches.append((empty, empty))
                continue
            height, width = target.image_size
            points = dense.points[index] * dense.points.new_tensor([width, height])  # (S, 2) pixels
            boxes = denormalize_rboxes(target.rboxes.to(device).float(), target.image_size)
            allowed = centre_prior(points, dense.strides, boxes, self.radius) & ~dense.padding_mask[index, :, None]
            matches.append(self._pick(block[index].masked_fill(~allowed, float("inf"))))
        return matches

    def _pick(self, cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, T) cost, inf where not allowed -> (tokens, targets) of the k cheapest per target, conflicts resolved."""
        k = min(self.k, cost.shape[0])
        top = cost.topk(k, dim=0, largest=False).indices  # (k, T)
        chosen = torch.zeros_like(cost, dtype=torch.bool).scatter_(0, top, True) & cost.isfinite()
        best_cost, best_target = cost.masked_fill(~chosen, float("inf")).min(dim=1)  # (S,)
        tokens = best_cost.isfinite().nonzero().flatten()
        return tokens, best_target[tokens]
