"""Which ground truth each detection takes, as the DOTA devkit decides it: polygons grouped by (class, image) in,
per-threshold, per-detection (IoU > threshold, ground-truth index) out, gathered in `Matches`. Used by `dota_map`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rotated_ddetr.evaluation.polygon_iou import DEVKIT_ROUNDING, devkit_polygon_iou, polygon_iou_pairs, simple_quads


class PolygonStats(NamedTuple):
    """Per-polygon quantities the matching needs, each (N,) float64 (pixels) or bool."""

    xmin: np.ndarray
    ymin: np.ndarray
    xmax: np.ndarray
    ymax: np.ndarray
    area: np.ndarray  # |shoelace area|, px^2
    simple: np.ndarray  # not self-intersecting and not degenerate


@dataclass
class Matches:
    """Ground truth and detections of the evaluated images, and which object each detection takes at each threshold:
    what every score (`scores`), curve and plot (`plots`) is computed from, built by `dota_map.match_detections`.

    Attributes:
        classes: the C evaluated class names; class indices below refer to them.
        images: the evaluated image names; image indices below refer to them.
        gt: (G,) arrays in image-set then file order: "polygons" (G, 8) float64 px, "cls", "img" int64, "difficult"
            bool (difficult != 0).
        dets: (D,) arrays grouped by class in class order, each class by decreasing score as the devkit sorts it:
            "polygons" (D, 8) float64 px, "cls", "img" int64, "scores" float64.
        gt_stats, det_stats: their `polygon_stats` (extents, areas in px^2).
        iou_thresholds: the T thresholds a true positive must exceed.
        above: (T, D) bool, the detection's IoU with the object it takes > that threshold.
        gt_id: (T, D) int64, the object it takes (index into gt; meaningful where `above`).
    """

    classes: list[str]
    images: list[str]
    gt: dict[str, np.ndarray]
    dets: dict[str, np.ndarray]
    gt_stats: PolygonStats
    det_stats: PolygonStats
    iou_thresholds: tuple[float, ...]
    above: np.ndarray
    gt_id: np.ndarray

    def class_slices(self) -> list[slice]:
        """The rows of `dets` of each class (they are contiguous)."""
        bounds = np.searchsorted(self.dets["cls"], np.arange(len(self.classes) + 1)).tolist()
        return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def polygon_stats(polygons: np.ndarray) -> PolygonStats:
    """(N, 8) quadrilaterals -> their axis-aligned extents, areas and simplicity."""
    xs, ys = polygons[:, 0::2].T, polygons[:, 1::2].T  # (4, N)
    area, simple = simple_quads(polygons)
    return PolygonStats(
        np.minimum(np.minimum(xs[0], xs[1]), np.minimum(xs[2], xs[3])),
        np.minimum(np.minimum(ys[0], ys[1]), np.minimum(ys[2], ys[3])),
        np.maximum(np.maximum(xs[0], xs[1]), np.maximum(xs[2], xs[3])),
        np.maximum(np.maximum(ys[0], ys[1]), np.maximum(ys[2], ys[3])),
        area,
        simple,
    )


def _devkit_prefilter(g: PolygonStats, d: PolygonStats, gi: np.ndarray, di: np.ndarray) -> np.ndarray:
    """The devkit's test on the axis-aligned extents (+1 pixel convention), same operations in the same order."""
    gx0, gy0, gx1, gy1 = g.xmin[gi], g.ymin[gi], g.xmax[gi], g.ymax[gi]
    bx0, by0, bx1, by1 = d.xmin[di], d.ymin[di], d.xmax[di], d.ymax[di]
    iw = np.maximum(np.minimum(gx1, bx1) - np.maximum(gx0, bx0) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gy1, by1) - np.maximum(gy0, by0) + 1.0, 0.0)
    inters = iw * ih
    uni = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0) + (gx1 - gx0 + 1.0) * (gy1 - gy0 + 1.0) - inters
    with np.errstate(divide="ignore", invalid="ignore"):
        return inters / uni > 0


