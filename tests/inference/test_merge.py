"""Merging tiles: tile -> scene coordinates by hand, grouped NMS equal to one global batched_nms_rotated, inner-edge
flags, the preference for uncut views, the cap."""

import math

import pytest
import torch

from rotated_ddetr.inference import Detections, Tile, merge_detections, tile_to_scene, touches_inner_edge
from rotated_ddetr.inference.merge import grouped_nms, overlap_pairs
from rotated_ddetr.ops import batched_nms_rotated, box_iou_rotated


def _dets(rboxes, scores, labels):
    return Detections(torch.tensor(rboxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels))


def test_tile_to_scene_by_hand():
    tile = Tile(0.5, 100, 40, 512, 512, (True, True, True, True))
    dets = _dets([[10.0, 20.0, 30.0, 8.0, 0.25]], [0.9], [3])
    (scene,) = [tile_to_scene(dets, tile)]
    # Centre (10 + 100, 20 + 40) / 0.5 = (220, 120); sides doubled; angle unchanged.
    torch.testing.assert_close(scene.rboxes, torch.tensor([[220.0, 120.0, 60.0, 16.0, 0.25]]), atol=1e-5, rtol=0)
    assert scene.labels.tolist() == [3] and scene.scores.tolist() == pytest.approx([0.9])


def test_touches_inner_edge_only_on_inner_edges():
    boxes = torch.tensor([[10.0, 50, 16, 8, 0], [50, 50, 10, 10, 0], [95, 50, 12, 6, 0], [50, 98, 30, 6, math.pi / 4]])
    inner = Tile(1.0, 100, 0, 100, 100, (True, False, True, True))
    border = Tile(1.0, 0, 0, 100, 100, (False, False, False, False))
    # Box 0 reaches x = 2 <= 4 (left edge), box 2 reaches x = 101 (right), box 3 (rotated) reaches y > 96 (bottom).
    assert touches_inner_edge(boxes, inner).tolist() == [True, False, True, True]
    assert touches_inner_edge(boxes, border).tolist() == [False] * 4  # the scene border cuts nothing
    assert touches_inner_edge(boxes, inner, margin=1.0).tolist() == [False, False, True, True]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_nms_equals_global_batched_nms(seed):
    g = torch.Generator().manual_seed(seed)
    n = 4000
    centres = torch.rand(n, 2, generator=g) * 3000
    centres[:1500] = torch.rand(1500, 2, generator=g) * 300  # a dense cluster: large components
    sides = torch.rand(n, 2, generator=g) * 80 + 1
    sides[:5] *= 40  # a few huge boxes spanning many grid cells
    angles = (torch.rand(n, 1, generator=g) - 0.5) * 4
    rboxes = torch.cat((centres, sides, angles), dim=1)
    scores = torch.rand(n, generator=g).round(decimals=2)  # many equal scores: ties broken by index
    labels = torch.randint(0, 4, (n,), generator=g)
    for iou in (0.0, 0.1, 0.5):
        assert torch.equal(grouped_nms(rboxes, scores, labels, iou), batched_nms_rotated(rboxes, scores, labels, iou))


def test_overlap_pairs_finds_every_overlapping_pair():
    g = torch.Generator().manual_seed(3)
    rboxes = torch.cat((torch.rand(600, 2, generator=g) * 500, torch.rand(600, 2, generator=g) * 60 + 1,
                        torch.rand(600, 1, generator=g) * 3), dim=1)  # fmt: skip
    labels = torch.randint(0, 2, (600,), generator=g)
    i, j = overlap_pairs(rboxes, labels)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    iou = box_iou_rotated(rboxes.double(), rboxes.double()) * (labels[:, None] == labels[None])
    truth = {(a, b) for a, b in torch.nonzero(torch.triu(iou, diagonal=1) > 0).tolist()}
    assert truth <= found  # a superset of the truly overlapping pairs (extents meet), each once, i < j
    assert all(a < b for a, b in found) and len(found) == len(i)


def test_prefer_whole_drops_cut_views_whatever_their_score():
    whole = _dets([[500.0, 300.0, 80.0, 30.0, 0.1]], [0.6], [1])
    # The same object seen cut by tile A's right edge (high score), a sliver of it (IoU < 0.1 with the whole box),
    # and an unrelated cut object elsewhere that no tile sees whole.
    cut = _dets([[480.0, 298.0, 40.0, 30.0, 0.1], [535.0, 303.5, 6.0, 28.0, 0.1], [900.0, 300.0, 50.0, 20.0, 0.0]],
                [0.95, 0.9, 0.5], [1, 1, 1])  # fmt: skip
    assert box_iou_rotated(cut.rboxes[1:2], whole.rboxes)[0, 0] < 0.1
    flags = [torch.tensor([False]), torch.tensor([True, True, True])]
    merged = merge_detections([whole, cut], flags, iou_threshold=0.1)
    torch.testing.assert_close(merged.rboxes, torch.cat((whole.rboxes, cut.rboxes[2:])))
    assert merged.scores.tolist() == pytest.approx([0.6, 0.5])
    plain = merge_detections([whole, cut], flags, iou_threshold=0.1, prefer_whole=False)
    assert plain.scores.tolist() == pytest.approx([0.95, 0.9, 0.5])  # plain NMS keeps the cut views instead


def test_merge_sorts_caps_and_keeps_classes_apart():
    a = _dets([[100.0, 100, 40, 20, 0], [300, 100, 40, 20, 0]], [0.3, 0.8], [0, 0])
    b = _dets([[101.0, 100, 40, 20, 0], [100, 100, 40, 20, 0]], [0.5, 0.4], [0, 2])
    merged = merge_detections([a, b], iou_threshold=0.1)
    assert merged.scores.tolist() == pytest.approx([0.8, 0.5, 0.4])  # 0.3 suppressed by its class-0 twin
    assert merged.labels.tolist() == [0, 0, 2]
    capped = merge_detections([a, b], max_detections=2)
    assert capped.scores.tolist() == pytest.approx([0.8, 0.5]) and capped.labels.tolist() == [0, 0]  # the 2 best
    empty = merge_detections([])
    assert empty.rboxes.shape == (0, 5) and empty.labels.dtype == torch.int64


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_detections": -1}, "max_detections must be >= 1, got -1"),  # was: silently one detection less
        ({"max_detections": 0}, "max_detections must be >= 1, got 0"),
        ({"iou_threshold": -0.1}, r"iou_threshold must be in \[0, 1\], got -0.1"),
        ({"iou_threshold": math.nan}, r"iou_threshold must be in \[0, 1\], got nan"),
    ],
)
def test_merge_refuses_bad_options_even_without_detections(options, message):
    dets = _dets([[100.0, 100, 40, 20, 0], [300, 100, 40, 20, 0]], [0.3, 0.8], [0, 0])
    for detections in ([dets], []):
        with pytest.raises(ValueError, match=f"^{message}$"):
            merge_detections(detections, **options)
    bounds = merge_detections([dets], iou_threshold=0.0, max_detections=1), merge_detections([dets], iou_threshold=1.0)
    assert [d.scores.tolist() for d in bounds] == [pytest.approx([0.8]), pytest.approx([0.8, 0.3])]
