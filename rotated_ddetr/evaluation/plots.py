"""Evaluation plots: `Matches` in, files out: per-class precision-recall curves (`pr_{class}.csv` / `.png`, one curve
per IoU threshold) and the confusion matrix (`confusion_matrix.csv` / `.png`, defined in `confusion`).

Drawn with OpenCV, a dependency already (DESIGN §6: image I/O and drawing), so plots need no extra package.
Every file is written atomically (`rotated_ddetr.fileio`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from rotated_ddetr.evaluation.confusion import confusion_matrix
from rotated_ddetr.evaluation.matching import Matches
from rotated_ddetr.evaluation.scores import average_precision, counted_objects, iou_key, pr_curves
from rotated_ddetr.fileio import atomic_write_bytes, atomic_write_text, check_writable_folder

PR_COLUMNS = ("iou_thr", "rank", "score", "tp", "fp", "recall", "precision")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _GREY = (0, 0, 0), (215, 215, 215)


def _safe(name: str) -> str:
    """A class name as a file-name part (anything but letters, digits, '.', '_', '-' becomes '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _text(img: np.ndarray, text: str, x: float, y: float, scale: float = 0.45, align: str = "left", color=_BLACK):
    """Writes `text` with its baseline at y, starting at x ("left"), centred on it or ending at it ("right")."""
    width = cv2.getTextSize(text, _FONT, scale, 1)[0][0]
    x = x - {"left": 0, "center": width / 2, "right": width}[align]
    cv2.putText(img, text, (int(round(x)), int(round(y))), _FONT, scale, color, 1, cv2.LINE_AA)


def _vertical_text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    """Writes `text` reading bottom to top, its left edge at column x and its end at row y (black, on anything)."""
    (width, height), base = cv2.getTextSize(text, _FONT, scale, 1)
    patch = np.full((height + base + 2, width + 2, 3), 255, dtype=np.uint8)
    cv2.putText(patch, text, (1, height + 1), _FONT, scale, _BLACK, 1, cv2.LINE_AA)
    patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)  # (width + 2, height + base + 2, 3)
    top = max(y - patch.shape[0], 0)
    region = img[top:y, x : x + patch.shape[1]]
    region[:] = np.minimum(region, patch[patch.shape[0] - region.shape[0] :, : region.shape[1]])


def _palette(n: int) -> list[tuple[int, int, int]]:
    """n BGR colours along viridis (dark blue, low thresholds, to yellow)."""
    ramp = np.linspace(0, 230, n).astype(np.uint8).reshape(-1, 1) if n > 1 else np.array([[60]], dtype=np.uint8)
    return [tuple(int(v) for v in c) for c in cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS).reshape(-1, 3)]