def candidate_pairs(
    g: PolygonStats, gt_group: np.ndarray, d: PolygonStats, det_group: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, ground truth) pairs of the same group that pass the devkit's extent prefilter.

    A sweep along x: ground truth sorted by (group, xmin) into one key line where groups lie `span` apart; each
    detection reads the key range that can reach it (its group's widest object bounds how far left), a coarse y
    test thins the range, then the devkit's exact test keeps the overlapping pairs.

    Args:
        g: stats of the (G,) ground truth; gt_group: (G,) int64 group ids (class * images + image).
        d: stats of the (D,) detections; det_group: (D,) int64 group ids.

    Returns:
        (P,) detection indices (ascending) and (P,) ground-truth indices (in no particular order per detection).
    """
    if len(g.xmin) == 0 or len(d.xmin) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    widths = g.xmax - g.xmin
    widest = np.zeros(int(max(gt_group.max(), det_group.max())) + 1)
    np.maximum.at(widest, gt_group, widths)
    x0 = min(g.xmin.min(), d.xmin.min())
    span = max(g.xmax.max(), d.xmax.max()) - x0 + widths.max() + 16.0  # no window reaches a neighbouring group
    order = np.argsort(gt_group * span + (g.xmin - x0))
    keys = gt_group[order] * span + (g.xmin[order] - x0)
    lo = det_group * span + (d.xmin - x0 - widest[det_group] - 4.0)
    hi = det_group * span + (d.xmax - x0 + 4.0)
    start, stop = np.searchsorted(keys, lo, "left"), np.searchsorted(keys, hi, "right")
    counts = np.maximum(stop - start, 0)
    di = np.repeat(np.arange(len(d.xmin)), counts)
    pos = np.arange(len(di)) + np.repeat(start - (np.cumsum(counts) - counts), counts)
    near = (g.ymin[order][pos] <= d.ymax[di] + 2.0) & (g.ymax[order][pos] >= d.ymin[di] - 2.0)
    near &= g.xmax[order][pos] >= d.xmin[di] - 2.0
    di, gi = di[near], order[pos[near]]
    keep = _devkit_prefilter(g, d, gi, di)
    return di[keep], gi[keep]


def _upper_bounds(g: PolygonStats, d: PolygonStats, di: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """(P,) bounds on the devkit's IoU of each pair (inf where the polygons are not simple quadrilaterals).

    inter <= min(area, area, extents' intersection), so IoU <= m / (area + area - m), plus the devkit's rounding.
    """
    gx0, gy0, gx1, gy1 = g.xmin[gi], g.ymin[gi], g.xmax[gi], g.ymax[gi]
    bx0, by0, bx1, by1 = d.xmin[di], d.ymin[di], d.xmax[di], d.ymax[di]
    box = np.maximum(np.minimum(gx1, bx1) - np.maximum(gx0, bx0), 0) * np.maximum(
        np.minimum(gy1, by1) - np.maximum(gy0, by0), 0
    )
    a, b = g.area[gi], d.area[di]
    m = np.minimum(np.minimum(a, b), box)
    reach = np.maximum(np.maximum(np.abs(gx0), np.abs(gx1)), np.maximum(np.abs(gy0), np.abs(gy1)))
    reach = np.maximum(reach, np.maximum(np.maximum(np.abs(bx0), np.abs(bx1)), np.maximum(np.abs(by0), np.abs(by1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        ub = m / (a + b - m) + 1e-9 + DEVKIT_ROUNDING * (reach + 1.0) ** 2 / np.maximum(a, b)
    ub[~(g.simple[gi] & d.simple[di]) | ~np.isfinite(ub)] = np.inf
    return ub


def _devkit_best(gt_polygons: np.ndarray, det_polygons: np.ndarray, d: int, gts: np.ndarray) -> tuple[float, int]:
    """The devkit's (ovmax, jmax) for detection d over its candidates `gts` (ascending): its arithmetic, its argmax."""
    overlaps = [devkit_polygon_iou(gt_polygons[g], det_polygons[d]) for g in gts]
    return float(np.max(overlaps)), int(gts[np.argmax(overlaps)])


def best_matches(
    gt_polygons: np.ndarray,
    det_polygons: np.ndarray,
    g: PolygonStats,
    d: PolygonStats,
    di: np.ndarray,
    gi: np.ndarray,
    iou_thresholds: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold and detection: does its best candidate exceed the threshold, and which ground truth is it.

    IoUs come vectorised from `polygon_iou_pairs`, once for all thresholds, for the pairs whose upper bound can pass
    the lowest one; where the devkit's own rounding could change an outcome at any threshold (an IoU within its
    error of a threshold, a near-tie for the best, degenerate polygons), the detection is redone with
    `devkit_polygon_iou`, which rounds as the devkit does. The chosen ground truth does not depend on the threshold,
    so each threshold's outcomes are those of the devkit run at that threshold alone.

    Args:
        gt_polygons: (G, 8). det_polygons: (D, 8). g, d: their `polygon_stats`.
        di, gi: (P,) candidate pairs from `candidate_pairs` (detection indices ascending).
        iou_thresholds: the T thresholds.

    Returns:
        (T, D) bool, IoU with the chosen ground truth > threshold; (T, D) int64, the chosen ground truth (-1: none;
        meaningful where the IoU passes).
    """
    t = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1, 1)  # (T, 1)
    n = len(det_polygons)
    above, gt_id = np.zeros((len(t), n), dtype=bool), np.full((len(t), n), -1, dtype=np.int64)
    if len(di) == 0:
        return above, gt_id
    sel = np.nonzero(_upper_bounds(g, d, di, gi) > t.min())[0]
    iou, err = polygon_iou_pairs(gt_polygons[gi[sel]], det_polygons[di[sel]])
    s_det, s_gt = di[sel], gi[sel]
    if len(s_det):
        starts = np.nonzero(np.diff(s_det, prepend=-1))[0]  # one segment per detection
        seg = np.repeat(np.arange(len(starts)), np.diff(starts, append=len(s_det)))
        best = np.maximum.reduceat(iou, starts)
        best_gt = np.minimum.reduceat(np.where(iou == best[seg], s_gt, len(gt_polygons)), starts)  # ties: lowest
        second = np.maximum.reduceat(np.where(s_gt == best_gt[seg], -np.inf, iou), starts)
        det_err = np.maximum.reduceat(err, starts)
        dets = s_det[starts]
        critical = (
            ~np.isfinite(det_err)
            | (np.abs(best - t) <= det_err)
            | ((best > t - det_err) & (second >= best - 2 * det_err))
        ).any(axis=0)  # (T, S) -> (S,)
        above[:, dets], gt_id[:, dets] = best > t, best_gt
        redo = dets[critical]
        bounds = np.searchsorted(di, np.stack((redo, redo + 1)))
        for d_idx, lo, hi in zip(redo.tolist(), *bounds.tolist(), strict=True):
            ovmax, gt_id[:, d_idx] = _devkit_best(gt_polygons, det_polygons, d_idx, np.sort(gi[lo:hi]))
            above[:, d_idx] = ovmax > t[:, 0]
    return above, gt_id
