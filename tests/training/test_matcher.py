"""Hungarian matcher: uses the rotated-IoU op on pixel boxes, equals brute force, batched == per image, edge cases."""

import itertools

import torch

from rotated_ddetr.boxes import denormalize_rboxes
from rotated_ddetr.ops import box_iou_rotated
from rotated_ddetr.structures import Target
from rotated_ddetr.training import matcher as matcher_module
from rotated_ddetr.training.matcher import HungarianMatcher


def _random_case(q, counts, num_classes=3, seed=0, sizes=None):
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    sizes = sizes or [(64 + 16 * i, 96 - 8 * i) for i in range(b)]

    def rboxes(n):
        r = torch.rand(n, 5, generator=g)
        return torch.cat((r[:, :2] * 0.8 + 0.1, r[:, 2:4] * 0.4 + 0.05, (r[:, 4:] - 0.5) * 3.1), dim=-1)

    logits = torch.randn(b, q, num_classes, generator=g)
    preds = torch.stack([rboxes(q) for _ in range(b)])
    targets = [
        Target(labels=torch.randint(0, num_classes, (n,), generator=g), rboxes=rboxes(n), image_size=size)
        for n, size in zip(counts, sizes, strict=True)
    ]
    return logits, preds, targets


def _brute_force(cost):
    """Minimum total cost over all one-to-one assignments of min(Q, T) pairs, cost (Q, T)."""
    q, t = cost.shape
    if t <= q:
        return min(sum(float(cost[p, j]) for j, p in enumerate(perm)) for perm in itertools.permutations(range(q), t))
    return min(sum(float(cost[i, p]) for i, p in enumerate(perm)) for perm in itertools.permutations(range(t), q))


def test_uses_rotated_iou_on_pixel_boxes(monkeypatch):
    calls = []

    def recording(boxes1, boxes2, aligned=False):
        calls.append((boxes1.clone(), boxes2.clone()))
        return box_iou_rotated(boxes1, boxes2, aligned)

    monkeypatch.setattr(matcher_module, "box_iou_rotated", recording)
    logits, preds, targets = _random_case(4, [2, 3])
    HungarianMatcher()(logits, preds, targets)
    assert len(calls) == 1
    boxes1, boxes2 = calls[0]
    expected1 = torch.cat([denormalize_rboxes(p, t.image_size) for p, t in zip(preds, targets, strict=True)])
    expected2 = torch.cat([denormalize_rboxes(t.rboxes, t.image_size) for t in targets])
    torch.testing.assert_close(boxes1, expected1, atol=1e-5, rtol=0)
    torch.testing.assert_close(boxes2, expected2, atol=1e-5, rtol=0)


def test_equals_brute_force_including_more_targets_than_queries():
    matcher = HungarianMatcher(kld_weight=1.0)
    for seed, (q, n) in enumerate([(5, 3), (4, 4), (3, 5), (6, 2)]):
        logits, preds, targets = _random_case(q, [n], seed=seed)
        cost = matcher.cost_matrix(logits, preds, targets)[0]
        rows, cols = matcher(logits, preds, targets)[0]
        assert len(rows) == min(q, n) and len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert abs(float(cost[rows, cols].sum()) - _brute_force(cost)) < 1e-4


def test_batched_equals_per_image():
    matcher = HungarianMatcher()
    logits, preds, targets = _random_case(6, [2, 0, 5, 1], seed=3)
    batched = matcher(logits, preds, targets)
    cost = matcher.cost_matrix(logits, preds, targets)
    start = 0
    for i, target in enumerate(targets):
        alone = matcher(logits[i : i + 1], preds[i : i + 1], [target])[0]
        assert torch.equal(batched[i][0], alone[0]) and torch.equal(batched[i][1], alone[1])
        n = len(target.labels)
        single = matcher.cost_matrix(logits[i : i + 1], preds[i : i + 1], [target])[0]
        torch.testing.assert_close(cost[i, :, start : start + n], single, atol=1e-6, rtol=0)
        start += n


def test_zero_targets():
    logits, preds, targets = _random_case(4, [0, 0])
    for rows, cols in HungarianMatcher()(logits, preds, targets):
        assert rows.shape == (0,) and cols.shape == (0,) and rows.dtype == torch.int64
