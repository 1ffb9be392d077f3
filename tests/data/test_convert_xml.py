"""DIOR-R, HRSC2016 and FAIR1M XML -> DOTA: hand-made files with hand-computed polygons, difficult flags, class lists,
malformed files and objects (strict and lenient) and tools/convert.py. Polygons are compared row by row, in order:
DIOR-R and FAIR1M keep the corners as written, HRSC2016 gives them in the rbox convention's order."""

import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from rotated_ddetr.data.convert.common import ConvertError
from rotated_ddetr.data.convert.xml_datasets import read_dior_r, read_fair1m, read_hrsc2016
from tests.stand_ins import write_image, write_text

ROOT = Path(__file__).resolve().parents[2]
TOOL = runpy.run_path(str(ROOT / "tools" / "convert.py"))["main"]
S3 = math.sqrt(3.0)


_DIOR_CORNERS = ("x_left_top", "y_left_top", "x_right_top", "y_right_top", "x_right_bottom", "y_right_bottom",
                 "x_left_bottom", "y_left_bottom")  # fmt: skip


def _dior_object(name: str = "golffield", difficult: str = "0", corners=(10, 20, 50, 20, 50, 40, 10, 40), **tags):
    """A DIOR-R <object> as the dataset writes it; `tags` replace corner texts (None drops the element)."""
    values = dict(zip(_DIOR_CORNERS, map(str, corners), strict=True)) | tags
    box = "".join(f"<{k}>{v}</{k}>" for k, v in values.items() if v is not None)
    return (f"  <object>\n    <type>robndbox</type>\n    <name>{name}</name>\n    <truncated>0</truncated>\n"
            f"    <difficult>{difficult}</difficult>\n    <robndbox>{box}</robndbox>\n    <angle>0</angle>\n"
            "  </object>\n")  # fmt: skip


def _dior_xml(*objects: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n  <filename>a.jpg</filename>\n'
            "  <size><width>64</width><height>48</height><depth>3</depth></size>\n"
            f"{''.join(objects)}</annotation>\n")  # fmt: skip


def _hrsc_object(cx="100", cy="50", w="40", h="20", ang="0.5235987755982988", difficult="0") -> str:
    """An <HRSC_Object>; a field given as None is left out. The default angle is pi/6."""
    fields = {"Class_ID": "100000005", "truncated": "0", "difficult": difficult, "mbox_cx": cx, "mbox_cy": cy,
              "mbox_w": w, "mbox_h": h, "mbox_ang": ang, "header_x": "120", "header_y": "60"}  # fmt: skip
    text = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v is not None)
    return f"      <HRSC_Object>{text}</HRSC_Object>\n"


def _hrsc_xml(*objects: str) -> str:
    return ("<HRSC_Image>\n  <Img_ID>100000001</Img_ID>\n  <Img_SizeWidth>64</Img_SizeWidth>\n"
            f"  <Img_SizeHeight>48</Img_SizeHeight>\n  <HRSC_Objects>\n{''.join(objects)}  </HRSC_Objects>\n"
            "</HRSC_Image>\n")  # fmt: skip


def _fair1m_object(name="Boeing737", points=("10,20", "50,20", "50,40", "10,40", "10,20"), coordinate="pixel"):
    point_text = "".join(f"<point>{p}</point>" for p in points)
    return (f"    <object><coordinate>{coordinate}</coordinate><type>rectangle</type>"
            f"<description>None</description><possibleresult><name>{name}</name></possibleresult>"
            f"<points>{point_text}</points></object>\n")  # fmt: skip


def _fair1m_xml(*objects: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n  <source><filename>a.tif</filename>'
            "<origin>GF2/GF3</origin></source>\n"
            f"  <objects>\n{''.join(objects)}  </objects>\n</annotation>\n")  # fmt: skip


FORMATS = {  # --from choice: (reader, image suffix, file wrapper, a good object)
    "dior-r": (read_dior_r, ".jpg", _dior_xml, _dior_object()),
    "hrsc2016": (read_hrsc2016, ".bmp", _hrsc_xml, _hrsc_object()),
    "fair1m": (read_fair1m, ".tif", _fair1m_xml, _fair1m_object()),
}


