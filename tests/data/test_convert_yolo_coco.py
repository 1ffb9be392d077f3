"""YOLO-OBB and rotated COCO <-> DOTA: hand-computed fixtures, round trips, class-name files, malformed input (strict
and lenient) and tools/convert.py. Round trips keep the polygons' point order (YOLO writes the DOTA corners as they
are; COCO keeps the polygon as the segmentation), so polygons are compared row by row, in order."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml

from rotated_ddetr.data.convert.class_names import read_class_names
from rotated_ddetr.data.convert.coco_rotated import read_coco_rotated, write_coco_rotated
from rotated_ddetr.data.convert.common import ConvertError, write_dota_dataset
from rotated_ddetr.data.convert.yolo_obb import read_yolo_obb, write_yolo_obb
from rotated_ddetr.data.dota import DotaLabels, read_dota_labels, write_dota_labels
from tests.stand_ins import write_image, write_text

ROOT = Path(__file__).resolve().parents[2]
TOOL = runpy.run_path(str(ROOT / "tools" / "convert.py"))["main"]
S3 = math.sqrt(3.0)


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    """images/a.png (200 x 100 px) with two objects, images/b.png (64 x 64 px) without a label file."""
    write_image(tmp_path / "images" / "a.png", 200, 100)
    write_image(tmp_path / "images" / "b.png", 64, 64)
    write_text(tmp_path / "labels" / "a.txt", "0 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4\n\n1 0.5 0 1 0 1 1 0.5 1\n")
    write_text(tmp_path / "classes.txt", "plane\nship\n")
    return tmp_path


def test_yolo_lines_by_hand(yolo: Path):
    samples, report = read_yolo_obb(yolo / "images", yolo / "labels", ["plane", "ship"])
    assert [s.image.name for s in samples] == ["a.png", "b.png"] and report.skipped == []
    a, b = samples[0].labels, samples[1].labels
    # x * 200, y * 100: (0.1, 0.2) -> (20, 20), (0.3, 0.2) -> (60, 20), ...; the second object is the right half
    np.testing.assert_allclose(a.polygons, [[20, 20, 60, 20, 60, 40, 20, 40], [100, 0, 200, 0, 200, 100, 100, 100]],
                               atol=1e-9)  # fmt: skip
    assert a.classes == ["plane", "ship"] and a.difficult.tolist() == [0, 0]
    assert len(b) == 0  # no label file: no objects
    unnamed, _ = read_yolo_obb(yolo / "images", yolo / "labels")
    assert unnamed[0].labels.classes == ["0", "1"]  # without class names, the ids name the classes


def test_class_name_files(tmp_path: Path):
    listed = write_text(tmp_path / "list.yaml", "path: x\nnames: [plane, storage tank]\n")
    mapped = write_text(tmp_path / "map.yml", "names:\n  0: plane\n  1: ship\n  2: 'storage  tank'\n")
    lines = write_text(tmp_path / "names.txt", "plane\r\nship\r\n\r\n")
    assert read_class_names(listed) == ["plane", "storage-tank"]  # one DOTA token per name
    assert read_class_names(mapped) == ["plane", "ship", "storage-tank"]
    assert read_class_names(lines) == ["plane", "ship"]  # trailing blank lines ignored
    with pytest.raises(ConvertError, match=r"gap\.yaml:names: expected the ids 0\.\.1, got \['0', '2'\]"):
        read_class_names(write_text(tmp_path / "gap.yaml", "names: {0: a, 2: b}\n"))
    with pytest.raises(ConvertError, match=r"blank\.txt:2: empty class name"):
        read_class_names(write_text(tmp_path / "blank.txt", "a\n\nb\n"))
    with pytest.raises(ConvertError, match=r"twice\.txt:3: class 'a' repeats id 0"):
        read_class_names(write_text(tmp_path / "twice.txt", "a\nb\na\n"))
    with pytest.raises(ConvertError, match=r"bad\.yaml:2: not valid YAML"):
        read_class_names(write_text(tmp_path / "bad.yaml", "names:\n\t- a\n"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0 0.1 0.2 0.3 0.2 0.3 0.4 0.1", r"a\.txt:2: expected 9 fields \(class_index x1 y1 \.\.\. x4 y4, normal"),
        ("0 0.1 0.2 0.3 x 0.3 0.4 0.1 0.4", r"a\.txt:2: non-numeric coordinate 'x'"),
        ("2 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4", r"a\.txt:2: class index 2 out of range \(the class list has 2 names"),
        ("-1 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4", r"a\.txt:2: class index '-1' is not a whole number >= 0"),
        ("0 20 20 60 20 60 40 20 40", r"a\.txt:2: coordinate 20 is not a normalised coordinate"),
        ("0 0.1 0.2 0.3 0.2 0.3 nan 0.1 0.4", r"a\.txt:2: coordinate nan is not a normalised coordinate"),
    ],
)  # fmt: skip
def test_malformed_yolo_lines(yolo: Path, line: str, expected: str):
    write_text(yolo / "labels" / "a.txt", f"0 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4\n{line}\n")
    with pytest.raises(ConvertError, match=expected):
        read_yolo_obb(yolo / "images", yolo / "labels", ["plane", "ship"])
    samples, report = read_yolo_obb(yolo / "images", yolo / "labels", ["plane", "ship"], lenient=True)
    assert len(report.skipped) == 1 and "a.txt:2:" in report.skipped[0]
    np.testing.assert_allclose(samples[0].labels.polygons, [[20, 20, 60, 20, 60, 40, 20, 40]], atol=1e-9)


def test_yolo_label_without_image(yolo: Path):
    write_text(yolo / "labels" / "c.txt", "0 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4\n")
    write_text(yolo / "labels" / "classes.txt", "plane\nship\n")  # labelImg's class list is no label file
    with pytest.raises(ConvertError, match=r"c\.txt: no image c\.\* in "):
        read_yolo_obb(yolo / "images", yolo / "labels", ["plane", "ship"])
    samples, report = read_yolo_obb(yolo / "images", yolo / "labels", ["plane", "ship"], lenient=True)
    assert len(samples) == 2 and len(report.skipped) == 1


@pytest.fixture
def dota(tmp_path: Path) -> Path:
    """A DOTA root: p1.png (300 x 200 px) with general quadrilaterals (fractional, difficult 1 and 2), p2.png
    (128 x 96 px) with one tall rectangle, p3.png without a label file."""
    root = tmp_path / "dota"
    write_image(root / "images" / "p1.png", 300, 200)
    write_image(root / "images" / "p2.png", 128, 96)
    write_image(root / "images" / "p3.png", 32, 32)
    write_dota_labels(root / "labelTxt" / "p1.txt", DotaLabels(
        [[20, 20, 60, 20, 60, 40, 20, 40], [110.25, 50.5, 180.75, 62.125, 170.5, 120.0, 101.0, 99.5],
         [250, 150, 290.5, 160, 280, 195.25, 245, 180]],
        ["plane", "ship", "storage-tank"], [0, 1, 2]))  # fmt: skip
    write_dota_labels(root / "labelTxt" / "p2.txt", DotaLabels([[20, 20, 40, 20, 40, 60, 20, 60]], ["ship"], [0]))
    return root


def _dota_labels(root: Path) -> dict[str, DotaLabels]:
    return {p.stem: read_dota_labels(p) for p in sorted((root / "labelTxt").glob("*.txt"))}


def test_dota_to_yolo_to_dota(dota: Path, tmp_path: Path):
    report = write_yolo_obb(dota, tmp_path / "yolo")
    assert (report.images, report.objects, report.skipped) == (3, 4, [])
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data == {"path": str((tmp_path / "yolo").resolve()), "train": "images", "val": "images",
                    "names": {0: "plane", 1: "ship", 2: "storage-tank"}}  # fmt: skip
    # p2: x / 128, y / 96: 20 / 128 = 0.15625, 40 / 128 = 0.3125, 20 / 96 = 0.208333..., 60 / 96 = 0.625
    values = (tmp_path / "yolo" / "labels" / "p2.txt").read_text().split()
    assert values[0] == "1"
    np.testing.assert_allclose(list(map(float, values[1:])), [0.15625, 20 / 96, 0.3125, 20 / 96, 0.3125, 0.625,
                                                              0.15625, 0.625], rtol=1e-15)  # fmt: skip
    assert (tmp_path / "yolo" / "labels" / "p3.txt").read_text() == ""
    assert (tmp_path / "yolo" / "images" / "p1.png").resolve() == (dota / "images" / "p1.png").resolve()
    samples, back = read_yolo_obb(tmp_path / "yolo" / "images", tmp_path / "yolo" / "labels",
                                  read_class_names(tmp_path / "yolo" / "data.yaml"))  # fmt: skip
    write_dota_dataset(samples, tmp_path / "again", report=back)
    before, after = _dota_labels(dota), _dota_labels(tmp_path / "again")
    assert sorted(after) == ["p1", "p2", "p3"] and len(after["p3"]) == 0
    for name, labels in before.items():
        np.testing.assert_allclose(after[name].polygons, labels.polygons, atol=0.01)
        assert after[name].classes == labels.classes
        assert after[name].difficult.tolist() == [0] * len(labels)  # YOLO has no difficult flag


def test_yolo_writer_clips_to_the_image(tmp_path: Path):
    write_image(tmp_path / "d" / "images" / "e.png", 100, 50)
    write_dota_labels(
        tmp_path / "d" / "labelTxt" / "e.txt", DotaLabels([[-10, 5, 110, 5, 110, 60, -10, 60]], ["car"], [0])
    )
    with pytest.warns(UserWarning, match="1 object"):
        write_yolo_obb(tmp_path / "d", tmp_path / "y")
    assert (tmp_path / "y" / "labels" / "e.txt").read_text() == "0 0 0.1 1 0.1 1 1 0 1\n"
    write_yolo_obb(tmp_path / "d", tmp_path / "y2", clip=False)
    assert (tmp_path / "y2" / "labels" / "e.txt").read_text() == "0 -0.1 0.1 1.1 0.1 1.1 1.2 -0.1 1.2\n"


def test_yolo_writer_unknown_class(dota: Path, tmp_path: Path):
    with pytest.raises(ConvertError, match=r"p1\.txt: object 3: class 'storage-tank' is not in the class list"):
        write_yolo_obb(dota, tmp_path / "y", classes=["plane", "ship"])
    report = write_yolo_obb(dota, tmp_path / "y", classes=["ship", "plane"], lenient=True)
    assert (report.objects, len(report.skipped)) == (3, 1)
    assert (tmp_path / "y" / "labels" / "p2.txt").read_text().startswith("0 ")  # ship is id 0 in the given list


def _coco(tmp_path: Path, annotations: list, **extra) -> Path:
    write_image(tmp_path / "imgs" / "c.png", 200, 100)
    data = {"images": [{"id": 7, "file_name": "c.png", "width": 200, "height": 100}], "annotations": annotations,
            "categories": [{"id": 1, "name": "plane"}, {"id": 2, "name": "small vehicle"}]} | extra  # fmt: skip
    return write_text(tmp_path / "ann.json", json.dumps(data, indent=1))


def test_coco_bboxes_by_hand(tmp_path: Path):
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [50, 40, 20, 10, 90], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [100, 50, 40, 20, 30], "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [50, 40, 20, 10, 90], "difficult": 2,
         "segmentation": [[45, 30, 55, 30, 55, 50, 45, 50]]},  # the same rectangle, starting at another corner
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [50, 40, 20, 10, 90],
         "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},  # disagrees with the bbox: ignored
    ]  # fmt: skip
    samples, report = read_coco_rotated(tmp_path / "imgs", _coco(tmp_path, annotations))
    labels = samples[0].labels
    # detectron2's rule (rotated_boxes.py): 90 deg CCW turns the w-vector (20 px along +x) to point up (-y), so
    # A = (cx - h/2, cy + w/2) = (45, 50), B = (45, 30), C = (55, 30), D = (55, 50).
    # 30 deg CCW: w-vector 20 * (cos 30, -sin 30) = (10 sqrt3, -10), h-vector 10 * (sin 30, cos 30) = (5, 5 sqrt3):
    # A = c - w - h, B = c + w - h, C = c + w + h, D = c - w + h around c = (100, 50).
    expected = [
        [45, 50, 45, 30, 55, 30, 55, 50],
        [95 - 10 * S3, 60 - 5 * S3, 95 + 10 * S3, 40 - 5 * S3, 105 + 10 * S3, 40 + 5 * S3, 105 - 10 * S3, 60 + 5 * S3],
        [45, 30, 55, 30, 55, 50, 45, 50],
        [45, 50, 45, 30, 55, 30, 55, 50],
    ]
    np.testing.assert_allclose(labels.polygons, expected, atol=1e-9)
    assert labels.classes == ["plane", "small-vehicle", "plane", "plane"]
    assert labels.difficult.tolist() == [0, 1, 2, 0]  # iscrowd 1 -> difficult 1; an explicit key wins
    assert report.skipped == []


@pytest.mark.parametrize(
    ("annotation", "extra", "expected"),
    [
        ({"category_id": 9}, {}, r"ann\.json:annotations\[1\]: unknown category_id 9"),
        ({"image_id": 8}, {}, r"ann\.json:annotations\[1\]: unknown image_id 8"),
        ({"bbox": [1, 2, 3, 4]}, {}, r"annotations\[1\]: expected `bbox` as 5 numbers \[cx, cy, w, h, angle_degrees\]"),
        ({"bbox": [1, 2, 3, 4, "a"]}, {}, r"annotations\[1\]: expected `bbox` as 5 numbers"),
        ({"difficult": 3}, {}, r"annotations\[1\]: `difficult` must be one of \[0, 1, 2\], got 3"),
        ({}, {"images": [{"id": 7, "file_name": "c.png", "width": 100, "height": 100}]},
         r"ann\.json:images\[0\]: 100x100 in the json, but .*c\.png is 200x100"),
        ({}, {"images": [{"id": 7, "file_name": "none.png", "width": 200, "height": 100}]},
         r"ann\.json:images\[0\]: no image file .*none\.png"),
        ({}, {"categories": [{"id": 1, "name": "plane"}, {"id": 2}]},
         r"ann\.json:categories\[1\]: expected a `name` string"),
    ],
)  # fmt: skip
def test_malformed_coco(tmp_path: Path, annotation: dict, extra: dict, expected: str):
    good = {"id": 1, "image_id": 7, "category_id": 1, "bbox": [50, 40, 20, 10, 90]}
    path = _coco(tmp_path, [good, good | {"id": 2, "category_id": 2} | annotation], **extra)
    with pytest.raises(ConvertError, match=expected):
        read_coco_rotated(tmp_path / "imgs", path)
    samples, report = read_coco_rotated(tmp_path / "imgs", path, lenient=True)
    assert len(report.skipped) == 1, report.skipped  # a skipped image or category takes its annotations with it
    assert sum(len(s.labels) for s in samples) == (0 if "images" in extra else 1)


def test_coco_bad_json_and_unknown_class(tmp_path: Path):
    path = write_text(tmp_path / "bad.json", '{"images": [\n  {"id": 1,}\n]}\n')
    with pytest.raises(ConvertError, match=r"bad\.json:2: not valid JSON"):
        read_coco_rotated(tmp_path, path)
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [50, 40, 20, 10, 0]}])
    with pytest.raises(ConvertError, match=r"ann\.json:categories\[1\]: unknown class 'small-vehicle'"):
        read_coco_rotated(tmp_path / "imgs", path, classes=["plane"])


def test_dota_to_coco_to_dota(dota: Path, tmp_path: Path):
    report = write_coco_rotated(dota, tmp_path / "coco")
    assert (report.images, report.objects, report.skipped) == (3, 4, [])
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert data["categories"] == [
        {"id": 1, "name": "plane"},
        {"id": 2, "name": "ship"},
        {"id": 3, "name": "storage-tank"},
    ]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in data["images"]] == [
        (1, "p1.png", 300, 200), (2, "p2.png", 128, 96), (3, "p3.png", 32, 32)]  # fmt: skip
    first, tall = data["annotations"][0], data["annotations"][3]
    # 20 20 60 20 60 40 20 40: a 40 x 20 box at (40, 30), angle 0; the tall 20 x 40 box at (30, 40) is canonically
    # w 40, h 20 at -90 deg ours (clockwise) = +90 deg detectron2 (counter-clockwise)
    np.testing.assert_allclose(first["bbox"], [40, 30, 40, 20, 0], atol=1e-9)
    np.testing.assert_allclose(tall["bbox"], [30, 40, 40, 20, 90], atol=1e-9)
    assert (first["area"], first["iscrowd"], first["image_id"], first["category_id"]) == (pytest.approx(800), 0, 1, 1)
    assert [a["difficult"] for a in data["annotations"]] == [0, 1, 2, 0]
    samples, back = read_coco_rotated(tmp_path / "coco" / "images", tmp_path / "coco" / "annotations.json")
    write_dota_dataset(samples, tmp_path / "again", report=back)
    before, after = _dota_labels(dota), _dota_labels(tmp_path / "again")
    assert sorted(after) == ["p1", "p2", "p3"] and len(after["p3"]) == 0
    for name, labels in before.items():
        np.testing.assert_allclose(after[name].polygons, labels.polygons, atol=0.01)
        assert (after[name].classes, after[name].difficult.tolist()) == (labels.classes, labels.difficult.tolist())
    for entry in data["annotations"]:  # without segmentations the polygons are the bboxes' rectangles
        entry.pop("segmentation")
    write_text(tmp_path / "bare.json", json.dumps(data))
    samples, _ = read_coco_rotated(tmp_path / "coco" / "images", tmp_path / "bare.json")
    np.testing.assert_allclose(samples[1].labels.polygons, [[20, 60, 20, 20, 40, 20, 40, 60]], atol=1e-9)


def test_tool_yolo_to_dota_and_back(yolo: Path, tmp_path: Path, capsys):
    argv = ["--from", "yolo-obb", "--images", str(yolo / "images"), "--labels", str(yolo / "labels"),
            "--classes", str(yolo / "classes.txt"), "--dst", str(tmp_path / "d")]  # fmt: skip
    assert TOOL(argv) == 0
    assert capsys.readouterr().out.startswith("converted 2 images, 2 objects, 0 skipped -> ")
    labels = (tmp_path / "d" / "labelTxt" / "a.txt").read_text()
    assert labels == "20 20 60 20 60 40 20 40 plane 0\n100 0 200 0 200 100 100 100 ship 0\n"
    assert TOOL(["--to", "coco-rotated", "--src", str(tmp_path / "d"), "--dst", str(tmp_path / "c"), "--copy"]) == 0
    assert not (tmp_path / "c" / "images" / "a.png").is_symlink()
    assert len(json.loads((tmp_path / "c" / "annotations.json").read_text())["annotations"]) == 2
    write_text(yolo / "labels" / "a.txt", "0 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4\n0 0.1 0.2\n")
    assert TOOL(argv) == 1
    err = capsys.readouterr().err
    assert err == f"convert: error: {yolo / 'labels' / 'a.txt'}:2: expected 9 fields (class_index x1 y1 ... x4 y4, " \
        "normalised), got 3\n"  # fmt: skip
    assert TOOL([*argv, "--lenient"]) == 0
    captured = capsys.readouterr()
    assert "converted 2 images, 1 objects, 1 skipped" in captured.out and "convert: skipped: " in captured.err


def test_tool_argument_errors(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TOOL(["--from", "yolo-obb", "--images", str(tmp_path), "--labels", str(tmp_path), "--dst", str(tmp_path)])
    assert exit_info.value.code == 2 and "--from yolo-obb needs --classes FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TOOL(["--to", "yolo-obb", "--dst", str(tmp_path)])
    assert "convert: error: --to needs --src" in capsys.readouterr().err
