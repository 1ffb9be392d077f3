"""Ultralytics YOLO-OBB datasets <-> the DOTA layout: per-image txt labels of normalised corners in, `LabelledImage`s
out (`read_yolo_obb`); a DOTA-layout root in, `images/`, `labels/*.txt` and `data.yaml` out (`write_yolo_obb`).

The format (Ultralytics docs, "Oriented Bounding Box (OBB) Datasets Overview", docs.ultralytics.com/datasets/obb/,
and `convert_dota_to_yolo_obb` in ultralytics/data/converter.py): one `{image stem}.txt` per image, one object per
line `class_index x1 y1 x2 y2 x3 y3 x4 y4`, the four corners in DOTA's order with x divided by the image width and y
by its height; an image without a label file has no objects. YOLO has no difficult flag: DOTA's flags are lost on
the way out and read back as 0. Ultralytics' label check (ultralytics/data/utils.py `verify_image_label`) refuses a
whole image whose labels hold a coordinate outside [0, 1], so the writer clips corners to the image by default.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from rotated_ddetr.data.convert.class_names import dota_class_name
from rotated_ddetr.data.convert.common import (
    ConversionReport,
    ConvertError,
    LabelledImage,
    class_list,
    place_image,
    read_dota_dataset,
    sized_samples,
    skip_or_raise,
)
from rotated_ddetr.data.dota import DotaLabels, format_numbers
from rotated_ddetr.fileio import atomic_write_text
from rotated_ddetr.images import ImageError, list_images, probe_image

FIELDS = 9  # class_index x1 y1 ... x4 y4
COORDINATE_RANGE = (-1.0, 2.0)  # normalised; beyond, the object would lie over an image size outside the image
_NOT_LABELS = ("classes.txt",)  # the class list labelImg and some exporters put beside the label files


def _number(token: str) -> float | None:
    """float(token), or None when it is no number."""
    try:
        return float(token)
    except ValueError:
        return None


def _class_index(path: Path, line_no: int, token: str, names: Sequence[str] | None) -> int:
    """The class id of a label line: a whole number in [0, len(names))."""
    value = _number(token)
    if value is None or not (value.is_integer() and value >= 0):
        raise ConvertError(f"{path}:{line_no}: class index {token!r} is not a whole number >= 0")
    if names is not None and value >= len(names):
        raise ConvertError(
            f"{path}:{line_no}: class index {int(value)} out of range (the class list has {len(names)} names: "
            f"ids 0-{len(names) - 1})"
        )
    return int(value)


def _parse_line(path: Path, line_no: int, tokens: list[str], names: Sequence[str] | None) -> tuple[int, np.ndarray]:
    """One label line -> (class id, (8,) normalised corners x1 y1 ... x4 y4)."""
    if len(tokens) != FIELDS:
        raise ConvertError(
            f"{path}:{line_no}: expected {FIELDS} fields (class_index x1 y1 ... x4 y4, normalised), got {len(tokens)}"
        )
    index = _class_index(path, line_no, tokens[0], names)
    values = [_number(token) for token in tokens[1:]]
    if None in values:
        raise ConvertError(f"{path}:{line_no}: non-numeric coordinate {tokens[1 + values.index(None)]!r}")
    coords = np.array(values, dtype=np.float64)
    low, high = COORDINATE_RANGE
    outside = ~((coords >= low) & (coords <= high))  # also NaN
    if outside.any():
        raise ConvertError(
            f"{path}:{line_no}: coordinate {tokens[1 + int(np.argmax(outside))]} is not a normalised coordinate "
            f"(expected 0..1, divided by the image size; accepted {low:g}..{high:g})"
        )
    return index, coords


def _read_label_file(
    path: Path, image_size: tuple[int, int], names: Sequence[str] | None, lenient: bool, report: ConversionReport
) -> DotaLabels:
    """One image's label file (absent: no objects) -> DOTA labels in pixels; bad lines skipped when `lenient`."""
    if not path.is_file():
        return DotaLabels(np.zeros((0, 8)), [], [])
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ConvertError(f"{path}: not UTF-8 text (expected YOLO-OBB label lines)") from None
    height, width = image_size
    scale = np.array([width, height] * 4, dtype=np.float64)
    polygons, classes = [], []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            index, coords = _parse_line(path, line_no, tokens, names)
        except ConvertError as error:
            skip_or_raise(error, lenient, report)
            continue
        polygons.append(coords * scale)
        classes.append(names[index] if names is not None else str(index))
    return DotaLabels(np.array(polygons).reshape(-1, 8), classes, np.zeros(len(classes)))


