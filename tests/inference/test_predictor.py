"""tiled_predict with an oracle detector over a mosaic of the real DOTA samples P0706 and P1888: merging gives the
ground truth back (each object exactly once, mAP 1.0) at rates 0.5, 1.0, 1.5 and all three together, also when
the oracle adds the cut views of objects straddling tile edges."""

import re

import cv2
import numpy as np
import pytest
import shapely
import torch

from rotated_ddetr.boxes import polygons_to_rboxes, rboxes_to_polygons
from rotated_ddetr.data.dota import DotaLabels, Task1Detections, read_dota_labels
from rotated_ddetr.evaluation import eval_dota
from rotated_ddetr.inference import Detections, plan_tiles, tiled_predict
from rotated_ddetr.inference.predictor import check_tiled_options
from rotated_ddetr.ops import box_iou_rotated


@pytest.fixture(scope="module")
def mosaic(dota_samples):
    """P0706 (1111 x 1182) and P1888 (712 x 557) side by side, RGB, with their labels (P1888's shifted by 1111)."""
    images = [cv2.imread(str(dota_samples / "images" / f"{n}.png"))[..., ::-1] for n in ("P0706", "P1888")]
    labels = [read_dota_labels(dota_samples / "labelTxt" / f"{n}.txt") for n in ("P0706", "P1888")]
    image = np.zeros((1182, 1111 + 712, 3), np.uint8)
    image[:1182, :1111], image[:557, 1111:] = images
    polygons = np.concatenate((labels[0].polygons, labels[1].polygons + np.tile([1111.0, 0.0], 4)))
    scene = DotaLabels(polygons, labels[0].classes + labels[1].classes, np.r_[labels[0].difficult, labels[1].difficult])
    return image, scene


class Oracle:
    """predict_tiles returning each tile's ground truth: the objects no inner tile edge cuts (shifted and scaled into
    the tile), plus, with `cut_views`, the visible part of each cut object as a higher-scoring box."""

    def __init__(self, image, labels, tiles, classes, cut_views=False):
        self.image, self.labels, self.tiles, self.classes = image, labels, list(tiles), classes
        self.rboxes = labels.rboxes()  # (N, 5) scene rboxes, moved into each tile (no per-tile min-area fits)
        self.cut_views, self.calls = cut_views, 0

    def __call__(self, pixels):
        results = []
        for tile_pixels in pixels:
            tile = self.tiles.pop(0)  # tiled_predict reads the planned tiles in order
            assert tile_pixels.shape == (tile.height, tile.width, 3)
            if tile.rate == 1:
                crop = self.image[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width]
                np.testing.assert_array_equal(tile_pixels, crop)
            results.append(self._truth(tile))
        self.calls += 1
        return results

    def _truth(self, tile):
        polygons = self.labels.polygons * tile.rate - np.tile([tile.left, tile.up], 4)
        xs, ys = polygons[:, 0::2], polygons[:, 1::2]
        left, top, right, bottom = tile.inner_edges
        whole = ~((left & (xs.min(1) < 0)) | (top & (ys.min(1) < 0)) | (right & (xs.max(1) > tile.width))
                  | (bottom & (ys.max(1) > tile.height)))  # fmt: skip
        inside = (xs.max(1) > 0) & (xs.min(1) < tile.width) & (ys.max(1) > 0) & (ys.min(1) < tile.height)
        ids = np.flatnonzero(whole & inside)
        rboxes = self.rboxes[ids] * [tile.rate, tile.rate, tile.rate, tile.rate, 1] - [tile.left, tile.up, 0, 0, 0]
        rboxes, scores, labels = [rboxes], [], []
        scores.append(0.5 + 0.4 * (1 - ids / len(polygons)))  # distinct scores, the same object's equal everywhere
        labels.append([self.classes.index(self.labels.classes[i]) for i in ids])
        if self.cut_views:
            window = shapely.box(0, 0, tile.width, tile.height)
            for i in np.flatnonzero(~whole & inside):
                part = shapely.Polygon(polygons[i].reshape(4, 2)).intersection(window)
                if part.area < 1:
                    continue
                corners = np.asarray(part.minimum_rotated_rectangle.exterior.coords)[:4].reshape(1, 8)
                rboxes.append(polygons_to_rboxes(corners))
                scores.append([0.95])  # cut views score higher than any whole one
                labels.append([self.classes.index(self.labels.classes[i])])
        return Detections(torch.from_numpy(np.concatenate(rboxes)).float(), torch.from_numpy(np.concatenate(scores)),
                          torch.tensor(np.concatenate(labels), dtype=torch.int64))  # fmt: skip


