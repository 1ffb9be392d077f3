"""One-to-many dense assignment: the centre prior by hand, k cheapest tokens per target, conflicts, padding, losses."""

import math

import torch

from rotated_ddetr.model.detector import DenseProposals, DetectorOutput
from rotated_ddetr.structures import Target
from rotated_ddetr.training import HungarianMatcher, SetCriterion
from rotated_ddetr.training.assigner import TopKAssigner, centre_prior

SIZE = (64, 128)  # (height, width) of the image: normalised x is pixels / 128, y is pixels / 64


def test_centre_prior_by_hand():
    # A 40 x 8 px target rotated by 90 degrees at (60, 30): it spans x in [56, 64], y in [10, 50].
    target = torch.tensor([[60.0, 30.0, 40.0, 8.0, math.pi / 2]])
    points = torch.tensor([[60.0, 12.0], [63.0, 48.0], [70.0, 30.0], [60.0, 52.0], [66.0, 30.0]])
    strides = torch.tensor([8.0, 8.0, 8.0, 8.0, 4.0])
    inside = centre_prior(points, strides, target, radius=1.0)[:, 0].tolist()
    # Inside the box; inside; 10 px across (> 8 px reach); 22 px along (> 20 px half-length); 6 px across with a
    # 4 px stride (reach 4 px, half-width 4 px): out.
    assert inside == [True, True, False, False, False]
    # A larger radius reaches the points across the box: 10 px <= 1.5 * 8; the last one 6 <= 1.5 * 4.
    assert centre_prior(points, strides, target, radius=1.5)[:, 0].tolist() == [True, True, True, False, True]


