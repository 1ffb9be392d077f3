"""DOTA Task1 rotated mAP, number for number the official devkit's `voc_eval` (DESIGN §5), vectorised, at one IoU
threshold or several (0.5:0.95), optionally per object size.

Detections (Task1 folder or {class: Task1Detections}) and ground truth (labelTxt folder or {image: DotaLabels}) in,
{"mAP", "AP", per-class counts, recall, precision} out. The last stage of the pipeline, after merging tiles.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from itertools import repeat
from pathlib import Path

import numpy as np

from rotated_ddetr.data.dota import DOTA_V2_0_CLASSES, DotaLabels, Task1Detections, read_dota_labels, read_task1
from rotated_ddetr.evaluation.matching import Matches, best_matches, candidate_pairs, polygon_stats
from rotated_ddetr.evaluation.scores import average_precision, over_thresholds, score  # noqa: F401 (importable here as before)

METRICS = ("voc07", "area")


def _image_names(imageset: str | os.PathLike | Iterable[str] | None, labels: Path | Mapping) -> list[str]:
    """The evaluated images: the image-set file's lines (or names), else every label file / key."""
    if imageset is None:
        return sorted(p.stem for p in labels.glob("*.txt")) if isinstance(labels, Path) else list(labels)
    if isinstance(imageset, str | os.PathLike):
        with open(imageset, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f]
    else:
        names = [str(name).strip() for name in imageset]
    return list(dict.fromkeys(name for name in names if name))


def load_ground_truth(
    labels: str | os.PathLike | Mapping[str, DotaLabels], imageset: str | os.PathLike | Iterable[str] | None = None
) -> dict[str, DotaLabels]:
    """The labels of every evaluated image, in image-set order.

    Args:
        labels: a `labelTxt` folder (or a dataset root holding one), or {image name: DotaLabels}.
        imageset: a file with one image name per line, or the names; None = every image of `labels`.

    Raises:
        FileNotFoundError: the folder or an image's label file is missing.
        ValueError: an image of the set has no entry in the `labels` mapping.
    """
    if not isinstance(labels, Mapping):
        folder = Path(labels)
        if (folder / "labelTxt").is_dir():
            folder = folder / "labelTxt"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such label folder")
        names = _image_names(imageset, folder)
        missing = [name for name in names if not (folder / f"{name}.txt").is_file()]
        if missing:
            raise FileNotFoundError(f"{folder / (missing[0] + '.txt')}: no label file ({len(missing)} missing)")
        return {name: read_dota_labels(folder / f"{name}.txt") for name in names}
    names = _image_names(imageset, labels)
    missing = [name for name in names if name not in labels]
    if missing:
        raise ValueError(f"no labels for image {missing[0]!r} ({len(missing)} images of the set have none)")
    return {name: labels[name] for name in names}


def _class_order(gt: Mapping[str, DotaLabels], dets: Mapping[str, Task1Detections]) -> list[str]:
    """Every class seen in ground truth or detections: DOTA's official order first, then unknown names sorted."""
    seen = {c for labels in gt.values() for c in labels.classes} | set(dets)
    return [c for c in DOTA_V2_0_CLASSES if c in seen] + sorted(seen - set(DOTA_V2_0_CLASSES))


