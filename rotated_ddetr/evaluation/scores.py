"""Scores from `Matches`: per-detection outcomes (TP / FP / ignored), AP with the devkit's arithmetic, per threshold,
per object size (COCO's ranges) and averaged over thresholds. Used by `dota_map.eval_dota` and `plots`.

Object size semantics (COCO's `evaluate` with `areaRng`, on top of the devkit's matching, which does not change):
an object's or detection's size is the |shoelace area| of its polygon, compared with the range's bounds squared
(small: area <= 32^2, medium: 32^2 <= area <= 96^2, large: area >= 96^2, bounds inclusive as in pycocotools, so an
object of exactly 32^2 px^2 counts in both small and medium). Within a range, objects outside it are ignored like
difficult ones (not counted; a detection taking one is neither TP nor FP), and a detection that is no true positive
(IoU not above the threshold, or its object already taken) is ignored when its own size is outside the range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rotated_ddetr.evaluation.matching import Matches

SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 32.0), "medium": (32.0, 96.0), "large": (96.0, math.inf)}


def iou_key(threshold: float) -> str:
    """The name of a threshold in results: "0.50", "0.55", ...; more digits only where two would change it."""
    text = f"{threshold:.2f}"
    return text if float(text) == threshold else repr(float(threshold))


def precision_recall(tp: np.ndarray, fp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) recall and precision after each detection in score order, with the devkit's arithmetic (`voc_eval`).

    Args:
        tp: (D,) float64, 1.0 for a true positive. fp: (D,) float64, 1.0 for a false positive (both 0: ignored).
        npos: number of counted ground-truth objects (> 0).
    """
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec


def average_precision(tp: np.ndarray, fp: np.ndarray, npos: int, metric: str = "voc07") -> tuple[float, float, float]:
    """AP from per-detection outcomes in score order, with the devkit's exact arithmetic (`voc_ap`).

    Args:
        tp: (D,) float64, 1.0 for a true positive. fp: (D,) float64, 1.0 for a false positive (both 0: ignored).
        npos: number of non-difficult ground-truth objects (> 0).
        metric: "voc07" (11-point interpolation) or "area" (area under the interpolated precision/recall curve).

    Returns:
        (AP, final recall, final precision).
    """
    rec, prec = precision_recall(tp, fp, npos)
    if metric == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return float(ap), float(rec[-1]) if len(rec) else 0.0, float(prec[-1]) if len(prec) else 0.0


