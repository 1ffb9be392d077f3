"""DOTA label / Task1 I/O: the real samples, format corner cases, error messages, lenient mode and round trips."""

import collections
import warnings
from pathlib import Path

import numpy as np
import pytest

from rotated_ddetr.data import (
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DOTA_V2_0_CLASSES,
    DotaFormatError,
    DotaLabels,
    Task1Detections,
    dota_classes,
    read_dota_labels,
    read_task1,
    write_dota_labels,
    write_task1,
)
from rotated_ddetr.data.dota import SceneResult, format_numbers, read_scene_result, write_scene_result


def _independent_count(path: Path) -> tuple[collections.Counter, collections.Counter]:
    """Per-class and per-difficult counts from a plain split of the text (no shared code with the parser)."""
    classes, difficult = collections.Counter(), collections.Counter()
    for raw in path.read_bytes().decode().split("\r\n"):
        fields = raw.split(" ")
        if len(fields) == 10:
            classes[fields[8]] += 1
            difficult[int(fields[9])] += 1
    return classes, difficult


def test_real_samples_match_an_independent_count(dota_samples: Path):
    files = sorted((dota_samples / "labelTxt").glob("*.txt"))
    assert [f.stem for f in files] == ["P0706", "P0770", "P1088", "P1234", "P1888", "P2598", "P2709"]
    for path in files:
        labels = read_dota_labels(path)
        classes, difficult = _independent_count(path)
        assert collections.Counter(labels.classes) == classes, path.name
        assert collections.Counter(labels.difficult.tolist()) == difficult, path.name
        assert labels.polygons.shape == (len(labels), 8) and labels.polygons.dtype == np.float64
        assert labels.difficult.dtype == np.int64
        slow = read_dota_labels(path, lenient=True)  # the line-by-line parser (the bulk one is skipped when lenient)
        np.testing.assert_array_equal(slow.polygons, labels.polygons)
        assert (slow.classes, slow.difficult.tolist()) == (labels.classes, labels.difficult.tolist())
        assert (slow.image_source, slow.gsd) == (labels.image_source, labels.gsd)


def test_p0706_by_hand(dota_samples: Path):
    labels = read_dota_labels(dota_samples / "labelTxt" / "P0706.txt")
    # 538 lines = 2 header lines + 536 objects (the data README's "538 objects" counts the header lines too)
    assert len(labels) == 536
    assert collections.Counter(labels.classes) == {"ship": 531, "harbor": 5}
    assert int(labels.difficult.sum()) == 6 and set(labels.difficult.tolist()) == {0, 1}
    assert labels.image_source == "GoogleEarth" and labels.gsd == pytest.approx(0.255589285596, abs=1e-15)
    # first object line: "1054 1028 1063 1011 1111 1040 1112 1062 ship 1"
    np.testing.assert_array_equal(labels.polygons[0], [1054, 1028, 1063, 1011, 1111, 1040, 1112, 1062])
    assert labels.classes[0] == "ship" and labels.difficult[0] == 1
    # last object line: "... harbor 0"
    assert labels.classes[-1] == "harbor" and labels.difficult[-1] == 0


def test_other_samples_by_hand(dota_samples: Path):
    p1234 = read_dota_labels(dota_samples / "labelTxt" / "P1234.txt")
    assert (p1234.image_source, p1234.gsd, len(p1234)) == ("GF", 1.0, 144)
    assert collections.Counter(p1234.classes) == {"storage-tank": 110, "ship": 24, "bridge": 6, "harbor": 4}
    assert int((p1234.difficult == 1).sum()) == 44
    np.testing.assert_array_equal(p1234.polygons[2], [2604, 3931, 2614, 3931, 2614, 3942, 2604, 3942])
    p1888 = read_dota_labels(dota_samples / "labelTxt" / "P1888.txt")
    assert collections.Counter(p1888.classes) == {"large-vehicle": 50, "small-vehicle": 14}


def test_format_corner_cases(tmp_path: Path):
    path = tmp_path / "x.txt"
    text = (
        "imagesource:GoogleEarth\r\ngsd:null\r\n\r\n"
        "1 2 3 4 5 6 7 8 small-vehicle 1 \r\n"  # trailing space
        "   \r\n"  # blank (spaces only)
        "10.5 20 30 40 50 60 70 80 ground-track-field\r\n"  # 9 fields: difficult 0
        "0 0 1 0 1 1 0 1 container-crane 2\r\n"
    )
    path.write_bytes(text.encode())
    labels = read_dota_labels(path)
    assert labels.image_source == "GoogleEarth" and labels.gsd is None
    assert labels.classes == ["small-vehicle", "ground-track-field", "container-crane"]
    assert labels.difficult.tolist() == [1, 0, 2]
    assert labels.polygons[1, 0] == 10.5


