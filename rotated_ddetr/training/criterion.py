"""Set criterion: `DetectorOutput` + targets -> a dict of losses (weighted total under "loss").

Each decoder layer and the two-stage encoder proposals are matched by the Hungarian matcher (or, for the proposals,
optionally one-to-many at every token by a `TopKAssigner`), then scored with the sigmoid focal loss, L1 on normalised
(cx, cy, w, h) and the KLD loss (a rotated overlap) on pixel rboxes.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from rotated_ddetr.boxes import canonicalize_rboxes, denormalize_rboxes, wrap_angle
from rotated_ddetr.distributed import average_over_ranks
from rotated_ddetr.model.denoising import DenoisingOutput
from rotated_ddetr.model.detector import DenseProposals, DetectorOutput
from rotated_ddetr.ops import box_iou_rotated
from rotated_ddetr.structures import Target, stack_image_sizes
from rotated_ddetr.training.assigner import TopKAssigner
from rotated_ddetr.training.kld import kld_loss
from rotated_ddetr.training.matcher import HungarianMatcher


def average_num_boxes(targets: list[Target], device: torch.device) -> torch.Tensor:
    """The number of target boxes per process, averaged over distributed ranks, at least 1 (the loss normaliser)."""
    return average_over_ranks(sum(len(t) for t in targets), device).clamp(min=1.0)


class SetCriterion(nn.Module):
    """DETR's set loss for rotated boxes, with auxiliary losses for every decoder layer and the encoder proposals.

    KLD term: the KLD loss (`rotated_ddetr.training.kld.kld_loss`), a rotated overlap loss. Unlike a smooth L1 on angles
    it depends only on the rectangles, so it is continuous across the angle boundary (a = +-pi/2) and where w ~ h (the
    Gaussian turns isotropic, so the angle stops mattering instead of jumping); it is scale invariant (small vehicles
    and large harbours weigh alike) and couples centre, size and angle errors through the target's covariance (Yang et
    al. 2021). Pure PyTorch, so it differentiates where the compiled rotated IoU does not. The price of continuity:
    while a predicted box is square its angle gets no gradient (at init all boxes are; the size terms move them off
    square).

    Optional angle term (`angle_weight` > 0): |wrap(a_pred - a_target)| (radians, wrapped to [-pi/2, pi/2)) against
    the canonical target, weighted by the target's anisotropy 1 - h/w (0 for squares, whose angle means nothing).
    Its gradient does not fade for square-ish predictions, so orientations are learned from the first steps (the
    KLD term alone leaves them to the late, slow phase where predictions have become elongated). Like the L1 term, it
    compares the prediction as parameterised with the canonical target, so it prefers predictions with w >= h.

    Every head (each decoder layer, the encoder proposals) gets the same weights; the total is sum over heads of
    class_weight * focal (or varifocal) + l1_weight * L1 + kld_weight * KLD (+ angle_weight * angle), each divided by
    the number of target boxes averaged over ranks.

    Args:
        matcher: a `HungarianMatcher`.
        num_classes: object classes.
        class_weight: weight of the sigmoid focal loss.
        l1_weight: weight of the L1 loss on normalised (cx, cy, w, h).
        kld_weight: weight of the KLD loss.
        angle_weight: weight of the anisotropy-weighted angle loss (0 leaves it out, and out of the loss dict).
        focal_alpha: alpha of the focal loss.
        focal_gamma: gamma of the focal loss.
        assigner: a `TopKAssigner` to supervise the two-stage proposals at every token, one-to-many (normalised by
            the number of positive tokens); None keeps Deformable DETR's one-to-one loss on the top-k proposals.
        iou_aware: the class loss is the varifocal loss towards the rotated IoU of each matched prediction (compiled
            op, no gradient through the IoU) instead of the focal loss towards 1 (`varifocal_loss`).
        kld_symmetric: the KLD loss on the symmetric divergence (`kld_loss`): no shortening of elongated predictions
            whose angle is still off.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        num_classes: int,
        *,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        kld_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        angle_weight: float = 0.0,
        assigner: TopKAssigner | None = None,
        iou_aware: bool = False,
        kld_symmetric: bool = False,
    ) -> None:
        super().__init__()
        self.matcher, self.num_classes, self.assigner = matcher, num_classes, assigner
        self.iou_aware, self.kld_symmetric = iou_aware, kld_symmetric
        self.weights = {"class": class_weight, "l1": l1_weight, "kld": kld_weight}
        if angle_weight:
            self.weights["angle"] = angle_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def forward(self, outputs: DetectorOutput, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Computes all losses.

        Args:
            outputs: the detector's output.
            targets: one `Target` per image (normalised rboxes, valid image size).

        Returns:
            "loss": the weighted total to back-propagate; "loss_{class,l1,kld[,angle]}" for the last decoder layer,
            "..._{i}" for decoder layer i < last, "..._enc" for the encoder proposals, "..._dn" and "..._dn_{i}" for
            the denoising queries when present (all unweighted, for logging).
        """
        num_boxes = average_num_boxes(targets, outputs.logits.device)
        num_layers = outputs.logits.shape[0]
        heads = {f"_{i}": (outputs.logits[i], outputs.rboxes[i]) for i in range(num_layers - 1)}
        heads[""] = (outputs.logits[-1], outputs.rboxes[-1])
        per_head = {
            suffix: self.head_losses(logits, rboxes, targets, self.matcher(logits, rboxes, targets), num_boxes)
            for suffix, (logits, rboxes) in heads.items()
        }
        if outputs.dense is not None and self.assigner is not None:
            per_head["_enc"] = self.dense_losses(outputs.dense, targets)
        elif outputs.enc_logits is not None:
            matches = self.matcher(outputs.enc_logits, outputs.enc_rboxes, targets)
            per_head["_enc"] = self.head_losses(outputs.enc_logits, outputs.enc_rboxes, targets, matches, num_boxes)
        if outputs.denoising is not None:
            per_head.update(self.denoising_losses(outputs.denoising, targets, num_boxes))
        losses = {}
        total = outputs.logits.new_zeros(())
        for suffix, head in per_head.items():
            for name, value in head.items():
                losses[f"loss_{name}{suffix}"] = value
                total = total + self.weights[name] * value
        return {"loss": total, **losses}

    def dense_losses(self, dense: DenseProposals, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Unweighted one-to-many losses of the proposals at every valid token, normalised by the positives."""
        matches = self.assigner(dense, targets)
        num_positives = average_over_ranks(sum(len(q) for q, _ in matches), dense.logits.device).clamp(min=1.0)
        valid = ~dense.padding_mask
        return self.head_losses(dense.logits, dense.rboxes, targets, matches, num_positives, valid)

    def denoising_losses(
        self, dn: DenoisingOutput, targets: list[Target], num_boxes: torch.Tensor
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Losses of the denoising queries against the targets they were made from (no matching), per layer.

        Returns:
            {"_dn": losses of the last layer, "_dn_{i}": of layer i < last}; normalised by num_boxes x groups.
        """
        assignment = []
        for b in range(len(targets)):
            queries = torch.nonzero(dn.target_index[b] >= 0).flatten()
            assignment.append((queries, dn.target_index[b, queries]))
        num_layers = dn.logits.shape[0]
        return {
            "_dn" if i == num_layers - 1 else f"_dn_{i}": self.head_losses(
                dn.logits[i], dn.rboxes[i], targets, assignment, num_boxes * dn.groups
            )
            for i in range(num_layers)
        }

    def head_losses(
        self,
        logits: torch.Tensor,
        rboxes: torch.Tensor,
        targets: list[Target],
        matches: list[tuple[torch.Tensor, torch.Tensor]],
        num_boxes: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses of one head: logits (B, Q, C), normalised rboxes (B, Q, 5) -> class, l1, kld.

        `matches` pairs queries with targets per image; `valid` (B, Q) bool limits the class loss (None: all).
        """
        batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(logits.device)
        query_index = torch.cat([q for q, _ in matches]).to(logits.device)
        labels = torch.cat([t.labels[k.to(t.labels.device)] for t, (_, k) in zip(targets, matches, strict=True)])
        pred = rboxes[batch_index, query_index].float()  # (K, 5) normalised
        tgt = torch.cat([t.rboxes[k.to(t.rboxes.device)] for t, (_, k) in zip(targets, matches, strict=True)])
        tgt = tgt.to(pred)
        sizes = stack_image_sizes(targets, pred, repeats=[len(q) for q, _ in matches])  # (K, 2)
        pred_px, tgt_px = denormalize_rboxes(pred, sizes), denormalize_rboxes(tgt, sizes)

        scores = torch.zeros_like(logits)  # the classification target: 1 (focal) or the IoU (varifocal) when matched
        if self.iou_aware:
            positive = box_iou_rotated(pred_px.detach(), tgt_px, aligned=True).to(logits.dtype)
        else:
            positive = torch.ones_like(labels, dtype=logits.dtype)
        scores[batch_index, query_index, labels.to(logits.device)] = positive
        if valid is not None:
            logits, scores = logits[valid], scores[valid]
        if self.iou_aware:
            cls = varifocal_loss(logits, scores, 1.0 - self.focal_alpha, self.focal_gamma)
        else:
            cls = sigmoid_focal_loss(logits, scores, self.focal_alpha, self.focal_gamma, reduction="sum")

        l1 = (pred[:, :4] - tgt[:, :4]).abs().sum()
        kld = kld_loss(pred_px, tgt_px, self.kld_symmetric).sum()
        losses = {"class": cls / num_boxes, "l1": l1 / num_boxes, "kld": kld / num_boxes}
        if "angle" in self.weights:
            losses["angle"] = angle_loss(pred_px, tgt_px).sum() / num_boxes
        return losses


def varifocal_loss(logits: torch.Tensor, scores: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The varifocal loss (Zhang et al., VarifocalNet, CVPR 2021, eq. 2), summed: binary cross-entropy towards
    `scores`, weighted by the target score q where q > 0 and by alpha * p^gamma (p the predicted score, detached)
    elsewhere. With q the IoU of a matched prediction, the score learns to rank detections by localisation quality.

    Args:
        logits: (..., C) class logits.
        scores: (..., C) targets in [0, 1]: the IoU at a matched query's class, 0 elsewhere.
        alpha, gamma: the down-weighting of the negatives (the criterion passes 1 - focal_alpha and focal_gamma,
            so that negatives weigh exactly as in its focal loss).

    Returns:
        () float.
    """
    prob = logits.detach().sigmoid()
    weight = torch.where(scores > 0, scores, alpha * prob.pow(gamma))
    return F.binary_cross_entropy_with_logits(logits, scores, weight=weight, reduction="sum")


def angle_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Anisotropy-weighted angle error of matched pixel rboxes: (1 - h/w of the canonical target) * |wrap(a_p - a_t)|.

    Args:
        pred: (K, 5) pixel rboxes as predicted (not canonicalised).
        target: (K, 5) pixel rboxes.

    Returns:
        (K,) float in [0, pi/2]: 0 for a square target or matching angles (a half turn apart counts as matching).
    """
    target = canonicalize_rboxes(target)
    anisotropy = 1.0 - target[:, 3] / target[:, 2].clamp(min=1e-6)
    return anisotropy * wrap_angle(pred[:, 4] - target[:, 4]).abs()
