"""Set criterion: ~0 box loss for perfect predictions, finite with empty targets, per-layer keys and weights."""

import math

import pytest
import torch
import torch.distributed as dist

from rotated_ddetr.model.detector import DetectorOutput
from rotated_ddetr.ops import box_iou_rotated
from rotated_ddetr.structures import Target
from rotated_ddetr.training import HungarianMatcher, SetCriterion, average_num_boxes
from rotated_ddetr.training.criterion import varifocal_loss

TARGETS = [
    Target(
        labels=torch.tensor([1, 0]),
        rboxes=torch.tensor([[0.3, 0.4, 0.2, 0.1, 0.5], [0.7, 0.6, 0.1, 0.3, -math.pi / 2]]),
        image_size=(80, 120),
    ),
    Target(labels=torch.tensor([2]), rboxes=torch.tensor([[0.5, 0.5, 0.4, 0.4, 1.0]]), image_size=(64, 64)),
]


def _outputs(rboxes, logits, with_enc=True):
    """Two decoder layers with the same predictions; the encoder proposals too when `with_enc`."""
    return DetectorOutput(
        logits=torch.stack((logits, logits)),
        rboxes=torch.stack((rboxes, rboxes)),
        enc_logits=logits if with_enc else None,
        enc_rboxes=rboxes if with_enc else None,
        image_sizes=torch.tensor([[80, 120], [64, 64]]),
    )


def _perfect(q=4, c=3):
    rboxes = torch.rand(2, q, 5) * 0.5 + 0.2
    logits = torch.full((2, q, c), -20.0)
    for b, target in enumerate(TARGETS):
        n = len(target.labels)
        rboxes[b, :n] = target.rboxes
        logits[b, torch.arange(n), target.labels] = 20.0
    return rboxes, logits


def test_perfect_predictions_have_no_box_loss():
    losses = SetCriterion(HungarianMatcher(), num_classes=3)(_outputs(*_perfect()), TARGETS)
    for suffix in ("", "_0", "_enc"):
        assert float(losses[f"loss_l1{suffix}"]) < 1e-6
        assert float(losses[f"loss_kld{suffix}"]) < 1e-6
        assert float(losses[f"loss_class{suffix}"]) < 1e-6  # focal loss of +-20 logits: ~1e-9


def test_keys_and_weighted_total():
    criterion = SetCriterion(HungarianMatcher(), num_classes=3, class_weight=2.0, l1_weight=5.0, kld_weight=3.0)
    rboxes, logits = _perfect()
    losses = criterion(_outputs(rboxes + 0.01, logits * 0.1), TARGETS)
    names = {"class": 2.0, "l1": 5.0, "kld": 3.0}
    expected = sum(w * losses[f"loss_{n}{s}"] for n, w in names.items() for s in ("", "_0", "_enc"))
    assert set(losses) == {"loss"} | {f"loss_{n}{s}" for n in names for s in ("", "_0", "_enc")}
    torch.testing.assert_close(losses["loss"], expected, atol=1e-5, rtol=1e-6)
    assert float(losses["loss_l1"]) > 0 and float(losses["loss_kld"]) > 0
    # The L1 of a uniform 0.01 shift: 4 coordinates * 0.01 per box, averaged over the 3 target boxes.
    torch.testing.assert_close(losses["loss_l1"], torch.tensor(0.04), atol=1e-5, rtol=0)


