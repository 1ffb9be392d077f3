"""DOTA mAP: hand-computed cases, devkit semantics (difficult, duplicates, strict threshold, image sets), polygon IoU,
cross-checks against the official devkit's voc_eval / polyiou, and tools/evaluate.py end to end."""

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely

from rotated_ddetr.data import DotaLabels, Task1Detections, read_dota_labels, write_dota_labels, write_task1
from rotated_ddetr.evaluation import average_precision, devkit_polygon_iou, eval_dota, matching, polygon_iou_pairs

ROOT = Path(__file__).resolve().parents[2]


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """Axis-aligned rectangle as a DOTA polygon (clockwise on screen, like the official labels)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def dets_of(rows: list[tuple]) -> dict[str, Task1Detections]:
    """[(class, image, score, polygon)] -> {class: Task1Detections} in the given order."""
    out: dict[str, list] = {}
    for cls, image, score, polygon in rows:
        out.setdefault(cls, [[], [], []])
        for column, value in zip(out[cls], (image, score, polygon), strict=True):
            column.append(value)
    return {
        cls: Task1Detections(names, scores, np.reshape(polys, (-1, 8))) for cls, (names, scores, polys) in out.items()
    }


def three_boxes(difficult=(0, 0, 0)) -> dict[str, DotaLabels]:
    polygons = [box(0, 0, 30, 10), box(100, 0, 130, 10), box(200, 0, 230, 10)]
    return {"I": DotaLabels(np.array(polygons, dtype=float), ["a"] * 3, list(difficult))}


def test_hand_computed_precision_recall():
    # scores 0.9: takes gt 1 (TP); 0.8: overlaps nothing (FP); 0.7: takes gt 2 (TP); 0.6: gt 1 again (FP, duplicate)
    dets = dets_of(
        [
            ("a", "I", 0.6, box(0, 0, 30, 10)),
            ("a", "I", 0.9, box(0, 0, 30, 10)),
            ("a", "I", 0.8, box(500, 500, 510, 510)),
            ("a", "I", 0.7, box(100, 0, 130, 10)),
        ]
    )
    # npos = 3; cumulative tp = 1 1 2 2, fp = 0 1 1 2 -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2
    # VOC07: t in {0, .1, .2, .3} -> max precision at recall >= t = 1; t in {.4, .5, .6} -> 2/3; t >= .7 -> 0
    #        AP = (4 * 1 + 3 * 2/3) / 11 = 6/11
    voc = eval_dota(dets, three_boxes(), metric="voc07")
    assert voc["AP"]["a"] == pytest.approx(6 / 11, abs=1e-12) and voc["mAP"] == pytest.approx(6 / 11, abs=1e-12)
    # area: envelope precision 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 beyond -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    area = eval_dota(dets, three_boxes(), metric="area")
    assert area["AP"]["a"] == pytest.approx(5 / 9, abs=1e-12)
    assert area["recall"]["a"] == pytest.approx(2 / 3, abs=1e-12)
    assert area["precision"]["a"] == pytest.approx(1 / 2, abs=1e-12)
    assert (area["num_gt"]["a"], area["num_dets"]["a"]) == (3, 4)


def test_average_precision_arithmetic():
    tp, fp = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0])
    assert average_precision(tp, fp, 3, "voc07")[0] == pytest.approx(6 / 11, abs=1e-12)
    assert average_precision(tp, fp, 3, "area")[0] == pytest.approx(5 / 9, abs=1e-12)
    assert average_precision(np.zeros(0), np.zeros(0), 3, "voc07") == (0.0, 0.0, 0.0)


def test_duplicates_are_false_positives():
    dets = dets_of([("a", "I", 0.9, box(0, 0, 30, 10)), ("a", "I", 0.8, box(0, 0, 30, 10.5))])
    labels = {"I": DotaLabels(np.array([box(0, 0, 30, 10)]), ["a"], [0])}
    result = eval_dota(dets, labels)
    assert result["precision"]["a"] == pytest.approx(0.5, abs=1e-12)  # 1 TP + 1 FP
    assert result["recall"]["a"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("flag", [1, 2])
def test_detection_of_a_difficult_object_is_neither(flag: int):
    labels = three_boxes(difficult=(flag, 0, 0))
    dets = dets_of([("a", "I", 0.9, box(0, 0, 30, 10)), ("a", "I", 0.8, box(100, 0, 130, 10))])
    result = eval_dota(dets, labels, metric="area")
    assert result["num_gt"]["a"] == 2  # the difficult object is not counted
    # counted as FP the precision would end at 1/2; ignored it stays 1 (recall 1/2 with one TP of two)
    assert result["precision"]["a"] == pytest.approx(1.0, abs=1e-12)
    assert result["recall"]["a"] == pytest.approx(0.5, abs=1e-12)
    assert result["AP"]["a"] == pytest.approx(0.5, abs=1e-12)


def test_threshold_is_strict():
    # 30 x 10 boxes shifted by 10: intersection 200, union 400 -> IoU exactly 0.5 (also in the devkit's arithmetic)
    gt, det = box(1000, 1000, 1030, 1010), box(1010, 1000, 1040, 1010)
    assert devkit_polygon_iou(np.array(gt), np.array(det)) == 0.5
    labels = {"I": DotaLabels(np.array([gt]), ["a"], [0])}
    dets = dets_of([("a", "I", 0.5, det)])
    assert eval_dota(dets, labels, iou_thr=0.5)["AP"]["a"] == 0.0
    assert eval_dota(dets, labels, iou_thr=0.4999)["AP"]["a"] == pytest.approx(1.0, abs=1e-12)
    # iou_threshold is the name, iou_thr (DESIGN.md §3) its keyword alias; the result records it as "iou_thr".
    assert eval_dota(dets, labels, iou_threshold=0.4999)["AP"]["a"] == pytest.approx(1.0, abs=1e-12)
    assert eval_dota(dets, labels, ["I"], "voc07", 0.5)["AP"]["a"] == 0.0  # positional, as before
    assert eval_dota(dets, labels, iou_threshold=0.4)["iou_thr"] == 0.4


def test_best_match_taken_means_false_positive_without_fallback():
    # two objects; the second detection's best object (IoU 1) is already taken, the other (IoU ~0.6) is free:
    # the devkit does not fall back to it, so the detection is a false positive
    labels = {"I": DotaLabels(np.array([box(0, 0, 30, 10), box(8, 0, 38, 10)]), ["a", "a"], [0, 0])}
    dets = dets_of([("a", "I", 0.9, box(0, 0, 30, 10)), ("a", "I", 0.8, box(0, 0, 30, 10))])
    result = eval_dota(dets, labels, metric="area")
    assert result["recall"]["a"] == pytest.approx(0.5, abs=1e-12)
    assert result["precision"]["a"] == pytest.approx(0.5, abs=1e-12)


def test_perfect_and_no_detections_on_real_samples(dota_samples: Path):
    folder = dota_samples / "labelTxt"
    labels = {p.stem: read_dota_labels(p) for p in sorted(folder.glob("*.txt"))}
    rows = [
        (c, name, 1.0, poly) for name, lab in labels.items() for c, poly in zip(lab.classes, lab.polygons, strict=True)
    ]
    for metric in ("voc07", "area"):
        perfect = eval_dota(dets_of(rows), folder, metric=metric)
        assert perfect["mAP"] == pytest.approx(1.0, abs=1e-9)
        assert all(ap == pytest.approx(1.0, abs=1e-9) for ap in perfect["AP"].values())
    assert len(perfect["AP"]) == 12  # the classes with a non-difficult object in the 7 files
    # awk over the 7 files: 561 ships of which 6 difficult, 255 storage tanks of which 61 difficult
    assert (perfect["num_gt"]["ship"], perfect["num_gt"]["storage-tank"]) == (561 - 6, 255 - 61)
    with pytest.warns(UserWarning, match="no detections at all"):
        none = eval_dota({}, folder)
    assert none["mAP"] == 0.0 and set(none["AP"]) == set(perfect["AP"])


def test_imageset_filters_and_warns_once(tmp_path: Path):
    labels = {"I": three_boxes()["I"], "J": three_boxes()["I"]}
    dets = dets_of(
        [("a", "I", 0.9, box(0, 0, 30, 10)), ("a", "J", 0.8, box(0, 0, 30, 10)), ("a", "K", 0.7, box(0, 0, 1, 1))]
    )
    imageset = tmp_path / "set.txt"
    imageset.write_text("I\n\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = eval_dota(dets, labels, imageset=imageset, metric="area")
    assert len(caught) == 1 and "ignored 2 detections" in str(caught[0].message)
    assert (result["num_gt"]["a"], result["num_dets"]["a"]) == (3, 1)
    assert result["AP"]["a"] == pytest.approx(1 / 3, abs=1e-12)


def test_bad_arguments():
    labels, dets = three_boxes(), dets_of([("a", "I", 0.9, box(0, 0, 30, 10))])
    with pytest.raises(ValueError, match="unknown metric"):
        eval_dota(dets, labels, metric="coco")
    with pytest.raises(ValueError, match="iou_thr"):
        eval_dota(dets, labels, iou_thr=1.0)
    with pytest.raises(ValueError, match="no labels for image 'X'"):
        eval_dota(dets, labels, imageset=["X"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        eval_dota(dets, three_boxes(difficult=(1, 1, 1)))


def test_polygon_iou_known_values():
    square, shifted = box(0, 0, 2, 2), box(1, 1, 3, 3)
    reversed_square = np.reshape(square, (4, 2))[::-1].ravel()
    dart, hull = [0, 0, 4, 0, 1, 1, 0, 4], [0, 0, 4, 0, 2, 2, 0, 4]  # non-convex (area 4) inside its hull (area 8)
    iou, err = polygon_iou_pairs(np.array([square, reversed_square, dart]), np.array([shifted, shifted, hull]))
    np.testing.assert_allclose(iou, [1 / 7, 1 / 7, 0.5], atol=1e-12)
    assert np.all(err < 1e-8)


def test_polygon_iou_matches_shapely_on_simple_quadrilaterals():
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 4000, (3000, 1, 2))
    radii = rng.uniform(5, 40, (3000, 4, 1))
    angles = np.sort(rng.uniform(0, 2 * np.pi, (3000, 4)), axis=1)[..., None]  # star-shaped: simple, often concave
    p = (centres + radii * np.concatenate((np.cos(angles), np.sin(angles)), axis=2)).reshape(-1, 8)
    q = p + rng.normal(0, 4, p.shape)
    ok = shapely.is_valid(shapely.polygons(q.reshape(-1, 4, 2))) & shapely.is_valid(
        shapely.polygons(p.reshape(-1, 4, 2))
    )
    p, q = p[ok], q[ok]
    gp, gq = shapely.polygons(p.reshape(-1, 4, 2)), shapely.polygons(q.reshape(-1, 4, 2))
    expected = shapely.area(shapely.intersection(gp, gq)) / shapely.area(shapely.union(gp, gq))
    np.testing.assert_allclose(polygon_iou_pairs(p, q)[0], expected, atol=1e-9)


def _noisy_detections(labels: dict[str, DotaLabels], seed: int) -> dict[str, Task1Detections]:
    """Seeded detections around the ground truth: noisy, exact, duplicated, degenerate, turned-around and false ones.

    Scores have two decimals, so many tie (the devkit's quicksort order among ties must be reproduced).
    """
    rng = np.random.default_rng(seed)
    classes = sorted({c for lab in labels.values() for c in lab.classes})
    rows = []
    for name, lab in labels.items():
        for cls, poly in zip(lab.classes, lab.polygons, strict=True):
            size = np.sqrt(max(abs(shapely.area(shapely.polygons(poly.reshape(4, 2)))), 1.0))
            kind = rng.choice(
                ["noisy", "exact", "twice", "reversed", "shifted", "miss"], p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
            )
            if kind == "miss":
                continue
            det = poly + rng.normal(0, 0.08 * size, 8) if kind in ("noisy", "twice") else poly.copy()
            if kind == "reversed":
                det = det.reshape(4, 2)[::-1].ravel()
            if kind == "shifted":  # a whole-pixel shift of the label: IoU lands on the threshold now and then
                det = det + np.repeat(rng.integers(-3, 4, 2)[None], 4, axis=0).ravel()
            rows.append((cls, name, round(rng.random(), 2), np.round(det, 1)))
            if kind == "twice":
                rows.append((cls, name, round(rng.random(), 2), np.round(poly + rng.normal(0, 0.15 * size, 8), 1)))
            if rng.random() < 0.1:  # confused class
                rows.append((str(rng.choice(classes)), name, round(rng.random(), 2), det))
        hi = lab.polygons.max() if len(lab) else 100.0
        for _ in range(max(len(lab) // 10, 1)):  # background false positives, some degenerate or self-intersecting
            x, y, w, h = *rng.uniform(0, hi, 2), *rng.uniform(4, 60, 2)
            poly = np.array(box(x, y, x + w, y + h))
            poly = poly[[0, 1, 4, 5, 2, 3, 6, 7]] if rng.random() < 0.2 else poly  # bowtie
            poly = np.repeat(poly[:2][None], 4, axis=0).ravel() if rng.random() < 0.1 else poly  # a point
            rows.append((str(rng.choice(classes)), name, round(rng.random(), 2), poly))
    order = rng.permutation(len(rows))
    return dets_of([rows[i] for i in order])


def _devkit_aps(tmp: Path, labels_folder: Path, imageset: Path, classes, metric: str) -> dict[str, float]:
    """The devkit's voc_eval per class (classes with an empty file skipped: voc_eval crashes on them)."""
    task1 = pytest.importorskip("dotadevkit.evaluate.task1")
    aps = {}
    for cls in classes:
        if (tmp / f"Task1_{cls}.txt").stat().st_size == 0:
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # voc_eval prints every tp/fp array
            aps[cls] = task1.voc_eval(
                str(tmp / "Task1_{:s}.txt"), str(labels_folder / "{:s}.txt"), str(imageset), cls, 0.5, metric == "voc07"
            )[2]
    return aps


def _cross_check(tmp_path: Path, labels_folder: Path, dets: dict, monkeypatch) -> tuple[int, float, int]:
    """eval_dota vs the devkit on the same files, both metrics: (classes compared, max |AP diff|, exact redos)."""
    names = sorted(p.stem for p in labels_folder.glob("*.txt"))
    imageset = tmp_path / "imageset.txt"
    imageset.write_text("\n".join(names) + "\n")
    write_task1(tmp_path / "det", dets)
    redos = []
    original = matching._devkit_best
    monkeypatch.setattr(matching, "_devkit_best", lambda *a: redos.append(a[2]) or original(*a))
    compared, worst = 0, 0.0
    for metric in ("voc07", "area"):
        ours = eval_dota(tmp_path / "det", labels_folder, imageset, metric=metric)
        theirs = _devkit_aps(tmp_path / "det", labels_folder, imageset, ours["AP"], metric)
        for cls, ap in theirs.items():
            assert ours["AP"][cls] == pytest.approx(ap, abs=1e-6), (metric, cls)
            worst = max(worst, abs(ours["AP"][cls] - ap))
        compared += len(theirs)
    return compared, worst, len(redos)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_devkit_on_real_samples(dota_samples: Path, tmp_path: Path, monkeypatch, seed: int):
    pytest.importorskip("dotadevkit")
    folder = dota_samples / "labelTxt"
    labels = {p.stem: read_dota_labels(p) for p in sorted(folder.glob("*.txt"))}
    compared, worst, _ = _cross_check(tmp_path, folder, _noisy_detections(labels, seed), monkeypatch)
    assert compared >= 2 * 11 and worst <= 1e-6


def test_equals_devkit_on_adversarial_scene(tmp_path: Path, monkeypatch):
    """Exact-threshold IoUs, duplicated and degenerate objects, difficult 2, far-off coordinates (rounding)."""
    pytest.importorskip("dotadevkit")
    rng = np.random.default_rng(7)
    polys, classes, difficult = [], [], []
    for i in range(300):
        x, y = rng.integers(0, 20000, 2).astype(float)
        w, h = 3.0 * rng.integers(2, 20), float(rng.integers(2, 20))
        polys.append(box(x, y, x + w, y + h))
        classes.append(["small-vehicle", "ship"][i % 2])
        difficult.append(int(rng.choice(3, p=[0.8, 0.1, 0.1])))
    polys += [polys[0], polys[1], box(5, 5, 5, 5), [0, 0, 10, 10, 0, 10, 10, 0]]  # twins, a point, a bowtie
    classes += [classes[0], classes[1], "ship", "ship"]
    difficult += [0, 0, 0, 0]
    labels = DotaLabels(np.array(polys), classes, difficult)
    write_dota_labels(tmp_path / "labelTxt" / "S0.txt", labels)
    rows = []
    for poly, cls in zip(labels.polygons, classes, strict=True):
        w = poly[2] - poly[0]
        for shift in (0.0, w / 3, -w / 3, w / 3 + 0.1, 1.0):  # IoU 1, exactly 0.5 twice, just below, high
            rows.append((cls, "S0", round(rng.random(), 1), poly + np.array([shift, 0] * 4)))
    rows.append(("ship", "S0", 0.5, box(5, 5, 5, 5)))  # a point on the point: the devkit's IoU is 0/0
    dets = dets_of(rows)
    compared, worst, redos = _cross_check(tmp_path, tmp_path / "labelTxt", dets, monkeypatch)
    assert compared == 4 and worst <= 1e-6
    assert redos > 100  # the exact-threshold and twin cases went through the devkit's own arithmetic


def test_devkit_polygon_iou_is_bitwise_polyiou():
    polyiou = pytest.importorskip("dotadevkit.polyiou.polyiou")
    rng = np.random.default_rng(0)
    p = np.concatenate((rng.uniform(0, 30, (400, 8)) + 3000, np.round(rng.uniform(0, 12, (400, 8)))))
    q = np.concatenate((p[:400] + rng.normal(0, 3, (400, 8)), np.round(rng.uniform(0, 12, (400, 8)))))
    q[-50:] = p[-50:]  # identical pairs (integer, some degenerate)
    for a, b in zip(p, q, strict=True):
        ref = polyiou.iou_poly(polyiou.VectorDouble(a), polyiou.VectorDouble(b))
        ours = devkit_polygon_iou(a, b)
        assert ours == ref or (np.isnan(ours) and np.isnan(ref))
    iou, err = polygon_iou_pairs(p, q)
    ref = np.array(
        [polyiou.iou_poly(polyiou.VectorDouble(a), polyiou.VectorDouble(b)) for a, b in zip(p, q, strict=True)]
    )
    finite = np.isfinite(err)
    assert finite.mean() > 0.8 and np.all(np.abs(iou - ref)[finite] <= err[finite])


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(ROOT / "tools" / "evaluate.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_evaluate_tool(dota_samples: Path, tmp_path: Path):
    folder = dota_samples / "labelTxt"
    labels = {p.stem: read_dota_labels(p) for p in sorted(folder.glob("*.txt"))}
    write_task1(tmp_path / "det", _noisy_detections(labels, 0))
    out = tmp_path / "res" / "map.json"
    done = _run_tool("--dets", str(tmp_path / "det"), "--labels", str(dota_samples), "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    expected = eval_dota(tmp_path / "det", folder)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12) and result["AP"] == expected["AP"]
    assert f"{expected['mAP']:.4f}" in done.stdout.splitlines()[-1]
    assert any(line.split()[:1] == ["ship"] and line.split()[2] == "555" for line in done.stdout.splitlines())
    assert _run_tool("--help").returncode == 0


def test_evaluate_tool_bad_input(dota_samples: Path, tmp_path: Path):
    missing = _run_tool("--dets", str(tmp_path / "nope"), "--labels", str(dota_samples))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder of Task1 files"
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "Task1_ship.txt").write_text("P0706 0.9 1 2 3 4 5 6 7 8\nP0706 0.8 1 2 3\n")
    bad = _run_tool("--dets", str(tmp_path / "det"), "--labels", str(dota_samples))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith(f"error: {tmp_path / 'det' / 'Task1_ship.txt'}:2: expected 10 fields")