def test_no_header_and_empty_file(tmp_path: Path):
    (tmp_path / "a.txt").write_text("1 2 3 4 5 6 7 8 plane 0\n")
    (tmp_path / "b.txt").write_text("")
    a, b = read_dota_labels(tmp_path / "a.txt"), read_dota_labels(tmp_path / "b.txt")
    assert (a.image_source, a.gsd, len(a)) == (None, None, 1)
    assert len(b) == 0 and b.polygons.shape == (0, 8) and b.difficult.shape == (0,)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1 2 3 4 5 6 7 plane", "expected 9 or 10 fields (x1 y1 ... x4 y4 class [difficult]), got 8"),
        ("1 2 3 4 5 6 7 plane 0", "non-numeric coordinate 'plane'"),
        ("1 2 3 4 5 6 7 8 plane 0 extra", "got 11"),
        ("1 2 3 x4 5 6 7 8 plane 0", "non-numeric coordinate 'x4'"),
        ("1 2 3 4 5 6 7 nan plane 0", "non-finite coordinate 'nan'"),
        ("1 2 3 4 5 6 7 8 plane 3", "bad difficult flag '3'"),
        ("1 2 3 4 5 6 7 8 plane easy", "bad difficult flag 'easy'"),
    ],
)
def test_errors_name_file_line_and_fault(tmp_path: Path, line: str, problem: str):
    path = tmp_path / "bad.txt"
    path.write_text(f"imagesource:x\ngsd:0.5\n{line}\n1 2 3 4 5 6 7 8 plane 0\n")
    with pytest.raises(DotaFormatError) as info:
        read_dota_labels(path)
    assert str(info.value).startswith(f"{path}:3: ") and problem in str(info.value)
    assert (info.value.path, info.value.line_no) == (str(path), 3)
    assert isinstance(info.value, ValueError)


def test_bad_gsd_is_an_error(tmp_path: Path):
    path = tmp_path / "g.txt"
    path.write_text("gsd:abc\n")
    with pytest.raises(DotaFormatError, match=r"g\.txt:1: non-numeric gsd 'abc'"):
        read_dota_labels(path)