def _gt_table(gt: Mapping[str, DotaLabels], class_index: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Concatenated ground truth of the evaluated classes in image-set then file order (the devkit's order)."""
    polys, cls, img, difficult = [], [], [], []
    for i, labels in enumerate(gt.values()):
        c = np.fromiter(map(class_index.get, labels.classes, repeat(-1)), dtype=np.int64, count=len(labels))
        keep = c >= 0
        polys.append(labels.polygons[keep])
        cls.append(c[keep])
        img.append(np.full(keep.sum(), i, dtype=np.int64))
        difficult.append(labels.difficult[keep] != 0)
    return {
        "polygons": np.concatenate(polys) if polys else np.zeros((0, 8)),
        "cls": np.concatenate(cls) if cls else np.zeros(0, dtype=np.int64),
        "img": np.concatenate(img) if img else np.zeros(0, dtype=np.int64),
        "difficult": np.concatenate(difficult) if difficult else np.zeros(0, dtype=bool),
    }


def _det_table(
    dets: Mapping[str, Task1Detections], classes: list[str], image_index: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Detections of the evaluated images, class by class, each class sorted as the devkit sorts it.

    Detections naming an image outside the evaluated set are dropped with one warning.
    """
    polys, cls, img, scores, outside = [], [], [], [], []
    for c, name in enumerate(classes):
        if name not in dets:
            continue
        d = dets[name]
        idx = np.fromiter(map(image_index.get, d.image_names, repeat(-1)), dtype=np.int64, count=len(d))
        keep = np.nonzero(idx >= 0)[0]
        outside.extend(d.image_names[i] for i in np.nonzero(idx < 0)[0][:1])
        order = keep[np.argsort(-d.scores[keep])]  # the devkit's own call: same (quicksort) order among ties
        polys.append(d.polygons[order])
        cls.append(np.full(len(order), c, dtype=np.int64))
        img.append(idx[order])
        scores.append(d.scores[order])
    n_out = sum(len(d) for name, d in dets.items() if name in classes) - sum(len(p) for p in polys)
    if n_out:
        warnings.warn(
            f"ignored {n_out} detections of images outside the evaluated set (e.g. {outside[0]!r})", stacklevel=4
        )
    return {
        "polygons": np.concatenate(polys) if polys else np.zeros((0, 8)),
        "cls": np.concatenate(cls) if cls else np.zeros(0, dtype=np.int64),
        "img": np.concatenate(img) if img else np.zeros(0, dtype=np.int64),
        "scores": np.concatenate(scores) if scores else np.zeros(0),
    }


def check_iou_threshold(iou_threshold: float, name: str = "iou_threshold") -> None:
    """Refuses an evaluation IoU threshold outside [0, 1) before any file is read: a true positive must exceed it, so
    at 1 none could; 0 counts any overlap. `name` is how the message names it (a tool passes its flag).

    Raises:
        ValueError: one line naming the threshold and its value.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {iou_threshold}")


def parse_iou_thresholds(text: str) -> float | tuple[float, ...]:
    """Command-line thresholds: "0.5" -> 0.5; "0.5:0.95:0.05" (start:stop:step, stop included) or "0.5,0.75" -> a
    tuple. Range values are computed in decimal, so "0.55" of a range is float("0.55"), the value a run at 0.55 alone
    uses. Ranges are not checked against [0, 1) here (`check_iou_threshold` does that).

    Raises:
        ValueError: not a number, a list or a range with a positive step and stop >= start.
    """
    if ":" not in text and "," not in text:
        return float(text)
    expected = f"expected a number, a list like 0.5,0.75 or a range start:stop:step like 0.5:0.95:0.05, got {text!r}"
    try:
        parts = [Decimal(part.strip()) for part in text.split(":" if ":" in text else ",")]
    except InvalidOperation:
        raise ValueError(expected) from None
    if not all(part.is_finite() for part in parts) or (":" in text and len(parts) != 3):
        raise ValueError(expected)
    if "," in text:
        return tuple(float(part) for part in parts)
    start, stop, step = parts
    if step <= 0 or stop < start or (stop - start) / step > 1000:
        raise ValueError(f"{expected} (the step must be > 0, stop >= start, at most 1000 steps)")
    return tuple(float(start + k * step) for k in range(int((stop - start) / step) + 1))


def match_detections(
    dets: str | os.PathLike | Mapping[str, Task1Detections],
    labels: str | os.PathLike | Mapping[str, DotaLabels],
    imageset: str | os.PathLike | Iterable[str] | None = None,
    iou_thresholds: Sequence[float] = (0.5,),
    classes: Iterable[str] | None = None,
) -> Matches:
    """Reads ground truth and detections once, computes their polygon IoUs once, and matches them at every threshold
    as the devkit does (DESIGN §5); `evaluate_matches`, `scores` and `plots` compute everything else from the result.

    Args: as `eval_dota`; iou_thresholds: the thresholds (duplicates dropped, order kept).

    Raises:
        ValueError: no threshold, or one outside [0, 1).
        FileNotFoundError, DotaFormatError: unreadable inputs (message names the file and line).
    """
    thresholds = tuple(dict.fromkeys(float(t) for t in iou_thresholds))
    if not thresholds:
        raise ValueError("no IoU threshold to evaluate at")
    for t in thresholds:
        check_iou_threshold(t)
    gt = load_ground_truth(labels, imageset)
    det_sets = read_task1(dets) if not isinstance(dets, Mapping) else dict(dets)
    if not det_sets:
        warnings.warn(f"no detections at all in {'the mapping' if isinstance(dets, Mapping) else dets}", stacklevel=3)
    names = list(classes) if classes is not None else _class_order(gt, det_sets)
    g = _gt_table(gt, {name: c for c, name in enumerate(names)})
    d = _det_table(det_sets, names, {name: i for i, name in enumerate(gt)})
    n_img = max(len(gt), 1)
    g_stats, d_stats = polygon_stats(g["polygons"]), polygon_stats(d["polygons"])
    di, gi = candidate_pairs(g_stats, g["cls"] * n_img + g["img"], d_stats, d["cls"] * n_img + d["img"])
    above, gt_id = best_matches(g["polygons"], d["polygons"], g_stats, d_stats, di, gi, thresholds)
    return Matches(names, list(gt), g, d, g_stats, d_stats, thresholds, above, gt_id)


def evaluate_matches(m: Matches, metric: str = "voc07", sizes: bool = False, single: bool = False) -> dict:
    """`eval_dota`'s result from matches: one threshold's dict when `single` (m has one threshold), else the
    combination over thresholds (`scores.over_thresholds`), whose "by_iou" holds each threshold's own dict."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    results = [score(m, k, metric, sizes) for k in range(len(m.iou_thresholds))]
    for result, t in zip(results, m.iou_thresholds, strict=True):
        # The result key stays "iou_thr": metrics.json files written before the rename use it, and readers rely on it.
        result.update(metric=metric, iou_thr=t)
    if single:
        if len(results) != 1:
            raise ValueError(f"single=True needs one threshold, got {len(results)}")
        return results[0]
    return over_thresholds(results, m.iou_thresholds, metric)


def eval_dota(
    dets: str | os.PathLike | Mapping[str, Task1Detections],
    labels: str | os.PathLike | Mapping[str, DotaLabels],
    imageset: str | os.PathLike | Iterable[str] | None = None,
    metric: str = "voc07",
    iou_threshold: float | Sequence[float] = 0.5,
    classes: Iterable[str] | None = None,
    *,
    iou_thr: float | Sequence[float] | None = None,
    sizes: bool = False,
) -> dict:
    """DOTA Task1 mAP with the official devkit's semantics (DESIGN §5), equal to its `voc_eval` class by class.

    Per class, detections sorted by decreasing score (the devkit's `np.argsort(-score)`, ties included) each take
    the ground truth of their image with the highest polygon IoU among those whose extents overlap (+1 pixel
    convention); a true positive if that IoU > iou_threshold and the object is free, a false positive otherwise; objects
    with difficult != 0 are not counted and detections taking them are neither.

    Args:
        dets: a folder of `Task1_{class}.txt` files, or {class: Task1Detections}; missing classes have none.
        labels: a `labelTxt` folder (or a dataset root holding one), or {image name: DotaLabels}.
        imageset: a file with one image name per line, or the names; None = every image of `labels`.
        metric: "voc07" (11-point, the official server's) or "area" (area under the interpolated curve).
        iou_threshold: the IoU a true positive must exceed (strictly); a sequence (e.g. 0.5, 0.55, ..., 0.95)
            evaluates at each, reading the files and computing the IoUs once.
        classes: the classes to evaluate; None = every class in the ground truth or the detections.
        iou_thr: DESIGN.md §3's name of `iou_threshold`, a keyword alias; when given, it is the threshold used.
        sizes: also AP per object size (COCO's small / medium / large; `scores` documents the semantics).

    Returns:
        For one threshold: {"mAP": mean AP over the classes with at least one non-difficult object, "AP": {class: AP}
        for those classes, "recall" / "precision": {class: value after the last detection} for those classes,
        "num_gt": {class: non-difficult objects}, "num_dets": {class: detections of evaluated images}, ["sizes"],
        "metric", "iou_thr" (the threshold used)}. For a sequence: `scores.over_thresholds`' dict ("mAP" is the
        mean over thresholds, "mAP_by_iou", "mAP50", "mAP75", "by_iou": each threshold's dict as above).

    Raises:
        ValueError: unknown metric, threshold outside [0, 1), or no class with a non-difficult object.
        FileNotFoundError, DotaFormatError: unreadable inputs (message names the file and line).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    iou_threshold = iou_threshold if iou_thr is None else iou_thr
    single = np.ndim(iou_threshold) == 0
    thresholds = (iou_threshold,) if single else tuple(iou_threshold)
    return evaluate_matches(match_detections(dets, labels, imageset, thresholds, classes), metric, sizes, single)