def pr_image(title: str, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(480, 820, 3) uint8 BGR plot of precision (y) against recall (x), both 0..1, one line per (label, recall,
    precision), the legend on the right."""
    img = np.full((480, 820, 3), 255, dtype=np.uint8)
    left, top, width, height = 60, 36, 560, 394

    def points(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:  # (N, 1, 2) int32 in 1/16 px (cv2's `shift`)
        xy = np.stack((left + rec * width, top + (1.0 - prec) * height), axis=-1)
        return np.round(xy * 16).astype(np.int32).reshape(-1, 1, 2)

    for v in np.linspace(0.0, 1.0, 6):
        x, y = int(left + v * width), int(top + (1 - v) * height)
        cv2.line(img, (x, top), (x, top + height), _GREY, 1)
        cv2.line(img, (left, y), (left + width, y), _GREY, 1)
        _text(img, f"{v:.1f}", x, top + height + 16, 0.4, "center")
        _text(img, f"{v:.1f}", left - 6, y + 4, 0.4, "right")
    cv2.rectangle(img, (left, top), (left + width, top + height), _BLACK, 1)
    _text(img, title, left + width / 2, 24, 0.55, "center")
    _text(img, "recall", left + width / 2, top + height + 38, 0.5, "center")
    _vertical_text(img, "precision", 8, top + height // 2 + 40, 0.5)
    for i, ((label, rec, prec), color) in enumerate(zip(curves, _palette(len(curves)), strict=True)):
        if len(rec):
            cv2.polylines(img, [points(rec, prec)], False, color, 2, cv2.LINE_AA, shift=4)
        y, x = top + 12 + 18 * i, left + width + 12
        cv2.line(img, (x, y - 4), (x + 20, y - 4), color, 2, cv2.LINE_AA)
        _text(img, label, x + 26, y, 0.4)
    return img


def confusion_image(matrix: np.ndarray, names: list[str], title: str) -> np.ndarray:
    """BGR image of a confusion matrix: cells coloured by their share of the row, counts written in them.

    Args:
        matrix: (K, K) counts, rows true, columns predicted. names: the K row / column names. title: top line.
    """
    k, cell = len(names), 40
    label = max(cv2.getTextSize(name, _FONT, 0.45, 1)[0][0] for name in names) + 12
    x0, y0 = label + 30, label + 56
    img = np.full((y0 + k * cell + 12, max(x0 + k * cell + 12, 480), 3), 255, dtype=np.uint8)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        for j in range(k):
            v = float(share[i, j])
            color = tuple(int(255 - v * d) for d in (110, 200, 225))  # white -> dark blue (BGR)
            x, y = x0 + j * cell, y0 + i * cell
            cv2.rectangle(img, (x, y), (x + cell, y + cell), color, -1)
            if matrix[i, j]:
                text_color = (255, 255, 255) if v > 0.55 else _BLACK
                _text(img, str(matrix[i, j]), x + cell / 2, y + cell / 2 + 4, 0.35, "center", text_color)
        _text(img, names[i], x0 - 6, y0 + i * cell + cell / 2 + 5, 0.45, "right")
        _vertical_text(img, names[i], x0 + i * cell + cell // 2 - 7, y0 - 6)
    cv2.rectangle(img, (x0, y0), (x0 + k * cell, y0 + k * cell), _BLACK, 1)
    _text(img, title, 10, 22, 0.5)
    _text(img, "predicted", x0 + k * cell / 2, 44, 0.5, "center")
    _vertical_text(img, "true", 6, y0 + k * cell // 2 + 16, 0.5)
    return img


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def _numbers(values: np.ndarray) -> list[str]:
    return list(map(repr, values.tolist()))  # shortest text that reads back as the same float64


def write_plots(
    folder: str | os.PathLike,
    m: Matches,
    metric: str = "voc07",
    confusion_iou: float | None = None,
    confusion_score: float = 0.25,
) -> list[Path]:
    """Writes the precision-recall curves of every class with ground truth and the confusion matrix to `folder`.

    `pr_{class}.csv` has the columns of `PR_COLUMNS`, one row per detection of the class in score order per
    threshold: rank (0-based), score, tp and fp (0/1; both 0 for an ignored detection), recall and precision after it
    (the arrays the AP integrates, written losslessly). `confusion_matrix.csv` has a header `true\\predicted,` then
    the class names and `background`, and one row per true class then `background` (`confusion` defines it).

    Args:
        folder: created when missing. m: the matches. metric: for the AP in the legends.
        confusion_iou: the IoU an overlap must exceed in the confusion matrix; None = the first of m's thresholds.
        confusion_score: detections scoring below it are left out of the confusion matrix.

    Returns:
        The written files.
    """
    folder = check_writable_folder(folder)
    written = []
    curves = [pr_curves(m, k) for k in range(len(m.iou_thresholds))]
    npos = dict(zip(m.classes, counted_objects(m).tolist(), strict=True))
    for name in curves[0]:
        lines, legend = [",".join(PR_COLUMNS)], []
        for t, by_class in zip(m.iou_thresholds, curves, strict=True):
            c = by_class[name]
            n = len(c["tp"])
            cols = [[iou_key(t)] * n, list(map(str, range(n))), _numbers(c["score"])]
            cols += [list(map(str, c[key].astype(np.int64).tolist())) for key in ("tp", "fp")]
            cols += [_numbers(c["recall"]), _numbers(c["precision"])]
            lines += map(",".join, zip(*cols, strict=True))
            ap = average_precision(c["tp"], c["fp"], npos[name], metric)[0]
            legend.append((f"IoU > {iou_key(t)}: AP {ap:.3f}", c["recall"], c["precision"]))
        stem = folder / f"pr_{_safe(name)}"
        atomic_write_text(stem.with_suffix(".csv"), "\n".join(lines) + "\n")
        _write_png(stem.with_suffix(".png"), pr_image(f"{name} ({metric})", legend))
        written += [stem.with_suffix(".csv"), stem.with_suffix(".png")]
    iou = m.iou_thresholds[0] if confusion_iou is None else confusion_iou
    matrix = confusion_matrix(m, iou, confusion_score)
    names = [*m.classes, "background"]
    rows = [",".join(["true\\predicted", *names])]
    rows += [",".join([name, *map(str, row)]) for name, row in zip(names, matrix.tolist(), strict=True)]
    atomic_write_text(folder / "confusion_matrix.csv", "\n".join(rows) + "\n")
    title = f"confusion matrix: IoU > {iou:g}, score >= {confusion_score:g}; colour = share of the row"
    _write_png(folder / "confusion_matrix.png", confusion_image(matrix, names, title))
    return [*written, folder / "confusion_matrix.csv", folder / "confusion_matrix.png"]
