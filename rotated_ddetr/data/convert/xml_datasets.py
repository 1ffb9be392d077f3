"""DIOR-R, HRSC2016 and FAIR1M XML annotations -> `LabelledImage`s (DOTA polygons in pixels, class names, difficult
flags): `read_dior_r`, `read_hrsc2016`, `read_fair1m`, each reading one `{image stem}.xml` per image.

The formats (element names as the datasets spell them; the readers cited hold the same facts):
- DIOR-R (mmrotate 1.x `mmrotate/datasets/dior.py`, `DIORDataset.parse_data_info`; github.com/open-mmlab/mmrotate):
  Pascal-VOC-like `<annotation>` with one `<object>` per object: `<name>`, `<difficult>`, and `<robndbox>` holding
  the four corners in pixels, `x_left_top y_left_top x_right_top y_right_top x_right_bottom y_right_bottom
  x_left_bottom y_left_bottom`, taken in that order as the DOTA polygon. Names are lowercased as mmrotate does: the
  files spell two classes `Expressway-Service-area` and `Expressway-toll-station`, mmrotate's class list is
  all lowercase. Images are `.jpg`; many have no objects.
- HRSC2016 (mmrotate `mmrotate/datasets/hrsc.py`, `HRSCDataset`, 0.x and 1.x): `<HRSC_Image><HRSC_Objects>` with
  one `<HRSC_Object>` per ship: `<mbox_cx> <mbox_cy> <mbox_w> <mbox_h>` (pixels), `<mbox_ang>` (radians),
  `<difficult>`, `<Class_ID>`. mmrotate turns the box into corners with `obb2poly_np_le90` (0.x,
  mmrotate/core/bbox/transforms.py) / `rbox2qbox` (1.x, mmrotate/structures/bbox/box_converters.py): w-vector
  (w/2 cos a, w/2 sin a), h-vector (-h/2 sin a, h/2 cos a) in image coordinates (y down). That is our rbox
  convention exactly (DESIGN.md section 2: a positive angle turns the w-axis from +x toward +y, clockwise on
  screen), so `boxes.rboxes_to_polygons` converts (cx, cy, w, h, mbox_ang) as it is, with no sign change; the
  corners come in our order (-w/2,-h/2), (w/2,-h/2), (w/2,h/2), (-w/2,h/2) (mmrotate starts elsewhere; the
  rectangle is the same). Worked example: cx 100, cy 50, w 40, h 20, mbox_ang pi/6: w-vector (10 sqrt3, 10),
  h-vector (-5, 5 sqrt3), corners c - w - h = (105 - 10 sqrt3, 40 - 5 sqrt3) ~ (87.68, 31.34), c + w - h ~
  (122.32, 51.34), c + w + h ~ (112.32, 68.66), c - w + h ~ (77.68, 48.66). Every object is named "ship":
  mmrotate's default (`classwise=False`, HRSC's level-1 task); the Class_ID hierarchy is not read.
- FAIR1M 1.0/2.0 (ISPRS benchmark, gaofen-challenge.com/benchmark; converters such as
  github.com/jinmingteo/VEDAI_FAIR1M_processing `FAIR1M2DOTA.py`, and the benchmark's result-file template, "a
  rectangle closed first to last, any starting point"): `<annotation><objects>` with one `<object>` per object:
  `<coordinate>pixel</coordinate>`, `<possibleresult><name>CLASS</name></possibleresult>` and `<points>` of five
  `<point>x,y</point>`, the four corners in order and the first again. The first four are the polygon; the fifth
  must repeat the first to within `CLOSE_TOLERANCE` (an unclosed list of four is accepted too). FAIR1M has no
  difficult flag: 0.

Names become DOTA tokens (`dota_class_name`: "Small Car" -> "Small-Car"). A `<difficult>` that is absent reads as 0.
The files are parsed by `xml.etree.ElementTree` from UTF-8 text (expat fetches no external entity; a declared
encoding other than UTF-8 is not honoured: such a file is an error unless its bytes are UTF-8).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np

from rotated_ddetr import boxes
from rotated_ddetr.data.convert.class_names import dota_class_name
from rotated_ddetr.data.convert.common import ConversionReport, ConvertError, LabelledImage, skip_or_raise
from rotated_ddetr.data.dota import DotaLabels
from rotated_ddetr.images import ImageError, list_images, probe_image

DIOR_R_CORNERS = (
    "x_left_top", "y_left_top", "x_right_top", "y_right_top",
    "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom",
)  # fmt: skip
HRSC_FIELDS = ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")
HRSC_CLASS = "ship"
CLOSE_TOLERANCE = 1e-3  # px: how far FAIR1M's fifth point may lie from the first


@dataclass(frozen=True)
class _Format:
    """Where one dataset keeps its objects and how one object element becomes (polygon (8,), class, difficult)."""

    name: str  # for messages: "DIOR-R"
    root: str  # the root element's tag
    objects: str  # the path of the object elements below the root
    parse: Callable[[ET.Element, str], tuple[list[float], str, int]]
    foreign: str | None = None  # a path whose elements mean another dataset's layout (told apart in the message)
    lowercase: bool = False  # compare and write class names lowercased


def _load_root(path: Path, fmt: _Format) -> ET.Element:
    """The root element of `path`; ConvertError for non-UTF-8 text, a syntax error (its line) or another root."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConvertError(f"{path}: not UTF-8 text (expected a {fmt.name} XML file)") from None
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        line, column = error.position
        raise ConvertError(
            f"{path}:{line}: not well-formed XML ({expat.ErrorString(error.code)}, column {column + 1})"
        ) from None
    if root.tag != fmt.root:
        raise ConvertError(f"{path}: the root element is <{root.tag}>, expected <{fmt.root}> (a {fmt.name} file)")
    if fmt.foreign is not None and root.find(fmt.foreign) is not None:
        raise ConvertError(
            f"{path}: <{fmt.foreign}> elements, but {fmt.name} keeps its objects in <{fmt.root}>/{fmt.objects} "
            "(a file of another dataset?)"
        )
    return root