def test_dior_r_by_hand(tmp_path: Path):
    write_image(tmp_path / "images" / "00001.jpg", 64, 48)
    write_image(tmp_path / "images" / "00002.jpg", 32, 32)  # no XML: no objects, as many DIOR-R images
    write_text(tmp_path / "labels" / "00001.xml", _dior_xml(
        _dior_object(),
        _dior_object("Expressway-Service-area", "1", (30.5, 2, 60, 17.25, 45, 47, 15.5, 31.75))))  # fmt: skip
    samples, report = read_dior_r(tmp_path / "images", tmp_path / "labels")
    assert [s.image.name for s in samples] == ["00001.jpg", "00002.jpg"] and report.skipped == []
    labels = samples[0].labels
    # left_top, right_top, right_bottom, left_bottom, as written
    np.testing.assert_array_equal(labels.polygons, [[10, 20, 50, 20, 50, 40, 10, 40],
                                                    [30.5, 2, 60, 17.25, 45, 47, 15.5, 31.75]])  # fmt: skip
    assert labels.classes == ["golffield", "expressway-service-area"]  # lowercased, as mmrotate reads them
    assert labels.difficult.tolist() == [0, 1]
    assert len(samples[1].labels) == 0
    # the class list is compared lowercased too
    kept, _ = read_dior_r(tmp_path / "images", tmp_path / "labels", ["golffield", "Expressway-Service-area"])
    assert kept[0].labels.classes == ["golffield", "expressway-service-area"]


def test_hrsc2016_by_hand(tmp_path: Path):
    write_image(tmp_path / "AllImages" / "100000001.bmp", 64, 48)
    write_text(tmp_path / "Annotations" / "100000001.xml", _hrsc_xml(
        _hrsc_object(),
        _hrsc_object("50", "40", "30", "10", "1.5707963267948966", "1")))  # fmt: skip
    samples, report = read_hrsc2016(tmp_path / "AllImages", tmp_path / "Annotations")
    labels = samples[0].labels
    # (100, 50, 40, 20, pi/6): w-vector (w/2 cos a, w/2 sin a) = (10 sqrt3, 10), h-vector (-h/2 sin a, h/2 cos a)
    # = (-5, 5 sqrt3); corners c - w - h = (105 - 10 sqrt3, 40 - 5 sqrt3), c + w - h = (105 + 10 sqrt3,
    # 60 - 5 sqrt3), c + w + h = (95 + 10 sqrt3, 60 + 5 sqrt3), c - w + h = (95 - 10 sqrt3, 40 + 5 sqrt3):
    # the w-axis turns from +x toward +y (down), clockwise on screen.
    # (50, 40, 30, 10, pi/2): w-vector (0, 15), h-vector (-5, 0): (55, 25), (55, 55), (45, 55), (45, 25).
    expected = [
        [105 - 10 * S3, 40 - 5 * S3, 105 + 10 * S3, 60 - 5 * S3, 95 + 10 * S3, 60 + 5 * S3, 95 - 10 * S3, 40 + 5 * S3],
        [55, 25, 55, 55, 45, 55, 45, 25],
    ]
    np.testing.assert_allclose(labels.polygons, expected, atol=1e-9)
    np.testing.assert_allclose(labels.polygons[0, :2], [87.6794919, 31.3397460], atol=1e-6)  # the docstring's numbers
    np.testing.assert_allclose(labels.rboxes()[0], [100, 50, 40, 20, math.pi / 6], atol=1e-9)  # the rbox comes back
    assert labels.classes == ["ship", "ship"] and labels.difficult.tolist() == [0, 1]
    assert report.skipped == []


def test_fair1m_by_hand(tmp_path: Path):
    write_image(tmp_path / "images" / "1.tif", 64, 48)
    write_text(tmp_path / "labelXml" / "1.xml", _fair1m_xml(
        _fair1m_object(),
        _fair1m_object("Small Car", ("30.5, 2.0", "60.0, 17.25", "45.0, 47.0", "15.5, 31.75", "30.5, 2"))))  # fmt: skip
    samples, report = read_fair1m(tmp_path / "images", tmp_path / "labelXml")
    labels = samples[0].labels
    # the first four points, in order; the fifth closes the ring
    np.testing.assert_array_equal(labels.polygons, [[10, 20, 50, 20, 50, 40, 10, 40],
                                                    [30.5, 2, 60, 17.25, 45, 47, 15.5, 31.75]])  # fmt: skip
    assert labels.classes == ["Boeing737", "Small-Car"]  # one DOTA token each
    assert labels.difficult.tolist() == [0, 0] and report.skipped == []
    kept, _ = read_fair1m(tmp_path / "images", tmp_path / "labelXml", classes=["Boeing737", "Small Car"])
    assert kept[0].labels.classes == ["Boeing737", "Small-Car"]


