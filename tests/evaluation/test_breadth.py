"""Evaluation breadth: IoU ranges (each threshold equal to a run at it alone, and to the devkit at it), mAP50/mAP75
keys, object sizes on a hand-made case, precision-recall files equal to the computed arrays, the confusion matrix on
a hand-made case, and tools/evaluate.py with --iou-thr ranges, --sizes, --plots and --zip."""

import contextlib
import csv
import io
import json
import os
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotated_ddetr.data import DotaLabels, Task1Detections, read_dota_labels, write_dota_labels, write_task1
from rotated_ddetr.evaluation import eval_dota, match_detections, parse_iou_thresholds
from rotated_ddetr.evaluation.confusion import confusion_matrix
from rotated_ddetr.evaluation.plots import PR_COLUMNS, write_plots
from rotated_ddetr.evaluation.scores import iou_key, pr_curves

ROOT = Path(__file__).resolve().parents[2]
COCO_RANGE = parse_iou_thresholds("0.5:0.95:0.05")


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def dets_of(rows: list[tuple]) -> dict[str, Task1Detections]:
    """[(class, image, score, polygon)] -> {class: Task1Detections} in the given order."""
    out: dict[str, list] = {}
    for cls, image, score, polygon in rows:
        names, scores, polys = out.setdefault(cls, [[], [], []])
        names.append(image)
        scores.append(score)
        polys.append(polygon)
    return {c: Task1Detections(n, s, np.reshape(p, (-1, 8))) for c, (n, s, p) in out.items()}