def test_lenient_mode_counts_and_warns_once(tmp_path: Path):
    path = tmp_path / "l.txt"
    path.write_text("1 2 3 4 5 6 7 8 plane 0\n1 2 3 plane\n1 2 3 4 5 6 7 8 ship 1\n1 2 3 4 5 6 7 y ship 0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = read_dota_labels(path, lenient=True)
    assert labels.classes == ["plane", "ship"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 malformed line(s)" in message and f"{path}:2:" in message


def test_labels_round_trip_compact_and_exact(tmp_path: Path):
    polygons = np.array([[1054, 1028, 1063, 1011, 1111, 1040, 1112, 1062], [0.1, 1 / 3, 2.5, -7, 1e-7, 3e15, 0, 1]])
    labels = DotaLabels(polygons, ["ship", "small-vehicle"], [1, 2], "GoogleEarth", 0.255589285596)
    path = tmp_path / "sub" / "P1.txt"
    write_dota_labels(path, labels)
    lines = path.read_text().splitlines()
    assert lines[:3] == [
        "imagesource:GoogleEarth",
        "gsd:0.255589285596",
        "1054 1028 1063 1011 1111 1040 1112 1062 ship 1",
    ]
    assert "e" not in lines[3].replace("small-vehicle", "")
    back = read_dota_labels(path)
    np.testing.assert_array_equal(back.polygons, labels.polygons)  # bit-exact
    assert back.classes == labels.classes and back.difficult.tolist() == [1, 2]
    assert (back.image_source, back.gsd) == ("GoogleEarth", 0.255589285596)
    write_dota_labels(path, labels, header=False)
    assert path.read_text().splitlines()[0].endswith("ship 1")
    assert not list(path.parent.glob(".*.tmp"))  # atomic writer left no temporary file


def test_format_numbers_is_shortest_and_lossless():
    values = np.array([12.0, -3.0, 12.5, 0.1, 1e-7, 1 / 3, 1e20, -0.0])
    texts = format_numbers(values)
    assert texts[:5] == ["12", "-3", "12.5", "0.1", "0.0000001"]
    assert [float(t) for t in texts] == values.tolist()
    assert all("e" not in t for t in texts)


def test_rboxes_of_labels():
    # a 40 x 10 axis-aligned rectangle centred at (120, 105): canonical le90 -> w >= h, angle 0
    labels = DotaLabels(np.array([[100, 100, 140, 100, 140, 110, 100, 110]]), ["plane"], [0])
    np.testing.assert_allclose(labels.rboxes(), [[120, 105, 40, 10, 0]], atol=1e-9)


def test_class_lists():
    assert len(DOTA_V1_0_CLASSES) == 15 and DOTA_V1_0_CLASSES[0] == "plane" and DOTA_V1_0_CLASSES[-1] == "helicopter"
    assert DOTA_V1_5_CLASSES == (*DOTA_V1_0_CLASSES, "container-crane")
    assert DOTA_V2_0_CLASSES[-2:] == ("airport", "helipad") and len(DOTA_V2_0_CLASSES) == 18
    assert dota_classes("1.5") == DOTA_V1_5_CLASSES and dota_classes("v2.0") == DOTA_V2_0_CLASSES
    with pytest.raises(ValueError, match="unknown DOTA version"):
        dota_classes("3.0")


def test_task1_round_trip(tmp_path: Path):
    dets = {
        "plane": Task1Detections(["P1", "P2"], [0.9, 0.123456789], [[1, 2, 3, 4, 5, 6, 7, 8], [0.5] * 8]),
        "small-vehicle": Task1Detections(["P1"], [1e-6], [[10, 20, 30, 40, 50, 60, 70, 80.25]]),
        "ship": Task1Detections([], [], np.zeros((0, 8))),
    }
    write_task1(tmp_path / "sub", dets)
    files = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert files == ["Task1_plane.txt", "Task1_ship.txt", "Task1_small-vehicle.txt"]
    assert (tmp_path / "sub" / "Task1_plane.txt").read_text().splitlines() == [
        "P1 0.9 1 2 3 4 5 6 7 8",
        "P2 0.123456789 0.5 0.5 0.5 0.5 0.5 0.5 0.5 0.5",
    ]
    assert (tmp_path / "sub" / "Task1_small-vehicle.txt").read_text() == "P1 0.000001 10 20 30 40 50 60 70 80.25\n"
    back = read_task1(tmp_path / "sub")
    assert sorted(back) == ["plane", "ship", "small-vehicle"] and len(back["ship"]) == 0
    for name, d in dets.items():
        assert back[name].image_names == d.image_names
        np.testing.assert_array_equal(back[name].scores, d.scores)
        np.testing.assert_array_equal(back[name].polygons, d.polygons)
    only = read_task1([tmp_path / "sub" / "Task1_plane.txt"])  # explicit files; other classes simply absent
    assert list(only) == ["plane"]


def test_task1_errors(tmp_path: Path):
    path = tmp_path / "Task1_ship.txt"
    path.write_text("P1 0.5 1 2 3 4 5 6 7 8\n\nP1 0.5 1 2 3 4 5 6 7\n")
    with pytest.raises(DotaFormatError, match=r"Task1_ship\.txt:3: expected 10 fields .* got 9"):
        read_task1(tmp_path)
    path.write_text("P1 0.5 1 2 3 4 5 6 7 8\nP1 high 1 2 3 4 5 6 7 8\n")
    with pytest.raises(DotaFormatError, match=r"Task1_ship\.txt:2: non-numeric number 'high'"):
        read_task1(tmp_path)
    path.write_text("P1 0.5 1 2 3 4 5 6 7 8\n\nP1 0.5 1 2 3 inf 5 6 7 8\n")
    with pytest.raises(DotaFormatError, match=r"Task1_ship\.txt:3: non-finite number 'inf'"):
        read_task1(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_task1(tmp_path / "missing")
    (tmp_path / "other.txt").write_text("")
    with pytest.raises(ValueError, match="not a Task1 submission file"):
        read_task1([tmp_path / "other.txt"])


def test_dataclass_shape_checks():
    with pytest.raises(ValueError, match="2 polygons but 1 classes"):
        DotaLabels(np.zeros((2, 8)), ["a"], [0, 0])
    with pytest.raises(ValueError, match="1 image names but 2 scores"):
        Task1Detections(["a"], [0.1, 0.2], np.zeros((1, 8)))
    assert len(DotaLabels(np.zeros((3, 8)), ["a"] * 3, [0] * 3)) == 3


def test_scene_result_file_round_trip_and_errors(tmp_path):
    polygons = np.array([[0.5, 1, 2.25, 3, 4, 5, 6, 7], [10, 20, 30, 20, 30, 40, 10, 40]])
    result = SceneResult(polygons, ["plane", "ship"], np.array([0.875, 0.1]))
    write_scene_result(tmp_path / "s.txt", result)
    assert (tmp_path / "s.txt").read_text() == "0.5 1 2.25 3 4 5 6 7 plane 0.875\n10 20 30 20 30 40 10 40 ship 0.1\n"
    back = read_scene_result(tmp_path / "s.txt")
    assert back.polygons.tolist() == polygons.tolist() and back.classes == result.classes
    assert back.scores.tolist() == [0.875, 0.1]
    (tmp_path / "bad.txt").write_text("0 0 1 0 1 1 0 1 plane 0.5\n\n0 0 1 0 1 1 0 1 plane\n")
    with pytest.raises(DotaFormatError, match=r"bad\.txt:3: expected 10 fields .* got 9"):
        read_scene_result(tmp_path / "bad.txt")


def test_bulk_and_line_readers_agree_on_odd_layouts(tmp_path: Path):
    """The bulk reader (numpy's C reader, for speed) and the line-by-line one (the authority) read the same objects
    from any valid layout; what the bulk one refuses, the authority decides."""
    from rotated_ddetr.data import dota

    body = "1 2 3 4 5 6 7 8 plane 0\n\t10.5  20 30 40\t50 60 70 80 ship 1 \r\n\n 0 0 1e1 0 10 10 0 10 small-vehicle 2\n"
    variants = {
        "plain": body,
        "crlf": body.replace("\n", "\r\n"),
        "no-break spaces": body.replace(" 3 ", "\xa03\u3000"),
        "header": "imagesource:GF\n\ngsd:1\n" + body,
        "bom": "\ufeff" + body,
    }
    path = tmp_path / "x.txt"
    for name, text in variants.items():
        path.write_bytes(text.encode())
        assert dota._fast_labels(path, dota._read_lines(path)) is not None, name  # the bulk reader took it
        fast, slow = read_dota_labels(path), read_dota_labels(path, lenient=True)
        np.testing.assert_array_equal(fast.polygons, slow.polygons)
        assert fast.polygons[1].tolist() == [10.5, 20, 30, 40, 50, 60, 70, 80] and fast.polygons[2, 2] == 10.0
        assert (fast.classes, fast.difficult.tolist()) == (slow.classes, slow.difficult.tolist()), name
        assert fast.classes == ["plane", "ship", "small-vehicle"] and fast.difficult.tolist() == [0, 1, 2]
        assert (fast.image_source, fast.gsd) == (slow.image_source, slow.gsd)
    refused = {  # -> what the line-by-line reader makes of them
        "1 2 3 4 5 6 7 8 plane 0\ngsd:2\n": (["plane"], 2.0),  # a header further down
        "1 2 3 4 5 6 7 8 plane\n1 2 3 4 5 6 7 8 ship 1\n": (["plane", "ship"], None),  # 9 fields: difficult 0
        "1 2 3 4 5 6 7 8 plane 01\n": DotaFormatError,  # a flag other than "0", "1", "2"
        "1 2 3 4 5 6 7 1_0 plane 0\n": (["plane"], None),  # float("1_0") == 10: the authority accepts it
    }
    for text, expected in refused.items():
        path.write_text(text)
        assert dota._fast_labels(path, dota._read_lines(path)) is None, text
        if expected is DotaFormatError:
            with pytest.raises(DotaFormatError, match="bad difficult flag"):
                read_dota_labels(path)
        else:
            labels = read_dota_labels(path)
            assert (labels.classes, labels.gsd) == expected
    task1 = tmp_path / "Task1_ship.txt"
    task1.write_text("P1 0.5 1 2 3 4 5 6 7 8\r\n\r\nP2\t0.25  1 2 3 4 5 6 7 8.5 \n")
    assert dota._bulk_rows(dota._read_lines(task1), dota._TASK1_ROW) is not None
    dets = read_task1([task1])["ship"]
    assert dets.image_names == ["P1", "P2"] and dets.scores.tolist() == [0.5, 0.25]
    assert dets.polygons[1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8.5] and dets.polygons.flags["C_CONTIGUOUS"]