@pytest.mark.parametrize(
    ("fmt", "bad", "classes", "expected"),
    [
        ("dior-r", _dior_object(x_left_top="abc"), None,
         r"a\.xml: object 2: robndbox/x_left_top: 'abc' is not a number"),
        ("dior-r", _dior_object(y_right_bottom=None), None,
         r"a\.xml: object 2: no <robndbox/y_right_bottom> element \(expected a number of pixels\)"),
        ("dior-r", _dior_object().replace("<name>golffield</name>", ""), None,
         r"a\.xml: object 2: no <name> element \(expected the class name\)"),
        ("dior-r", _dior_object(difficult="yes"), None, r"a\.xml: object 2: difficult: 'yes' is not 0 or 1"),
        ("dior-r", _dior_object("ship"), ["golffield"],
         r"a\.xml: object 2: class 'ship' is not in the class list \(1 names\)"),
        ("hrsc2016", _hrsc_object(ang=None), None,
         r"a\.xml: object 2: no <mbox_ang> element \(expected a number \(pixels; mbox_ang in radians\)\)"),
        ("hrsc2016", _hrsc_object(w="wide"), None, r"a\.xml: object 2: mbox_w: 'wide' is not a number"),
        ("hrsc2016", _hrsc_object(h="-3"), None, r"a\.xml: object 2: mbox_w and mbox_h must be >= 0, got 40, -3"),
        ("fair1m", _fair1m_object(points=("10,20", "50,20", "50,40")), None,
         r"a\.xml: object 2: points: 3 <point> elements, expected 5 \(the 4 corners and the first again\)"),
        ("fair1m", _fair1m_object(points=("10,20", "50,20", "50,40", "10,40", "11,20")), None,
         r"a\.xml: object 2: points/point\[5\]: \(11\.0, 20\.0\) does not repeat point\[1\]"),
        ("fair1m", _fair1m_object(points=("10,20", "50;20", "50,40", "10,40", "10,20")), None,
         r"a\.xml: object 2: points/point\[2\]: '50;20' is not 'x,y' \(two numbers\)"),
        ("fair1m", _fair1m_object(points=("10,20", "50,nan", "50,40", "10,40", "10,20")), None,
         r"a\.xml: object 2: points/point\[2\]: 'nan' is not a number"),
        ("fair1m", _fair1m_object(coordinate="geodegree"), None,
         r"a\.xml: object 2: coordinate: 'geodegree', expected 'pixel'"),
        ("fair1m", _fair1m_object("Small Car"), ["Boeing737"], r"a\.xml: object 2: class 'Small-Car' is not in the"),
    ],
)  # fmt: skip
def test_malformed_objects(tmp_path: Path, fmt: str, bad: str, classes, expected: str):
    reader, suffix, wrap, good = FORMATS[fmt]
    write_image(tmp_path / "images" / f"a{suffix}", 64, 48)
    write_text(tmp_path / "labels" / "a.xml", wrap(good, bad))
    with pytest.raises(ConvertError, match=expected):
        reader(tmp_path / "images", tmp_path / "labels", classes)
    samples, report = reader(tmp_path / "images", tmp_path / "labels", classes, lenient=True)
    assert len(report.skipped) == 1 and "a.xml: object 2: " in report.skipped[0]
    assert len(samples) == 1 and len(samples[0].labels) == 1  # the good object stays


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("dior-r", "<annotation>\n  <object>\n    <name>ship</name>\n</annotation>\n",
         r"a\.xml:4: not well-formed XML \(mismatched tag, column \d+\)"),
        ("hrsc2016", "", r"a\.xml:1: not well-formed XML \(no element found"),
        ("fair1m", "<annotation><objects></objects></annotation>\n<annotation/>",
         r"a\.xml:2: not well-formed XML \(junk after document element"),
        ("hrsc2016", _dior_xml(_dior_object()), r"a\.xml: the root element is <annotation>, expected <HRSC_Image>"),
        ("fair1m", _dior_xml(_dior_object()), r"a\.xml: <object> elements, but FAIR1M keeps its objects in "
         r"<annotation>/objects/object"),
        ("dior-r", _fair1m_xml(_fair1m_object()), r"a\.xml: <objects/object> elements, but DIOR-R keeps"),
    ],
)  # fmt: skip
def test_malformed_files(tmp_path: Path, fmt: str, text: str, expected: str):
    reader, suffix, _, _ = FORMATS[fmt]
    write_image(tmp_path / "images" / f"a{suffix}", 64, 48)
    write_image(tmp_path / "images" / f"b{suffix}", 64, 48)
    write_text(tmp_path / "labels" / "a.xml", text)
    with pytest.raises(ConvertError, match=expected):
        reader(tmp_path / "images", tmp_path / "labels")
    samples, report = reader(tmp_path / "images", tmp_path / "labels", lenient=True)
    assert len(report.skipped) == 1 and [s.image.name for s in samples] == [f"b{suffix}"]  # skipped whole