def _dense(rboxes, logits, padding=None):
    """A 1-image, 8 x 16 token grid of stride 8 over the 64 x 128 image."""
    ys, xs = torch.meshgrid(torch.arange(8) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    points = torch.stack((xs.flatten() / 16, ys.flatten() / 8), dim=-1)[None]
    if padding is None:
        padding = torch.zeros(1, 128, dtype=torch.bool)
    return DenseProposals(logits, rboxes, points, torch.full((128,), 8.0), padding)


def _token(x, y):
    """Index of the token of the cell (x, y)."""
    return y * 16 + x


TARGET = Target(
    labels=torch.tensor([0, 1]),
    # 16 x 16 px boxes centred on the corners between cells (16, 16) and (96, 32): four token centres each.
    rboxes=torch.tensor([[16 / 128, 16 / 64, 16 / 128, 16 / 64, 0.0], [96 / 128, 32 / 64, 16 / 128, 16 / 64, 0.3]]),
    image_size=SIZE,
)


def _predictions():
    """Every token predicts the same far-off box with a low score; some tokens predict a target exactly."""
    rboxes = torch.tensor([0.5, 0.9, 0.05, 0.05, 0.0]).repeat(1, 128, 1)
    logits = torch.full((1, 128, 2), -5.0)
    return rboxes, logits


def test_k_cheapest_tokens_inside_the_prior():
    rboxes, logits = _predictions()
    # Token (1, 1) predicts target 0 exactly, so it must be among its picks even with k = 1.
    rboxes[0, _token(1, 1)] = TARGET.rboxes[0]
    logits[0, _token(1, 1), 0] = 5.0
    assigner = TopKAssigner(HungarianMatcher(), k=1)
    ((tokens, targets),) = assigner(_dense(rboxes, logits), [TARGET])
    assert set(zip(tokens.tolist(), targets.tolist(), strict=True)) >= {(_token(1, 1), 0)}
    assert sorted(targets.tolist()) == [0, 1]
    # k = 3: three of the four tokens whose centres lie inside each 16 x 16 px box (radius 1 stride = 8 px).
    tokens, targets = TopKAssigner(HungarianMatcher(), k=3)(_dense(rboxes, logits), [TARGET])[0]
    first = {_token(x, y) for x in (1, 2) for y in (1, 2)}
    second = {_token(x, y) for x in (11, 12) for y in (3, 4)}
    assert len(tokens) == 6 and len(set(tokens.tolist())) == 6
    assert {t for t, g in zip(tokens.tolist(), targets.tolist(), strict=True) if g == 0} <= first
    assert {t for t, g in zip(tokens.tolist(), targets.tolist(), strict=True) if g == 1} <= second
    # k larger than the prior: every token inside it, no more.
    tokens, targets = TopKAssigner(HungarianMatcher(), k=10)(_dense(rboxes, logits), [TARGET])[0]
    assert set(tokens.tolist()) == first | second


def test_a_token_claimed_twice_keeps_the_cheaper_target():
    # Two identical-looking targets 8 px apart share tokens; the token predicting target 1 exactly goes to it.
    target = Target(
        labels=torch.tensor([0, 0]),
        rboxes=torch.tensor([[60, 32, 24, 24, 0.0], [68, 32, 24, 24, 0.0]]) / torch.tensor([128, 64, 128, 64, 1.0]),
        image_size=SIZE,
    )
    rboxes, logits = _predictions()
    shared = _token(8, 3)  # centre (68, 28): inside both
    rboxes[0, shared] = target.rboxes[1]
    tokens, targets = TopKAssigner(HungarianMatcher(), k=4)(_dense(rboxes, logits), [target])[0]
    assert len(set(tokens.tolist())) == len(tokens)
    assert targets[tokens.tolist().index(shared)] == 1


def test_padding_tokens_are_never_positive_and_empty_targets():
    rboxes, logits = _predictions()
    padding = torch.zeros(1, 128, dtype=torch.bool)
    padding[0, _token(1, 1)] = padding[0, _token(2, 1)] = True
    tokens, _ = TopKAssigner(HungarianMatcher(), k=10)(_dense(rboxes, logits, padding), [TARGET])[0]
    assert _token(1, 1) not in tokens.tolist() and _token(2, 1) not in tokens.tolist()
    empty = Target(labels=torch.zeros(0, dtype=torch.int64), rboxes=torch.zeros(0, 5), image_size=SIZE)
    tokens, targets = TopKAssigner(HungarianMatcher(), k=4)(_dense(rboxes, logits), [empty])[0]
    assert len(tokens) == 0 and len(targets) == 0


def _outputs(dense):
    q = torch.zeros(1, 1, 4, 2)
    boxes = torch.tensor([0.5, 0.5, 0.1, 0.1, 0.0]).repeat(1, 1, 4, 1)
    return DetectorOutput(q, boxes, q[0], boxes[0], torch.tensor([SIZE]), dense)


def test_dense_losses_replace_the_top_k_loss():
    # Every token predicts the box of the target whose prior holds it (others: far off), with its class confident.
    rboxes, logits = _predictions()
    logits.fill_(-20.0)
    allowed = centre_prior(_dense(rboxes, logits).points[0] * torch.tensor([128.0, 64.0]), torch.full((128,), 8.0),
                           TARGET.rboxes * torch.tensor([128.0, 64.0, 128.0, 64.0, 1.0]), 1.0)  # fmt: skip
    for g in range(2):
        rboxes[0, allowed[:, g]] = TARGET.rboxes[g]
        logits[0, allowed[:, g], TARGET.labels[g]] = 20.0
    matcher = HungarianMatcher()
    criterion = SetCriterion(matcher, num_classes=2, assigner=TopKAssigner(matcher, k=4))
    losses = criterion(_outputs(_dense(rboxes, logits)), [TARGET])
    for name in ("class", "l1", "kld"):
        assert float(losses[f"loss_{name}_enc"]) < 1e-6
    # Without the assigner the encoder loss is the one-to-one loss of the 4 top-k proposals, which are far off.
    losses = SetCriterion(matcher, num_classes=2)(_outputs(_dense(rboxes, logits)), [TARGET])
    assert float(losses["loss_l1_enc"]) > 0.1
    # Empty targets: every loss finite, the class loss pushes all tokens down.
    empty = Target(labels=torch.zeros(0, dtype=torch.int64), rboxes=torch.zeros(0, 5), image_size=SIZE)
    losses = criterion(_outputs(_dense(rboxes, logits)), [empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_class_enc"]) > 1.0
