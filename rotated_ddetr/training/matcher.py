"""Hungarian matcher: per-layer predictions (B, Q, C) logits + (B, Q, 5) rboxes and targets -> matched index pairs.

The cost mixes a focal class cost, L1 on normalised (cx, cy, w, h), 1 - rotated IoU from the compiled op on pixel
rboxes, and an optional KLD term; each image is then solved with scipy's `linear_sum_assignment`.
"""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from rotated_ddetr.boxes import denormalize_rboxes
from rotated_ddetr.ops import box_iou_rotated
from rotated_ddetr.structures import Target, stack_image_sizes
from rotated_ddetr.training.kld import kld_loss


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets minimising a weighted cost (DETR sec. 3.1).

    Default weights (class 2, L1 5, IoU 2) are Deformable DETR's with GIoU replaced by 1 - rotated IoU. Both geometric
    terms are needed: rotated IoU is 0 for all non-overlapping pairs (frequent for small aerial objects and early in
    training), so an IoU-only cost cannot rank distant predictions; L1 on (cx, cy, w, h) ignores the angle, so an
    L1-only cost ties all orientations of one centre and yields duplicates. The angle is left out of L1 because it is
    ambiguous (a and a + pi, and (w, h, a) vs (h, w, a + pi/2), are the same box). A KLD term (weight 0 by default)
    is available as a smooth, angle-aware alternative.

    Args:
        class_weight: weight of the focal classification cost.
        l1_weight: weight of the L1 cost on normalised (cx, cy, w, h).
        iou_weight: weight of 1 - rotated IoU (pixel rboxes, `rotated_ddetr.ops.box_iou_rotated`).
        kld_weight: weight of the KLD loss between pixel rboxes (0 disables it).
        focal_alpha: alpha of the focal cost.
        focal_gamma: gamma of the focal cost.
    """

    def __init__(
        self,
        *,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        iou_weight: float = 2.0,
        kld_weight: float = 0.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.class_weight, self.l1_weight = class_weight, l1_weight
        self.iou_weight, self.kld_weight = iou_weight, kld_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, rboxes: torch.Tensor, targets: list[Target]) -> torch.Tensor:
        """The cost of every prediction of the batch against every target of the batch.

        Args:
            logits: (B, Q, C) class logits.
            rboxes: (B, Q, 5) normalised predicted rboxes.
            targets: B `Target`s.

        Returns:
            (B, Q, T) float32 cost, T the total number of targets; image b's block is [b, :, targets of b].
        """
        b, q, _ = logits.shape
        prob = logits.flatten(0, 1).float().sigmoid()  # (B*Q, C)
        pred = rboxes.flatten(0, 1).float()  # (B*Q, 5)
        labels = torch.cat([t.labels for t in targets]).to(logits.device)
        tgt = torch.cat([t.rboxes for t in targets]).to(pred)
        pred_px = denormalize_rboxes(rboxes.float(), stack_image_sizes(targets, pred)[:, None]).flatten(0, 1)
        tgt_px = denormalize_rboxes(tgt, stack_image_sizes(targets, pred, repeats=[len(t) for t in targets]))
        # Focal cost (Deformable DETR): the focal loss of labelling the target's class positive minus negative.
        a, g = self.focal_alpha, self.focal_gamma
        neg = (1 - a) * prob**g * -(1 - prob + 1e-8).log()
        pos = a * (1 - prob) ** g * -(prob + 1e-8).log()
        cost = self.class_weight * (pos[:, labels] - neg[:, labels])
        cost = cost + self.l1_weight * torch.cdist(pred[:, :4], tgt[:, :4], p=1)
        cost = cost + self.iou_weight * (1 - box_iou_rotated(pred_px, tgt_px))
        if self.kld_weight:
            cost = cost + self.kld_weight * kld_loss(pred_px[:, None], tgt_px[None])
        return cost.view(b, q, -1)

    @torch.no_grad()
    def forward(
        self, logits: torch.Tensor, rboxes: torch.Tensor, targets: list[Target]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Matches each image's predictions to its targets.

        Args:
            logits: (B, Q, C) class logits.
            rboxes: (B, Q, 5) normalised rboxes.
            targets: B `Target`s; any may be empty, and may hold more targets than Q (then Q are matched).

        Returns:
            Per image, (query indices, target indices): int64 CPU tensors of length min(Q, N_b), sorted by query.
        """
        counts = [len(t) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(counts) == 0:
            return [(empty, empty) for _ in targets]
        cost = self.cost_matrix(logits, rboxes, targets).cpu()
        matches = []
        for index, block in enumerate(cost.split(counts, dim=-1)):
            rows, cols = linear_sum_assignment(block[index].numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches
