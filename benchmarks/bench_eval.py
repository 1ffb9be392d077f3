"""Times eval_dota (both metrics) on a seeded DOTA-like set: 250 scenes, 100k objects, ~113k detections, in memory,
at IoU 0.5 and at the 10 thresholds 0.5:0.95:0.05 (files read and IoUs computed once; "s/threshold" = median / 10).

`--files` also times reading label/Task1 folders; `--devkit` times the official devkit's voc_eval per class (slow)
and reports the largest AP difference. Appends a dated section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from report import append_results, format_table

from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.data import DotaLabels, Task1Detections, write_dota_labels, write_task1
from rotated_ddetr.evaluation import eval_dota, parse_iou_thresholds
from rotated_ddetr.fileio import atomic_write_text

# class: (relative frequency, long side px, short side px, share placed in dense aligned rows)
CLASS_STATS = {
    "plane": (8, 60, 55, 0.5), "baseball-diamond": (0.5, 150, 140, 0.0), "bridge": (2, 150, 30, 0.0),
    "ground-track-field": (0.4, 250, 150, 0.0), "small-vehicle": (26, 20, 10, 0.8), "large-vehicle": (16, 40, 14, 0.8),
    "ship": (28, 50, 15, 0.7), "tennis-court": (2.4, 50, 25, 0.6), "basketball-court": (0.5, 50, 30, 0.3),
    "storage-tank": (5, 40, 40, 0.7), "soccer-ball-field": (0.3, 200, 120, 0.0), "roundabout": (0.4, 120, 115, 0.0),
    "harbor": (6, 150, 40, 0.5), "swimming-pool": (1.7, 40, 20, 0.3), "helicopter": (0.6, 50, 40, 0.5),
}  # fmt: skip
CLASSES = list(CLASS_STATS)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COCO_RANGE = parse_iou_thresholds("0.5:0.95:0.05")


def _sizes(rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
    """(N,) class indices -> (N, 2) log-normally spread (long, short) sides in pixels."""
    base = np.array([CLASS_STATS[c][1:3] for c in CLASSES], dtype=np.float64)[cls]
    return base * np.exp(rng.normal(0.0, 0.25, (len(cls), 1))) * np.exp(rng.normal(0.0, 0.1, (len(cls), 2)))


def make_scene(rng: np.random.Generator, n_objects: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (N, 5) rboxes (pixels, radians), (N,) class indices; dense rows (parking lots, harbours), scatter."""
    freq = np.array([CLASS_STATS[c][0] for c in CLASSES])
    cls = rng.choice(len(CLASSES), n_objects, p=freq / freq.sum())
    dense = rng.random(n_objects) < np.array([CLASS_STATS[c][3] for c in CLASSES])[cls]
    wh = _sizes(rng, cls)
    centres = rng.uniform(0.05 * size, 0.95 * size, (n_objects, 2))
    angles = rng.uniform(-np.pi / 2, np.pi / 2, n_objects)
    for c in np.unique(cls[dense]):  # one aligned grid per class: rows of parked cars, moored ships, tanks
        idx = np.nonzero(dense & (cls == c))[0]
        wh[idx] = wh[idx].mean(axis=0) * np.exp(rng.normal(0.0, 0.05, (len(idx), 2)))
        cols = int(np.ceil(np.sqrt(len(idx))))
        grid = np.stack((np.arange(len(idx)) % cols, np.arange(len(idx)) // cols), axis=1)
        step = wh[idx].mean(axis=0)[::-1] * np.array([1.25, 1.15])  # side by side along the short side
        a = rng.uniform(-np.pi / 2, np.pi / 2)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        local = (grid - grid.mean(axis=0)) * step
        centres[idx] = rng.uniform(0.3 * size, 0.7 * size, 2) + local @ rot.T
        angles[idx] = a + np.pi / 2 + rng.normal(0.0, 0.03, len(idx))
    return np.concatenate((centres, wh, angles[:, None]), axis=1), cls


def _jitter(rng: np.random.Generator, rboxes: np.ndarray, scale: float) -> np.ndarray:
    """Noisy copies of rboxes: centre, size and angle errors proportional to `scale`."""
    out = rboxes.copy()
    out[:, :2] += rng.normal(0.0, scale, (len(out), 2)) * rboxes[:, 3:4]
    out[:, 2:4] *= np.exp(rng.normal(0.0, scale, (len(out), 2)))
    out[:, 4] += rng.normal(0.0, scale, len(out))
    return out


def make_eval_set(
    seed: int = 0, scenes: int = 250, objects: int = 400, size: float = 4000.0
) -> tuple[dict[str, DotaLabels], dict[str, Task1Detections]]:
    """Seeded ground truth ({scene: labels}) and detections ({class: Task1 detections}).

    Ground truth: integer corners, 20% with one vertex moved by a pixel (general quadrilaterals), 10% listed in the
    opposite orientation, 4% difficult (1) and 1% cut off (2). Detections: 90% of objects found (noisy copies), 5%
    found twice, 18% as many false positives (wrong class near an object, or anywhere); scores with 3 decimals (ties).
    """
    rng = np.random.default_rng(seed)
    labels, det_rows = {}, []
    for s in range(scenes):
        rboxes, cls = make_scene(rng, objects, size)
        polygons = np.round(rboxes_to_polygons(rboxes))
        moved = rng.random(len(polygons)) < 0.2
        polygons[moved, rng.integers(0, 8, moved.sum())] += rng.choice([-1.0, 1.0], moved.sum())
        flip = rng.random(len(polygons)) < 0.1
        polygons[flip] = polygons[flip].reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8)
        difficult = rng.choice(3, len(polygons), p=[0.95, 0.04, 0.01])
        labels[f"S{s:04d}"] = DotaLabels(polygons, [CLASSES[c] for c in cls], difficult, "synthetic", 0.3)
        found = rng.random(len(cls)) < 0.9
        twice = found & (rng.random(len(cls)) < 0.055)
        wrong = rng.random(len(cls)) < 0.1
        fp_boxes = np.concatenate((_jitter(rng, rboxes[wrong], 0.3), make_scene(rng, int(0.08 * objects), size)[0]))
        groups = [
            (_jitter(rng, rboxes[found], 0.08), cls[found], rng.beta(6, 2, found.sum())),
            (_jitter(rng, rboxes[twice], 0.2), cls[twice], rng.beta(3, 3, twice.sum())),
            (fp_boxes, rng.choice(len(CLASSES), len(fp_boxes)), rng.beta(2, 5, len(fp_boxes))),
        ]
        for boxes, det_cls, scores in groups:
            det_rows.append((np.full(len(boxes), s), det_cls, np.round(scores, 3), rboxes_to_polygons(boxes)))
    scene_idx, det_cls, scores, polygons = (np.concatenate(parts) for parts in zip(*det_rows, strict=True))
    polygons = np.round(polygons, 1)
    dets = {}
    for c, name in enumerate(CLASSES):
        sel = np.nonzero(det_cls == c)[0]
        dets[name] = Task1Detections([f"S{i:04d}" for i in scene_idx[sel]], scores[sel], polygons[sel])
    return labels, dets


def _row(what: str, metric: str, times: list[float], mean_ap: str = "", thresholds: int = 1) -> dict:
    return {"what": what, "metric": metric, "runs": len(times), "median s": statistics.median(times),
            "min s": min(times), "s/threshold": statistics.median(times) / thresholds, "mAP": mean_ap}  # fmt: skip


def _timed(fn, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _devkit(folder: Path, classes: list[str], metric: str, ours: dict) -> tuple[float, float]:
    """Seconds the devkit's voc_eval takes over all classes, and its largest |AP difference| with `ours`."""
    from dotadevkit.evaluate.task1 import voc_eval  # optional, test-only dependency

    start, worst = time.perf_counter(), 0.0
    for name in classes:
        with contextlib.redirect_stdout(io.StringIO()):  # voc_eval prints every tp/fp array
            ap = voc_eval(
                str(folder / "det" / "Task1_{:s}.txt"),
                str(folder / "labelTxt" / "{:s}.txt"),
                str(folder / "imageset.txt"),
                name,
                0.5,
                metric == "voc07",
            )[2]
        worst = max(worst, abs(ap - ours["AP"][name]))
    return time.perf_counter() - start, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=250)
    parser.add_argument("--objects", type=int, default=400, help="ground-truth objects per scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", action="store_true", help="also time reading label/Task1 folders")
    parser.add_argument("--devkit", action="store_true", help="also time the official devkit (slow, needs dotadevkit)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    labels, dets = make_eval_set(args.seed, args.scenes, args.objects)
    n_gt, n_det = sum(len(v) for v in labels.values()), sum(len(v) for v in dets.values())
    header = f"set: {args.scenes} scenes, {n_gt} ground truth, {n_det} detections (seed {args.seed})"
    print(header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        det, lab = folder / "det", folder / "labelTxt"
        if args.files or args.devkit:
            for name, image_labels in labels.items():
                write_dota_labels(lab / f"{name}.txt", image_labels)
            write_task1(det, dets)
            atomic_write_text(folder / "imageset.txt", "\n".join(labels) + "\n")
        for metric in ("voc07", "area"):
            result = eval_dota(dets, labels, metric=metric)
            times = _timed(lambda m=metric: eval_dota(dets, labels, metric=m), args.repeats)
            mean_ap = f"{result['mAP']:.6f}"
            rows.append(_row("eval_dota, in memory", metric, times, mean_ap))
            if args.files:
                times = _timed(lambda m=metric: eval_dota(det, lab, metric=m), args.repeats)
                rows.append(_row("eval_dota, from folders", metric, times))
            multi = eval_dota(dets, labels, metric=metric, iou_threshold=COCO_RANGE)
            if multi["mAP50"] != result["mAP"]:  # the 0.5 of the range must be the single run, number for number
                raise RuntimeError(f"mAP50 of the range {multi['mAP50']} != mAP at 0.5 {result['mAP']}")
            times = _timed(lambda m=metric: eval_dota(dets, labels, metric=m, iou_threshold=COCO_RANGE), args.repeats)
            rows.append(_row("eval_dota 0.5:0.95, in memory", metric, times, f"{multi['mAP']:.6f}", len(COCO_RANGE)))
            if args.files:
                times = _timed(lambda m=metric: eval_dota(det, lab, metric=m, iou_threshold=COCO_RANGE), args.repeats)
                rows.append(_row("eval_dota 0.5:0.95, from folders", metric, times, thresholds=len(COCO_RANGE)))
            if args.devkit:
                seconds, worst = _devkit(folder, list(result["AP"]), metric, result)
                what = f"devkit voc_eval x{len(result['AP'])} (max AP diff {worst:.1e})"
                rows.append(_row(what, metric, [seconds]))
    print(format_table(rows))
    if not args.no_record:
        append_results("bench_eval.py: eval_dota vs the official devkit", rows, header)


if __name__ == "__main__":
    main()