def noisy(labels: dict[str, DotaLabels], seed: int) -> dict[str, Task1Detections]:
    """Seeded detections: noisy, whole-pixel-shifted (IoUs on thresholds), duplicated, confused and false ones."""
    rng = np.random.default_rng(seed)
    classes = sorted({c for lab in labels.values() for c in lab.classes})
    rows = []
    for name, lab in labels.items():
        for cls, poly in zip(lab.classes, lab.polygons, strict=True):
            x, y = poly[0::2], poly[1::2]
            size = np.sqrt(max(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2, 1.0))
            shift = np.tile(rng.integers(-2, 3, 2), 4)
            det = poly + (shift if rng.random() < 0.3 else rng.normal(0, 0.06 * size, 8))
            rows.append((cls, name, round(rng.random(), 2), np.round(det, 1)))
            if rng.random() < 0.1:
                rows.append((str(rng.choice(classes)), name, round(rng.random(), 2), np.round(det, 1)))
        for _ in range(max(len(lab) // 10, 1)):
            x, y = rng.uniform(0, 3000, 2)
            rows.append((str(rng.choice(classes)), name, round(rng.random(), 2), box(x, y, x + 30, y + 12)))
    return dets_of([rows[i] for i in rng.permutation(len(rows))])


@pytest.fixture(scope="module")
def samples(dota_samples: Path) -> tuple[dict, dict]:
    labels = {p.stem: read_dota_labels(p) for p in sorted((dota_samples / "labelTxt").glob("*.txt"))}
    return labels, noisy(labels, 0)


def test_parse_iou_thresholds():
    assert parse_iou_thresholds("0.5") == 0.5 and isinstance(parse_iou_thresholds("0.5"), float)
    assert COCO_RANGE == tuple(float(f"0.{k}") for k in ("5", "55", "6", "65", "7", "75", "8", "85", "9", "95"))
    assert parse_iou_thresholds("0.5,0.75") == (0.5, 0.75)
    assert parse_iou_thresholds("0.3:0.3:0.1") == (0.3,)
    for bad in ("0.5:0.95", "0.5:x:0.1", "0.9:0.5:0.05", "0.5:0.9:0", "0.5,nan"):
        with pytest.raises(ValueError, match="expected a number"):
            parse_iou_thresholds(bad)
    assert [iou_key(t) for t in (0.5, 0.55, 0.525)] == ["0.50", "0.55", "0.525"]


@pytest.mark.parametrize("metric", ["voc07", "area"])
def test_each_threshold_equals_a_run_at_it_alone(samples, metric: str):
    labels, dets = samples
    multi = eval_dota(dets, labels, metric=metric, iou_threshold=COCO_RANGE, sizes=True)
    assert list(multi["by_iou"]) == ["0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95"]
    for t in COCO_RANGE:
        alone = eval_dota(dets, labels, metric=metric, iou_threshold=t, sizes=True)
        assert multi["by_iou"][iou_key(t)] == alone  # every number, exactly
        assert multi["mAP_by_iou"][iou_key(t)] == alone["mAP"]
    maps = list(multi["mAP_by_iou"].values())
    assert multi["mAP"] == pytest.approx(np.mean(maps), abs=1e-15) and maps == sorted(maps, reverse=True)
    assert (multi["mAP50"], multi["mAP75"]) == (multi["mAP_by_iou"]["0.50"], multi["mAP_by_iou"]["0.75"])
    for c, ap in multi["AP"].items():
        assert ap == pytest.approx(np.mean([r["AP"][c] for r in multi["by_iou"].values()]), abs=1e-15)
    small = [r["sizes"]["small"]["mAP"] for r in multi["by_iou"].values()]
    assert multi["sizes"]["small"]["mAP"] == pytest.approx(np.mean(small), abs=1e-15)
    assert multi["iou_thr"] == list(COCO_RANGE) and multi["metric"] == metric


def test_thresholds_equal_the_devkit_at_each(samples, dota_samples: Path, tmp_path: Path):
    """The devkit's voc_eval at ovthresh 0.75 and 0.9 (whole-pixel shifts put IoUs on the thresholds)."""
    task1 = pytest.importorskip("dotadevkit.evaluate.task1")
    labels, dets = samples
    write_task1(tmp_path, dets)
    imageset = tmp_path / "imageset.txt"
    imageset.write_text("\n".join(labels) + "\n")
    ours = eval_dota(tmp_path, dota_samples / "labelTxt", iou_threshold=(0.75, 0.9))
    compared = 0
    for t in (0.75, 0.9):
        for cls, ap in ours["by_iou"][iou_key(t)]["AP"].items():
            with contextlib.redirect_stdout(io.StringIO()):  # voc_eval prints every tp/fp array
                theirs = task1.voc_eval(
                    str(tmp_path / "Task1_{:s}.txt"), str(dota_samples / "labelTxt" / "{:s}.txt"), str(imageset),
                    cls, t, True,
                )[2]  # fmt: skip
            assert ap == pytest.approx(theirs, abs=1e-12), (t, cls)
            compared += 1
    assert compared >= 20


def test_map50_and_map75_keys_only_when_evaluated(samples):
    labels, dets = samples
    both = eval_dota(dets, labels, iou_threshold=(0.5, 0.75))
    assert set(both) >= {"mAP", "mAP_by_iou", "mAP50", "mAP75", "AP", "by_iou"}
    assert both["mAP"] == pytest.approx((both["mAP50"] + both["mAP75"]) / 2, abs=1e-15)
    neither = eval_dota(dets, labels, iou_threshold=parse_iou_thresholds("0.55:0.7:0.05"))
    assert "mAP50" not in neither and "mAP75" not in neither
    assert list(neither["mAP_by_iou"]) == ["0.55", "0.60", "0.65", "0.70"]
    single = eval_dota(dets, labels)  # one number: today's dict, no new key
    assert set(single) == {"mAP", "AP", "recall", "precision", "num_gt", "num_dets", "metric", "iou_thr"}


def size_case() -> tuple[dict, dict]:
    """One class; objects: two small (20 px sides), one medium (50), one large (120), one of exactly 32 x 32 px."""
    objects = [box(0, 0, 20, 20), box(100, 0, 120, 20), box(200, 0, 250, 50), box(400, 0, 520, 120)]
    objects.append(box(600, 0, 632, 32))  # area 1024 = 32^2: small and medium, bounds inclusive (pycocotools)
    labels = {"I": DotaLabels(np.array(objects, dtype=float), ["a"] * 5, [0] * 5)}
    dets = dets_of(
        [
            ("a", "I", 0.9, objects[0]),  # TP on the small g0
            ("a", "I", 0.8, objects[2]),  # TP on the medium g2
            ("a", "I", 0.7, box(1000, 1000, 1050, 1050)),  # FP of medium size, on nothing
            ("a", "I", 0.6, objects[3]),  # TP on the large g3
            ("a", "I", 0.5, box(2000, 2000, 2010, 2010)),  # FP of small size, on nothing
            ("a", "I", 0.4, objects[4]),  # TP on the 32 x 32 g4
            ("a", "I", 0.3, objects[0]),  # duplicate on g0: FP
        ]
    )
    return labels, dets


@pytest.mark.parametrize("metric", ["voc07", "area"])
def test_sizes_by_hand(metric: str):
    labels, dets = size_case()
    result = eval_dota(dets, labels, metric=metric, sizes=True)
    sizes = result["sizes"]
    assert [sizes[s]["range_px"] for s in ("small", "medium", "large")] == [[0.0, 32.0], [32.0, 96.0], [96.0, None]]
    assert [sizes[s]["num_gt"]["a"] for s in ("small", "medium", "large")] == [3, 2, 1]  # g4 in small and medium
    # small (g0, g1, g4 counted): d0 TP; d1 takes g2 (ignored) and d3 g3 (ignored): neither; d2 is medium-sized and
    # takes nothing: ignored; d4 FP; d5 TP; d6 duplicate FP. recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2 over
    # the counted ones -> VOC07 (4 * 1 + 3 * 2/3) / 11 = 6/11, area 1/3 + 1/3 * 2/3 = 5/9
    # medium (g2, g4): d0, d3, d6 take ignored objects; d4 is small and takes nothing: ignored; d1 TP, d2 FP, d5 TP:
    # recall 1/2 1/2 1, precision 1 1/2 2/3 -> VOC07 (6 * 1 + 5 * 2/3) / 11 = 28/33, area 1/2 + 1/2 * 2/3 = 5/6
    # large (g3): only d3 counts (TP), d2 and d4 are ignored by their size -> AP 1
    expected = {"voc07": (6 / 11, 28 / 33, 1.0), "area": (5 / 9, 5 / 6, 1.0)}[metric]
    for name, ap in zip(("small", "medium", "large"), expected, strict=True):
        assert sizes[name]["AP"]["a"] == pytest.approx(ap, abs=1e-12), name
        assert sizes[name]["mAP"] == pytest.approx(ap, abs=1e-12)
    if metric == "area":  # all sizes: TP TP FP TP FP TP FP of 5 -> envelope 1, 1, 3/4, 2/3 over recall steps of 1/5
        assert result["AP"]["a"] == pytest.approx(0.2 * (1 + 1 + 3 / 4 + 2 / 3), abs=1e-12)


def test_size_without_objects_has_no_map():
    labels, dets = size_case()
    labels = {"I": DotaLabels(labels["I"].polygons[:2], ["a", "a"], [0, 0])}  # small objects only
    sizes = eval_dota(dets, labels, sizes=True)["sizes"]
    assert sizes["large"]["mAP"] is None and sizes["large"]["AP"] == {} and sizes["medium"]["mAP"] is None


def pr_case() -> tuple[dict, dict]:
    """test_dota_map's hand-computed case: TP, FP (on nothing), TP, FP (duplicate) over 3 objects."""
    objects = np.array([box(0, 0, 30, 10), box(100, 0, 130, 10), box(200, 0, 230, 10)])
    labels = {"I": DotaLabels(objects, ["a"] * 3, [0] * 3)}
    dets = dets_of(
        [
            ("a", "I", 0.6, box(0, 0, 30, 10)),
            ("a", "I", 0.9, box(0, 0, 30, 10)),
            ("a", "I", 0.8, box(500, 500, 510, 510)),
            ("a", "I", 0.7, box(103, 0, 133, 10)),  # IoU 27/33 = 0.818: TP at 0.5, FP at 0.9
        ]
    )
    return labels, dets


def test_pr_files_hold_the_computed_curves(tmp_path: Path):
    labels, dets = pr_case()
    m = match_detections(dets, labels, iou_thresholds=(0.5, 0.9))
    files = write_plots(tmp_path / "plots", m)
    names = {p.name for p in files}
    assert names == {"pr_a.csv", "pr_a.png", "confusion_matrix.csv", "confusion_matrix.png"}
    assert all((tmp_path / "plots" / n).stat().st_size > 0 for n in names)
    png = cv2.imread(str(tmp_path / "plots" / "pr_a.png"))
    assert png.shape == (480, 820, 3) and (png < 128).any()  # decodes, and something is drawn
    with open(tmp_path / "plots" / "pr_a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == PR_COLUMNS and len(rows) == 8  # 4 detections x 2 thresholds
    by_t = {t: [r for r in rows if r["iou_thr"] == t] for t in ("0.50", "0.90")}
    # at 0.5: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2 (test_dota_map's hand computation);
    # at 0.9: the 0.818 detection is an FP -> recall 1/3 1/3 1/3 1/3, precision 1 1/2 1/3 1/4
    expected = {"0.50": ([1, 1, 2, 2], [1, 1 / 2, 2 / 3, 1 / 2]), "0.90": ([1, 1, 1, 1], [1, 1 / 2, 1 / 3, 1 / 4])}
    for k, t in enumerate(("0.50", "0.90")):
        curve = pr_curves(m, k)["a"]
        got = {col: np.array([float(r[col]) for r in by_t[t]]) for col in ("score", "tp", "fp", "recall", "precision")}
        for col in got:
            np.testing.assert_array_equal(got[col], curve[col])  # lossless: the very arrays the AP integrates
        np.testing.assert_allclose(got["recall"], np.array(expected[t][0]) / 3, atol=1e-12)
        np.testing.assert_allclose(got["precision"], expected[t][1], atol=1e-12)
        np.testing.assert_array_equal(got["score"], [0.9, 0.8, 0.7, 0.6])
        alone = eval_dota(dets, labels, iou_threshold=float(t))
        assert (got["recall"][-1], got["precision"][-1]) == (alone["recall"]["a"], alone["precision"]["a"])


def confusion_case() -> tuple[dict, dict]:
    objects = [box(0, 0, 30, 10), box(100, 0, 130, 10), box(200, 0, 230, 10), box(300, 0, 330, 10)]
    objects.append(box(400, 0, 430, 10))
    labels = {"I": DotaLabels(np.array(objects, dtype=float), ["a", "a", "b", "b", "a"], [0, 0, 0, 1, 0])}
    dets = dets_of(
        [
            ("a", "I", 0.9, objects[0]),  # a0 -> a
            ("b", "I", 0.8, objects[1]),  # a1 -> b (IoU 1)
            ("a", "I", 0.7, box(103, 0, 133, 10)),  # on a1 too (IoU 0.82), not its best: counted nowhere
            ("b", "I", 0.6, objects[2]),  # b0 -> b
            ("a", "I", 0.5, objects[3]),  # on the difficult b1: counted nowhere
            ("b", "I", 0.4, box(1000, 1000, 1030, 1010)),  # on nothing: background -> b
            ("a", "I", 0.1, box(2000, 2000, 2030, 2010)),  # on nothing, below the score threshold
        ]
    )  # a2 has no detection: a -> background
    return labels, dets


def test_confusion_matrix_by_hand(tmp_path: Path):
    labels, dets = confusion_case()
    m = match_detections(dets, labels)
    assert m.classes == ["a", "b"]
    #                              a  b  background   (predicted)
    expected = np.array([[1, 1, 1], [0, 1, 0], [0, 1, 0]])  # rows: true a, true b, background
    np.testing.assert_array_equal(confusion_matrix(m, 0.5, 0.25), expected)
    expected[2, 0] = 1  # the 0.1 detection on nothing joins at a lower score threshold
    np.testing.assert_array_equal(confusion_matrix(m, 0.5, 0.05), expected)
    expected[2, 0] = 2  # at IoU 0.9 the 0.82 overlap no longer counts: that detection is on background too
    np.testing.assert_array_equal(confusion_matrix(m, 0.9, 0.05), expected)
    expected[2, 0] = 1
    write_plots(tmp_path, m, confusion_score=0.05)
    lines = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert lines == ["true\\predicted,a,b,background", "a,1,1,1", "b,0,1,0", "background,1,1,0"]
    assert cv2.imread(str(tmp_path / "confusion_matrix.png")).shape[2] == 3


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(ROOT / "tools" / "evaluate.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_evaluate_tool_range_sizes_plots_zip(samples, dota_samples: Path, tmp_path: Path):
    labels, dets = samples
    write_task1(tmp_path / "det", dets)
    out, plots, sub = tmp_path / "r.json", tmp_path / "plots", tmp_path / "sub.zip"
    done = _run_tool(
        "--dets", str(tmp_path / "det"), "--labels", str(dota_samples), "--iou-thr", "0.5:0.95:0.05", "--sizes",
        "--json", str(out), "--plots", str(plots), "--zip", str(sub), "--classes", "dota1.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    expected = eval_dota(tmp_path / "det", dota_samples / "labelTxt", iou_threshold=COCO_RANGE, sizes=True)
    assert result == json.loads(json.dumps(expected))
    assert {"mAP", "mAP_by_iou", "mAP50", "mAP75", "by_iou", "sizes"} <= set(result)
    assert result["by_iou"]["0.75"]["AP"] == eval_dota(tmp_path / "det", dota_samples / "labelTxt", iou_thr=0.75)["AP"]
    last = done.stdout.splitlines()[-1]
    assert last.startswith("mAP by object size") and f"{expected['sizes']['small']['mAP']:.4f}" in last
    assert f"{expected['mAP']:.4f}; mAP50 {expected['mAP50']:.4f}; mAP75 {expected['mAP75']:.4f}" in done.stdout
    assert {"pr_ship.csv", "pr_ship.png", "confusion_matrix.png"} <= {p.name for p in plots.iterdir()}
    with zipfile.ZipFile(sub) as archive:
        assert len(archive.namelist()) == 16 and "Task1_container-crane.txt" in archive.namelist()
    # one threshold: the output of before (table, JSON keys)
    single = _run_tool("--dets", str(tmp_path / "det"), "--labels", str(dota_samples), "--json", str(out))
    assert single.returncode == 0 and single.stdout.splitlines()[-1].startswith("mAP (voc07, IoU > 0.5, ")
    keys = {"mAP", "AP", "recall", "precision", "num_gt", "num_dets", "metric", "iou_thr"}
    assert set(json.loads(out.read_text())) == keys


def test_evaluate_tool_zip_alone_and_bad_flags(tmp_path: Path, capsys):
    main = runpy.run_path(str(ROOT / "tools" / "evaluate.py"))["main"]
    write_task1(tmp_path / "det", {"plane": Task1Detections(["P1"], [0.5], [box(0, 0, 4, 4)])})
    assert main(["--dets", str(tmp_path / "det"), "--zip", str(tmp_path / "s.zip"), "--classes", "dota1.0"]) == 0
    assert capsys.readouterr().out == ""  # no labels: packaging only
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        assert len(archive.namelist()) == 15 and archive.read("Task1_plane.txt") == b"P1 0.5 0 0 4 0 4 4 0 4\n"
    for args, message in [
        (["--zip", str(tmp_path / "t.zip")], "error: --zip needs --classes"),
        ([], "error: --labels is required"),
        (["--zip", str(tmp_path / "t.zip"), "--classes", "dota1.0", "--sizes"], "error: --sizes, --plots and --json"),
        (["--labels", str(tmp_path), "--iou-thr", "0.5:1.0:0.25"], "error: --iou-threshold must be in [0, 1), got 1.0"),
        (["--labels", str(tmp_path), "--confusion-score", "2"], "error: --confusion-score must be in [0, 1], got 2.0"),
    ]:
        assert main(["--dets", str(tmp_path / "det"), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "t.zip").exists()


def test_written_labels_round_trip_through_fast_reader(tmp_path: Path):
    """The evaluation reads folders through the bulk readers: a labelTxt folder written here scores as in memory."""
    labels, dets = size_case()
    write_dota_labels(tmp_path / "labelTxt" / "I.txt", labels["I"])
    write_task1(tmp_path / "det", dets)
    assert eval_dota(tmp_path / "det", tmp_path, sizes=True) == eval_dota(dets, labels, sizes=True)
