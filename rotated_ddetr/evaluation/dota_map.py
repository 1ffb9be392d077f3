"""DOTA Task1 rotated mAP, number for number the official devkit's `voc_eval` (DESIGN §5), vectorised.

Detections (Task1 folder or {class: Task1Detections}) and ground truth (labelTxt folder or {image: DotaLabels}) in,
{"mAP", "AP", per-class counts, recall, precision} out. The last stage of the pipeline, after merging tiles.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from itertools import repeat
from pathlib import Path

import numpy as np

from rotated_ddetr.data.dota import DOTA_V2_0_CLASSES, DotaLabels, Task1Detections, read_dota_labels, read_task1
from rotated_ddetr.evaluation.matching import best_matches, candidate_pairs, polygon_stats

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
    polys, cls, img, outside = [], [], [], []
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
    n_out = sum(len(d) for name, d in dets.items() if name in classes) - sum(len(p) for p in polys)
    if n_out:
        warnings.warn(
            f"ignored {n_out} detections of images outside the evaluated set (e.g. {outside[0]!r})", stacklevel=3
        )
    return {
        "polygons": np.concatenate(polys) if polys else np.zeros((0, 8)),
        "cls": np.concatenate(cls) if cls else np.zeros(0, dtype=np.int64),
        "img": np.concatenate(img) if img else np.zeros(0, dtype=np.int64),
    }


def average_precision(tp: np.ndarray, fp: np.ndarray, npos: int, metric: str = "voc07") -> tuple[float, float, float]:
    """AP from per-detection outcomes in score order, with the devkit's exact arithmetic (`voc_ap`).

    Args:
        tp: (D,) float64, 1.0 for a true positive. fp: (D,) float64, 1.0 for a false positive (both 0: ignored).
        npos: number of non-difficult ground-truth objects (> 0).
        metric: "voc07" (11-point interpolation) or "area" (area under the interpolated precision/recall curve).

    Returns:
        (AP, final recall, final precision).
    """
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
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


def _outcomes(det_cls: np.ndarray, hit: np.ndarray, above: np.ndarray, gt_id: np.ndarray, c: int) -> tuple:
    """(tp, fp) of class c's detections in score order: the first detection to claim a ground truth takes it."""
    sel = det_cls == c
    hit, above, gt_id = hit[sel], above[sel], gt_id[sel]
    first = np.zeros(len(hit), dtype=bool)
    hits = np.nonzero(hit)[0]
    first[hits[np.unique(gt_id[hits], return_index=True)[1]]] = True
    return first.astype(np.float64), (~above | (hit & ~first)).astype(np.float64)


def _score_classes(names: list[str], g: dict, d: dict, above: np.ndarray, gt_id: np.ndarray, metric: str) -> dict:
    """Per-class counts, AP, final recall and precision, and their mean over classes with ground truth."""
    hit = above & ~g["difficult"][np.maximum(gt_id, 0)] if len(g["difficult"]) else np.zeros_like(above)
    result = {"mAP": 0.0, "AP": {}, "recall": {}, "precision": {}, "num_gt": {}, "num_dets": {}}
    for c, name in enumerate(names):
        npos = int(np.sum((g["cls"] == c) & ~g["difficult"]))
        result["num_gt"][name], result["num_dets"][name] = npos, int(np.sum(d["cls"] == c))
        if npos:
            tp, fp = _outcomes(d["cls"], hit, above, gt_id, c)
            ap, rec, prec = average_precision(tp, fp, npos, metric)
            result["AP"][name], result["recall"][name], result["precision"][name] = ap, rec, prec
    if not result["AP"]:
        raise ValueError("nothing to evaluate: no class has a non-difficult ground-truth object")
    result["mAP"] = float(sum(result["AP"].values()) / len(result["AP"]))
    return result


def check_iou_threshold(iou_threshold: float, name: str = "iou_threshold") -> None:
    """Refuses an evaluation IoU threshold outside [0, 1) before any file is read: a true positive must exceed it, so
    at 1 none could; 0 counts any overlap. `name` is how the message names it (a tool passes its flag).

    Raises:
        ValueError: one line naming the threshold and its value.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {iou_threshold}")


def eval_dota(
    dets: str | os.PathLike | Mapping[str, Task1Detections],
    labels: str | os.PathLike | Mapping[str, DotaLabels],
    imageset: str | os.PathLike | Iterable[str] | None = None,
    metric: str = "voc07",
    iou_threshold: float = 0.5,
    classes: Iterable[str] | None = None,
    *,
    iou_thr: float | None = None,
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
        iou_threshold: the IoU a true positive must exceed (strictly).
        classes: the classes to evaluate; None = every class in the ground truth or the detections.
        iou_thr: DESIGN.md §3's name of `iou_threshold`, a keyword alias; when given, it is the threshold used.

    Returns:
        {"mAP": mean AP over the classes with at least one non-difficult object, "AP": {class: AP} for those classes,
        "recall" / "precision": {class: value after the last detection} for those classes, "num_gt": {class:
        non-difficult objects}, "num_dets": {class: detections of evaluated images}, "metric", "iou_thr" (the
        threshold used)}.

    Raises:
        ValueError: unknown metric, threshold outside [0, 1), or no class with a non-difficult object.
        FileNotFoundError, DotaFormatError: unreadable inputs (message names the file and line).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    iou_threshold = iou_threshold if iou_thr is None else iou_thr
    check_iou_threshold(iou_threshold)
    gt = load_ground_truth(labels, imageset)
    det_sets = read_task1(dets) if not isinstance(dets, Mapping) else dict(dets)
    if not det_sets:
        warnings.warn(f"no detections at all in {'the mapping' if isinstance(dets, Mapping) else dets}", stacklevel=2)
    names = list(classes) if classes is not None else _class_order(gt, det_sets)
    g = _gt_table(gt, {name: c for c, name in enumerate(names)})
    d = _det_table(det_sets, names, {name: i for i, name in enumerate(gt)})
    n_img = max(len(gt), 1)
    g_stats, d_stats = polygon_stats(g["polygons"]), polygon_stats(d["polygons"])
    di, gi = candidate_pairs(g_stats, g["cls"] * n_img + g["img"], d_stats, d["cls"] * n_img + d["img"])
    above, gt_id = best_matches(g["polygons"], d["polygons"], g_stats, d_stats, di, gi, iou_threshold)
    result = _score_classes(names, g, d, above, gt_id, metric)
    # The result key stays "iou_thr": metrics.json files written before the rename use it, and readers rely on it.
    result.update(metric=metric, iou_thr=float(iou_threshold))
    return result