def test_empty_targets_are_finite_and_differentiable():
    empty = [Target(labels=torch.zeros(0, dtype=torch.int64), rboxes=torch.zeros(0, 5), image_size=(32, 32))] * 2
    rboxes = torch.rand(2, 4, 5, requires_grad=True)
    logits = torch.randn(2, 4, 3, requires_grad=True)
    losses = SetCriterion(HungarianMatcher(), num_classes=3)(_outputs(rboxes, logits, with_enc=False), empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_l1"].item() == 0.0 and losses["loss_kld"].item() == 0.0
    losses["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(rboxes.grad).all()


def test_num_boxes_averaged_over_ranks(tmp_path):
    # A one-process gloo group exercises the all_reduce path: the normaliser is the per-rank mean, at least 1.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert float(average_num_boxes(TARGETS, torch.device("cpu"))) == 3.0
        empty = [Target(labels=torch.zeros(0, dtype=torch.int64), rboxes=torch.zeros(0, 5), image_size=(8, 8))]
        assert float(average_num_boxes(empty, torch.device("cpu"))) == 1.0
    finally:
        dist.destroy_process_group()


def test_angle_loss_by_hand():
    from rotated_ddetr.training.criterion import angle_loss

    target = torch.tensor([[50.0, 40.0, 40.0, 10.0, 0.3]] * 4)
    target[2] = torch.tensor([50.0, 40.0, 10.0, 40.0, 0.3 + math.pi / 2])  # the same rectangle, w/h swapped
    target[3] = torch.tensor([50.0, 40.0, 20.0, 20.0, 0.3])  # a square: no angle
    pred = torch.tensor([[50.0, 40.0, 40.0, 10.0, 0.5], [50.0, 40.0, 40.0, 10.0, 0.3 - math.pi]] + [[0.0] * 5] * 2)
    pred[2, 4], pred[3, 4] = -1.2, 1.0
    expected = torch.tensor([0.75 * 0.2, 0.0, 0.75 * 1.5, 0.0])  # row 2: canonical target angle 0.3, vs -1.2
    torch.testing.assert_close(angle_loss(pred, target), expected, atol=1e-5, rtol=0)


def test_angle_term_joins_the_total_when_weighted():
    criterion = SetCriterion(HungarianMatcher(), num_classes=3, angle_weight=1.5)
    rboxes, logits = _perfect()
    rboxes[..., 4] += 0.1
    losses = criterion(_outputs(rboxes, logits), TARGETS)
    weights = {"class": 2.0, "l1": 5.0, "kld": 2.0, "angle": 1.5}
    expected = sum(w * losses[f"loss_{n}{s}"] for n, w in weights.items() for s in ("", "_0", "_enc"))
    torch.testing.assert_close(losses["loss"], expected, atol=1e-5, rtol=1e-6)
    # Targets: 24 x 8 px (anisotropy 2/3, off by 0.1); 12 x 24 px at -pi/2, canonical 24 x 12 at 0 (1/2), which the
    # prediction copies in the swapped form (-pi/2 + 0.1: like L1, the term prefers w >= h); a square (0).
    expected = (2 / 3 * 0.1 + 1 / 2 * (math.pi / 2 - 0.1)) / 3
    torch.testing.assert_close(losses["loss_angle"], torch.tensor(expected), atol=1e-5, rtol=0)


def test_varifocal_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    scores = torch.tensor([[0.5, 0.0], [0.0, 0.8]])
    p = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-1.0)).item()
    q = torch.sigmoid(torch.tensor(0.5)).item()
    expected = (
        0.5 * math.log(2.0)  # q = 0.5 at p = 0.5: weight q, cross-entropy ln 2
        + 0.75 * p[0] ** 2 * -math.log(1 - p[0])  # negatives: alpha * p^gamma * -ln(1 - p)
        + 0.75 * p[1] ** 2 * -math.log(1 - p[1])
        + 0.8 * -(0.8 * math.log(q) + 0.2 * math.log(1 - q))
    )
    assert float(varifocal_loss(logits, scores, alpha=0.75, gamma=2.0)) == pytest.approx(expected, rel=1e-6)


def test_iou_aware_class_target_is_the_iou_of_the_match():
    """Perfect boxes: the varifocal target is IoU 1, so +-20 logits cost ~0; a shifted box with IoU q makes the target
    q, whose cost at the optimal logit ln(q / (1 - q)) is q * H(q) (H the binary entropy) and no longer 0."""
    criterion = SetCriterion(HungarianMatcher(), num_classes=3, iou_aware=True)
    rboxes, logits = _perfect()
    assert float(criterion(_outputs(rboxes, logits), TARGETS)["loss_class"]) < 1e-6
    shifted = rboxes.clone()
    shifted[1, 0, 0] += 0.1  # target 2 (64 x 64 image): 6.4 px to the right
    pixels = torch.tensor([64.0, 64.0, 64.0, 64.0, 1.0])
    q = float(box_iou_rotated(shifted[1, :1] * pixels, TARGETS[1].rboxes * pixels, aligned=True))
    assert 0.4 < q < 0.8
    logits[1, 0, 2] = math.log(q / (1 - q))
    losses = criterion(_outputs(shifted, logits), TARGETS)
    entropy = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert float(losses["loss_class"]) == pytest.approx(q * entropy / 3, rel=1e-4)  # 3 target boxes