def test_not_utf8_orphans_and_bad_images(tmp_path: Path):
    write_image(tmp_path / "images" / "a.jpg", 64, 48)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.xml").write_bytes(_dior_xml(_dior_object("h\xe4fen")).encode("latin-1"))
    with pytest.raises(ConvertError, match=r"a\.xml: not UTF-8 text \(expected a DIOR-R XML file\)"):
        read_dior_r(tmp_path / "images", tmp_path / "labels")
    write_text(tmp_path / "labels" / "a.xml", _dior_xml(_dior_object()))
    write_text(tmp_path / "labels" / "c.xml", _dior_xml(_dior_object()))  # no image c.*
    with pytest.raises(ConvertError, match=r"c\.xml: no image c\.\* in "):
        read_dior_r(tmp_path / "images", tmp_path / "labels")
    (tmp_path / "images" / "d.jpg").write_bytes(b"\xff\xd8\xff")  # a truncated JPEG
    samples, report = read_dior_r(tmp_path / "images", tmp_path / "labels", lenient=True)
    assert [s.image.name for s in samples] == ["a.jpg"] and len(samples[0].labels) == 1
    assert len(report.skipped) == 2 and "c.xml" in report.skipped[0] and "d.jpg" in report.skipped[1]
    with pytest.raises(FileNotFoundError, match=r"no such folder of DIOR-R XML files"):
        read_dior_r(tmp_path / "images", tmp_path / "none")


def test_tool_fair1m_and_hrsc_to_dota(tmp_path: Path, capsys):
    write_image(tmp_path / "f" / "images" / "1.tif", 64, 48)
    write_image(tmp_path / "f" / "images" / "2.tif", 64, 48)
    write_text(tmp_path / "f" / "labelXml" / "1.xml", _fair1m_xml(_fair1m_object(), _fair1m_object("Small Car")))
    argv = ["--from", "fair1m", "--images", str(tmp_path / "f" / "images"), "--labels",
            str(tmp_path / "f" / "labelXml"), "--dst", str(tmp_path / "d")]  # fmt: skip
    assert TOOL(argv) == 0
    assert capsys.readouterr().out.startswith("converted 2 images, 2 objects, 0 skipped -> ")
    labels = (tmp_path / "d" / "labelTxt" / "1.txt").read_text()
    assert labels == "10 20 50 20 50 40 10 40 Boeing737 0\n10 20 50 20 50 40 10 40 Small-Car 0\n"
    assert (tmp_path / "d" / "labelTxt" / "2.txt").read_text() == ""
    write_text(tmp_path / "classes.txt", "Boeing737\n")
    assert TOOL([*argv, "--classes", str(tmp_path / "classes.txt")]) == 1
    assert capsys.readouterr().err == (
        f"convert: error: {tmp_path / 'f' / 'labelXml' / '1.xml'}: object 2: class 'Small-Car' is not in the class "
        "list (1 names)\n"
    )
    assert TOOL([*argv, "--classes", str(tmp_path / "classes.txt"), "--lenient"]) == 0
    captured = capsys.readouterr()
    assert "converted 2 images, 1 objects, 1 skipped" in captured.out and "convert: skipped: " in captured.err
    write_image(tmp_path / "h" / "AllImages" / "100000001.bmp", 64, 48)
    ship = _hrsc_object("50", "40", "30", "10", "1.5707963267948966", "1")
    write_text(tmp_path / "h" / "Annotations" / "100000001.xml", _hrsc_xml(ship))
    assert TOOL(["--from", "hrsc2016", "--images", str(tmp_path / "h" / "AllImages"), "--labels",
                 str(tmp_path / "h" / "Annotations"), "--dst", str(tmp_path / "d2")]) == 0  # fmt: skip
    values = (tmp_path / "d2" / "labelTxt" / "100000001.txt").read_text().split()
    np.testing.assert_allclose(list(map(float, values[:8])), [55, 25, 55, 55, 45, 55, 45, 25], atol=1e-9)
    assert values[8:] == ["ship", "1"]