def _ignored(m: Matches, size: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(G,) objects not counted (difficult, or outside the size range) and (D,) detections outside it (None: all in)."""
    if size is None:
        return m.gt["difficult"], None
    lo, hi = size[0] ** 2, size[1] ** 2

    def outside(area: np.ndarray) -> np.ndarray:
        return (area < lo) | (area > hi)

    return m.gt["difficult"] | outside(m.gt_stats.area), outside(m.det_stats.area)


def class_outcomes(m: Matches, k: int, size: tuple[float, float] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tp, fp) of each class's detections in score order at threshold k: (D_c,) float64 each, both 0 = ignored.

    The first detection to take a counted object is its TP; later ones taking it are FPs (no fallback to another
    object); one taking an ignored object is neither; one taking nothing above the threshold is an FP.

    Args:
        m: the matches. k: index into `m.iou_thresholds`.
        size: (low, high) bounds of sqrt(area) in px for the object-size semantics of this module; None = all sizes.
    """
    gt_ignored, det_outside = _ignored(m, size)
    above, gt_id = m.above[k], m.gt_id[k]
    hit = above & ~gt_ignored[np.maximum(gt_id, 0)] if len(gt_ignored) else np.zeros_like(above)
    out = []
    for s in m.class_slices():
        h, a, ids = hit[s], above[s], gt_id[s]
        first = np.zeros(len(h), dtype=bool)
        hits = np.nonzero(h)[0]
        first[hits[np.unique(ids[hits], return_index=True)[1]]] = True
        fp = ~a | (h & ~first)
        if det_outside is not None:
            fp &= ~det_outside[s]
        out.append((first.astype(np.float64), fp.astype(np.float64)))
    return out


def counted_objects(m: Matches, size: tuple[float, float] | None = None) -> np.ndarray:
    """(C,) int64 number of counted (non-difficult, in size range) objects per class."""
    gt_ignored, _ = _ignored(m, size)
    return np.bincount(m.gt["cls"][~gt_ignored], minlength=len(m.classes))


def score(m: Matches, k: int, metric: str, sizes: bool = False) -> dict:
    """One threshold's result: per-class counts, AP, final recall and precision, their mean over classes with ground
    truth, and with `sizes` the same per object size ({"sizes": {name: {"range_px", "mAP", "AP", "num_gt"}}}).

    Raises:
        ValueError: no class has a non-difficult ground-truth object.
    """
    result = {"mAP": 0.0, "AP": {}, "recall": {}, "precision": {}, "num_gt": {}, "num_dets": {}}
    npos = counted_objects(m)
    for name, n, s, (tp, fp) in zip(m.classes, npos.tolist(), m.class_slices(), class_outcomes(m, k), strict=True):
        result["num_gt"][name], result["num_dets"][name] = n, s.stop - s.start
        if n:
            result["AP"][name], result["recall"][name], result["precision"][name] = average_precision(tp, fp, n, metric)
    if not result["AP"]:
        raise ValueError("nothing to evaluate: no class has a non-difficult ground-truth object")
    result["mAP"] = float(sum(result["AP"].values()) / len(result["AP"]))
    if sizes:
        result["sizes"] = {name: _score_size(m, k, metric, bounds) for name, bounds in SIZE_RANGES.items()}
    return result


def _score_size(m: Matches, k: int, metric: str, size: tuple[float, float]) -> dict:
    """AP per class and their mean (None without any counted object) in one object-size range."""
    npos = counted_objects(m, size).tolist()
    aps = {
        name: average_precision(tp, fp, n, metric)[0]
        for name, n, (tp, fp) in zip(m.classes, npos, class_outcomes(m, k, size), strict=True)
        if n
    }
    return {
        "range_px": [size[0], None if math.isinf(size[1]) else size[1]],  # None: no upper bound (JSON has no inf)
        "mAP": float(sum(aps.values()) / len(aps)) if aps else None,
        "AP": aps,
        "num_gt": dict(zip(m.classes, npos, strict=True)),
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def over_thresholds(results: Sequence[dict], iou_thresholds: Sequence[float], metric: str) -> dict:
    """Combines one `score` result per threshold: {"mAP": mean over thresholds, "mAP_by_iou": {"0.50": ...},
    "mAP50" / "mAP75" (when evaluated), "AP": {class: mean over thresholds}, "num_gt", "num_dets", with sizes
    "sizes": {name: {"range_px", "mAP", "mAP_by_iou", "AP", "num_gt"}} (means over thresholds), "by_iou": {"0.50": the
    threshold's own result, equal to a run at that threshold alone}, "metric", "iou_thr": [thresholds]}."""
    keys = [iou_key(t) for t in iou_thresholds]
    by_iou = dict(zip(keys, results, strict=True))
    maps = {key: r["mAP"] for key, r in by_iou.items()}
    out: dict = {"mAP": _mean(list(maps.values())), "mAP_by_iou": maps}
    for t, name in ((0.5, "mAP50"), (0.75, "mAP75")):
        if t in iou_thresholds:
            out[name] = maps[iou_key(t)]
    first = results[0]
    out["AP"] = {c: _mean([r["AP"][c] for r in results]) for c in first["AP"]}
    out["num_gt"], out["num_dets"] = first["num_gt"], first["num_dets"]
    if "sizes" in first:
        out["sizes"] = {}
        for name, size in first["sizes"].items():
            size_maps = {key: r["sizes"][name]["mAP"] for key, r in by_iou.items()}
            out["sizes"][name] = {
                "range_px": size["range_px"],
                "mAP": _mean(list(size_maps.values())) if size["mAP"] is not None else None,
                "mAP_by_iou": size_maps,
                "AP": {c: _mean([r["sizes"][name]["AP"][c] for r in results]) for c in size["AP"]},
                "num_gt": size["num_gt"],
            }
    out.update(by_iou=by_iou, metric=metric, iou_thr=[float(t) for t in iou_thresholds])
    return out


def pr_curves(m: Matches, k: int) -> dict[str, dict[str, np.ndarray]]:
    """Each class with counted objects: its detections' precision-recall curve at threshold k, in score order.

    Returns:
        {class: {"score", "tp", "fp", "recall", "precision"}}, (D_c,) float64 each: the arrays `average_precision`
        integrates (a detection taking a difficult object has tp = fp = 0 and repeats the previous point).
    """
    out = {}
    npos = counted_objects(m).tolist()
    for name, n, s, (tp, fp) in zip(m.classes, npos, m.class_slices(), class_outcomes(m, k), strict=True):
        if n:
            rec, prec = precision_recall(tp, fp, n)
            out[name] = {"score": m.dets["scores"][s], "tp": tp, "fp": fp, "recall": rec, "precision": prec}
    return out