def read_yolo_obb(
    images: Path, labels: Path, classes: Sequence[str] | None = None, lenient: bool = False
) -> tuple[list[LabelledImage], ConversionReport]:
    """Reads a YOLO-OBB image folder and its label folder (`labels/{image stem}.txt`).

    Args:
        images: the folder of images (not recursive; e.g. `dataset/images/train`).
        labels: the folder of label files (e.g. `dataset/labels/train`).
        classes: the class names, index = class id (`class_names.read_class_names` of a data.yaml or a text
            file); None names each class by its id ("0", "1", ...).
        lenient: skip (and list in the report) bad lines, unreadable images and label files without an image
            instead of raising.

    Returns:
        (samples in image-name order, with polygons in pixels and difficult 0; the report of what was skipped,
        its image and object counts left to the writer).

    Raises:
        ConvertError: a malformed line (wrong field count, non-numeric or non-normalised coordinate, class index
            out of range), an unreadable image or a label file without an image; file and line in the message.
        FileNotFoundError: `images` or `labels` is not a folder.
    """
    images, labels, report = Path(images), Path(labels), ConversionReport()
    if not labels.is_dir():
        raise FileNotFoundError(f"{labels}: no such folder of YOLO-OBB label files")
    names = None if classes is None else [dota_class_name(name) for name in classes]
    paths = list_images(images)
    stems = {path.stem for path in paths}
    for orphan in sorted(p for p in labels.glob("*.txt") if p.stem not in stems and p.name not in _NOT_LABELS):
        skip_or_raise(ConvertError(f"{orphan}: no image {orphan.stem}.* in {images}"), lenient, report)
    samples = []
    for path in paths:
        try:
            size = probe_image(path).image_size
        except ImageError as error:
            skip_or_raise(ConvertError(str(error)), lenient, report)
            continue
        samples.append(LabelledImage(path, _read_label_file(labels / f"{path.stem}.txt", size, names, lenient, report)))
    return samples, report


def _yolo_lines(labels: DotaLabels, image_size: tuple[int, int], index: dict[str, int], clip: bool) -> list[str]:
    """The label lines of one image's objects (normalised; clipped to [0, 1] when `clip`)."""
    height, width = image_size
    coords = labels.polygons / np.array([width, height] * 4, dtype=np.float64)  # (N, 8) normalised
    if clip:
        coords = np.clip(coords, 0.0, 1.0)
    text = np.array(format_numbers(coords), dtype=object).reshape(-1, 8)
    return [f"{index[name]} {' '.join(row)}" for name, row in zip(labels.classes, text, strict=True)]


def write_yolo_obb(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    classes: Sequence[str] | None = None,
    copy: bool = False,
    lenient: bool = False,
    clip: bool = True,
) -> ConversionReport:
    """Writes a DOTA-layout root as a YOLO-OBB dataset: `dst/images/` (symlinks, or copies), `dst/labels/{stem}.txt`
    and `dst/data.yaml` (`path`, `train: images`, `val: images`, `names: {id: name}`, as Ultralytics writes it).

    Difficult flags are lost (YOLO has none): difficult objects are written like the others.

    Args:
        src: the DOTA-layout root (`images/`, `labelTxt/`).
        dst: the output folder (created).
        classes: the class list, index = id; None takes the sorted set of the classes in the labels.
        copy: copy the images instead of linking them.
        lenient: skip (and report) unreadable images, malformed label files and objects of classes outside
            `classes` instead of raising.
        clip: clip corners to the image ([0, 1]) so that Ultralytics accepts every file (one warning counts the
            objects clipped); False writes them as they are.

    Returns:
        The images and objects written and what was skipped.

    Raises:
        ConvertError: an unreadable image or an object whose class is not in `classes`.
        DotaFormatError: a malformed DOTA label line.
    """
    dst = Path(dst)
    samples, report = read_dota_dataset(src, lenient)
    names = class_list(samples, classes)
    index = {name: i for i, name in enumerate(names)}
    (dst / "images").mkdir(parents=True, exist_ok=True)
    clipped = 0
    for sample, (height, width) in sized_samples(src, samples, index, lenient, report):
        labels = sample.labels
        corners = labels.polygons.reshape(-1, 4, 2)
        clipped += int(((corners < 0) | (corners > (width, height))).any(axis=(1, 2)).sum()) if clip else 0
        lines = _yolo_lines(labels, (height, width), index, clip)
        atomic_write_text(dst / "labels" / f"{sample.image.stem}.txt", "".join(line + "\n" for line in lines))
        place_image(sample.image, dst / "images", copy)
        report.images, report.objects = report.images + 1, report.objects + len(lines)
    data = {"path": str(dst.resolve()), "train": "images", "val": "images", "names": dict(enumerate(names))}
    atomic_write_text(dst / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    if clipped:
        warnings.warn(f"{clipped} object(s) reached outside their images: corners clipped to the image", stacklevel=2)
    return report