def _text(element: ET.Element, tag: str, where: str, expected: str) -> str:
    """The stripped text of `element`'s child `tag` (a path); ConvertError when it is absent or empty."""
    child = element.find(tag)
    if child is None:
        raise ConvertError(f"{where}: no <{tag}> element (expected {expected})")
    if not (child.text or "").strip():
        raise ConvertError(f"{where}: {tag}: empty (expected {expected})")
    return child.text.strip()


def _number(text: str, where: str, tag: str) -> float:
    """float(text) when it is a finite number; else ConvertError naming the element."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConvertError(f"{where}: {tag}: {text!r} is not a number")
    return value


def _difficult(element: ET.Element, where: str) -> int:
    """`<difficult>` as 0 or 1; absent reads as 0."""
    child = element.find("difficult")
    text = (child.text or "").strip() if child is not None else "0"
    if text not in ("0", "1"):
        raise ConvertError(f"{where}: difficult: {text!r} is not 0 or 1")
    return int(text)


def _parse_dior_r(obj: ET.Element, where: str) -> tuple[list[float], str, int]:
    """One DIOR-R `<object>` -> (its `robndbox` corners, in DIOR_R_CORNERS order; name; difficult)."""
    name = _text(obj, "name", where, "the class name")
    if obj.find("robndbox") is None:
        raise ConvertError(f"{where}: no <robndbox> element (expected the 4 corners {' '.join(DIOR_R_CORNERS)})")
    polygon = [_number(_text(obj, f"robndbox/{tag}", where, "a number of pixels"), where, f"robndbox/{tag}")
               for tag in DIOR_R_CORNERS]  # fmt: skip
    return polygon, name, _difficult(obj, where)


def _parse_hrsc2016(obj: ET.Element, where: str) -> tuple[list[float], str, int]:
    """One `<HRSC_Object>` -> (the corners of its mbox, "ship", difficult)."""
    values = [_number(_text(obj, tag, where, "a number (pixels; mbox_ang in radians)"), where, tag)
              for tag in HRSC_FIELDS]  # fmt: skip
    if values[2] < 0 or values[3] < 0:
        raise ConvertError(f"{where}: mbox_w and mbox_h must be >= 0, got {values[2]:g}, {values[3]:g}")
    polygon = boxes.rboxes_to_polygons(np.array(values, dtype=np.float64))  # the same convention: see the docstring
    return polygon.tolist(), HRSC_CLASS, _difficult(obj, where)


def _point(text: str | None, where: str, tag: str) -> tuple[float, float]:
    """A FAIR1M `<point>` text "x,y" -> (x, y)."""
    parts = (text or "").split(",")
    if len(parts) != 2:
        raise ConvertError(f"{where}: {tag}: {(text or '').strip()!r} is not 'x,y' (two numbers)")
    return _number(parts[0].strip(), where, tag), _number(parts[1].strip(), where, tag)


def _parse_fair1m(obj: ET.Element, where: str) -> tuple[list[float], str, int]:
    """One FAIR1M `<object>` -> (its first four points, the first possibleresult's name, 0)."""
    coordinate = (obj.findtext("coordinate") or "pixel").strip()
    if coordinate != "pixel":
        raise ConvertError(f"{where}: coordinate: {coordinate!r}, expected 'pixel' (points in image pixels)")
    name = _text(obj, "possibleresult/name", where, "the class name")
    if obj.find("points") is None:
        raise ConvertError(f"{where}: no <points> element (expected 5 <point>x,y</point>, the first repeated)")
    elements = obj.findall("points/point")
    if len(elements) not in (4, 5):
        raise ConvertError(
            f"{where}: points: {len(elements)} <point> elements, expected 5 (the 4 corners and the first again)"
        )
    points = [_point(e.text, where, f"points/point[{i + 1}]") for i, e in enumerate(elements)]
    if len(points) == 5 and math.dist(points[4], points[0]) > CLOSE_TOLERANCE:
        raise ConvertError(
            f"{where}: points/point[5]: {points[4]} does not repeat point[1] {points[0]} (expected a closed ring "
            "of 4 corners)"
        )
    return [v for point in points[:4] for v in point], name, 0


def _read_xml_file(
    path: Path, fmt: _Format, names: set[str] | None, lenient: bool, report: ConversionReport
) -> DotaLabels:
    """One image's XML file -> DOTA labels; bad objects (and unknown classes) skipped and reported when `lenient`."""
    root = _load_root(path, fmt)
    polygons, classes, difficult = [], [], []
    for k, obj in enumerate(root.findall(fmt.objects), start=1):
        where = f"{path}: object {k}"
        try:
            polygon, name, flag = fmt.parse(obj, where)
            name = dota_class_name(name.lower() if fmt.lowercase else name)
            if names is not None and name not in names:
                raise ConvertError(f"{where}: class {name!r} is not in the class list ({len(names)} names)")
        except ConvertError as error:
            skip_or_raise(error, lenient, report)
            continue
        polygons.append(polygon)
        classes.append(name)
        difficult.append(flag)
    return DotaLabels(np.array(polygons, dtype=np.float64).reshape(-1, 8), classes, difficult)


def _read_dataset(
    images: Path, labels: Path, fmt: _Format, classes: Sequence[str] | None, lenient: bool
) -> tuple[list[LabelledImage], ConversionReport]:
    """The shared reader: images in name order, each with its `labels/{stem}.xml` (absent: no objects)."""
    images, labels, report = Path(images), Path(labels), ConversionReport()
    if not labels.is_dir():
        raise FileNotFoundError(f"{labels}: no such folder of {fmt.name} XML files")
    names = None
    if classes is not None:
        names = {dota_class_name(name.lower() if fmt.lowercase else name) for name in classes}
    paths = list_images(images)
    stems = {path.stem for path in paths}
    for orphan in sorted(p for p in labels.glob("*.xml") if p.stem not in stems):
        skip_or_raise(ConvertError(f"{orphan}: no image {orphan.stem}.* in {images}"), lenient, report)
    samples = []
    for path in paths:
        xml_path = labels / f"{path.stem}.xml"
        try:
            probe_image(path)
            found = _read_xml_file(xml_path, fmt, names, lenient, report) if xml_path.is_file() else None
        except ImageError as error:
            skip_or_raise(ConvertError(str(error)), lenient, report)
            continue
        except ConvertError as error:  # the file as a whole (encoding, syntax, root): its image is skipped whole
            skip_or_raise(error, lenient, report)
            continue
        samples.append(LabelledImage(path, found if found is not None else DotaLabels(np.zeros((0, 8)), [], [])))
    return samples, report


_DIOR_R = _Format("DIOR-R", "annotation", "object", _parse_dior_r, foreign="objects/object", lowercase=True)
_HRSC2016 = _Format("HRSC2016", "HRSC_Image", "HRSC_Objects/HRSC_Object", _parse_hrsc2016)
_FAIR1M = _Format("FAIR1M", "annotation", "objects/object", _parse_fair1m, foreign="object")


def read_dior_r(
    images: Path, labels: Path, classes: Sequence[str] | None = None, lenient: bool = False
) -> tuple[list[LabelledImage], ConversionReport]:
    """Reads DIOR-R: an image folder (`JPEGImages-trainval/`, ...) and `Annotations/Oriented Bounding Boxes/`.

    An image without an XML file has no objects (DIOR-R has such images); an XML file without an image is an error.
    Class names (and `classes`) are lowercased, as mmrotate reads them; the format is in the module docstring.

    Args:
        images, labels, classes, lenient: as `read_fair1m`.

    Returns:
        (samples in image-name order, polygons (N, 8) in pixels as the corners are written, difficult from
        `<difficult>`; the report of what was skipped, its image and object counts left to the writer).

    Raises:
        ConvertError: as `read_fair1m`.
        FileNotFoundError: `images` or `labels` is not a folder.
    """
    return _read_dataset(images, labels, _DIOR_R, classes, lenient)


def read_hrsc2016(
    images: Path, labels: Path, classes: Sequence[str] | None = None, lenient: bool = False
) -> tuple[list[LabelledImage], ConversionReport]:
    """Reads HRSC2016: an image folder (`AllImages/`, .bmp) and `Annotations/`.

    Every object is named "ship" (mmrotate's `classwise=False`); its polygon is the corners of
    (mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang) in our convention (the module docstring has the derivation and a
    worked example). An image without an XML file has no objects; an XML file without an image is an error.

    Args:
        images, labels, classes, lenient: as `read_fair1m`.

    Returns:
        (samples in image-name order, polygons (N, 8) in pixels, difficult from `<difficult>`; the report of what
        was skipped, its image and object counts left to the writer).

    Raises:
        ConvertError: as `read_fair1m`; also a negative mbox_w or mbox_h.
        FileNotFoundError: `images` or `labels` is not a folder.
    """
    return _read_dataset(images, labels, _HRSC2016, classes, lenient)


def read_fair1m(
    images: Path, labels: Path, classes: Sequence[str] | None = None, lenient: bool = False
) -> tuple[list[LabelledImage], ConversionReport]:
    """Reads FAIR1M 1.0/2.0: an image folder (`images/`, .tif) and `labelXml/`.

    An image without an XML file has no objects; an XML file without an image is an error. The polygon is the
    first four `<point>`s (the fifth must close the ring); difficult is 0 (FAIR1M has no flag).

    Args:
        images: the folder of images (not recursive).
        labels: the folder of XML files, one `{image stem}.xml` per image.
        classes: when given, the allowed class names (made DOTA tokens): an object of another class is an error;
            None accepts every class.
        lenient: skip (and list in the report) bad objects, unknown classes, unreadable images, malformed files
            (their image skipped whole) and XML files without an image, instead of raising.

    Returns:
        (samples in image-name order, polygons (N, 8) in pixels; the report of what was skipped, its image and object
        counts left to the writer).

    Raises:
        ConvertError: a file that is not UTF-8 or not well-formed XML (with its line), or has another root element;
            an object with a missing element, a non-numeric coordinate, a wrong point count (or an open ring), or a
            class outside `classes` (the file, the object's number and the element in the message); an
            unreadable image; an XML file without an image.
        FileNotFoundError: `images` or `labels` is not a folder.
    """
    return _read_dataset(images, labels, _FAIR1M, classes, lenient)