def _check_ground_truth_back(dets, labels, classes):
    """Each object exactly once (1:1 with IoU > 0.99 to its min-area rectangle) and eval_dota mAP == 1.0."""
    truth = torch.from_numpy(labels.rboxes())
    assert len(dets.rboxes) == len(truth)
    iou = box_iou_rotated(dets.rboxes.double(), truth)
    best = iou.argmax(dim=1)
    assert sorted(best.tolist()) == list(range(len(truth)))  # a permutation: every object once
    assert iou.max(dim=1).values.min() > 0.99
    assert [classes[i] for i in dets.labels.tolist()] == [labels.classes[i] for i in best.tolist()]
    polygons = rboxes_to_polygons(dets.rboxes.double().numpy())
    task1 = {c: Task1Detections(["mosaic"] * int((dets.labels == k).sum()), dets.scores[dets.labels == k].numpy(),
                                polygons[(dets.labels == k).numpy()]) for k, c in enumerate(classes)}  # fmt: skip
    result = eval_dota(task1, {"mosaic": labels})
    expected = {"harbor": 1.0, "large-vehicle": 1.0, "ship": 1.0, "small-vehicle": 1.0}
    assert result["AP"] == pytest.approx(expected, abs=1e-12)  # VOC07's 11-point sum rounds to 1 + 2e-16
    assert result["mAP"] == pytest.approx(1.0, abs=1e-12)


# Objects reach 438 px (harbours): every one lies whole in some window when the gap exceeds its size at that rate.
CASES = {"0.5": ((0.5,), 400, 240), "1.0": ((1.0,), 768, 450), "1.5": ((1.5,), 1024, 700),
         "all": ((0.5, 1.0, 1.5), 1024, 700)}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("cut_views", [False, True])
def test_oracle_gives_the_ground_truth_back(mosaic, case, cut_views):
    image, labels = mosaic
    rates, tile_size, gap = CASES[case]
    classes = sorted(set(labels.classes))
    tiles = plan_tiles(image.shape[:2], tile_size, gap, rates)
    assert len(tiles) >= 4 if case != "0.5" else len(tiles) >= 6
    oracle = Oracle(image, labels, tiles, classes, cut_views)
    dets = tiled_predict(image, oracle, tile_size=tile_size, gap=gap, rates=rates, batch_size=3)
    assert not oracle.tiles and oracle.calls == -(-len(tiles) // 3)  # every tile predicted once, in batches of 3
    _check_ground_truth_back(dets, labels, classes)
    if cut_views:  # without the preference for uncut views, the higher-scoring cut views survive next to them
        oracle = Oracle(image, labels, tiles, classes, cut_views)
        plain = tiled_predict(
            image, oracle, tile_size=tile_size, gap=gap, rates=rates, batch_size=3, prefer_whole=False
        )
        assert len(plain.rboxes) > len(labels)


def test_predict_tiles_must_answer_every_tile(mosaic):
    image, _ = mosaic
    with pytest.raises(ValueError, match="returned 0 results for 2 tiles"):
        tiled_predict(image, lambda tiles: [], tile_size=1024, gap=200, batch_size=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tile_size": 0}, "tile_size must be >= 1, got 0"),
        ({"gap": 1024}, r"gap must be in \[0, tile_size\), got 1024"),
        ({"rates": (0.5, float("nan"))}, "rates must be finite numbers > 0, got nan"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"nms_iou": 1.5}, r"nms_iou must be in \[0, 1\], got 1.5"),
        ({"score_threshold": 1.01}, r"score_threshold must be in \[0, 1\], got 1.01"),
        ({"max_detections": -1}, "max_detections must be >= 1, got -1"),
    ],
)
def test_tiled_predict_refuses_bad_options_before_opening_the_scene(tmp_path, options, message):
    with pytest.raises(ValueError, match=f"^{message}$"):  # a ValueError, not the SceneError of the missing file
        tiled_predict(tmp_path / "missing.png", lambda tiles: [], **options)
    defaults = dict(tile_size=1024, gap=200, rates=(1.0,), batch_size=8, nms_iou=0.1, score_threshold=0.0,
                    max_detections=10000)  # fmt: skip
    flags = {key: "--" + key.replace("_", "-") for key in defaults}  # every message names the option as asked
    flagged = re.sub(r"\b(" + "|".join(flags) + r")\b", lambda m: flags[m.group(1)], message)
    with pytest.raises(ValueError, match=f"^{flagged}$"):
        check_tiled_options(**{**defaults, **options}, names=flags)
    bounds = dict(tile_size=1, gap=0, rates=(0.1,), batch_size=1, nms_iou=1.0, score_threshold=1.0, max_detections=1)
    check_tiled_options(**bounds)
    check_tiled_options(**{**bounds, "nms_iou": 0.0, "score_threshold": 0.0, "max_detections": None})
