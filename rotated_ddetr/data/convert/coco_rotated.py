"""Rotated COCO json (detectron2's `BoxMode.XYWHA_ABS`) <-> the DOTA layout: one json in, `LabelledImage`s out
(`read_coco_rotated`); a DOTA-layout root in, `images/` and `annotations.json` out (`write_coco_rotated`).

The json: `images` [{id, file_name, width, height}] (file_name relative to the images folder), `annotations`
[{id, image_id, category_id, bbox: [cx, cy, w, h, angle], iscrowd, ...}], `categories` [{id, name}]. The bbox is
detectron2's XYWHA_ABS (detectron2/structures/rotated_boxes.py, `RotatedBoxes`): pixels, angle in degrees,
counter-clockwise on screen, so (5, 3, 4, 2, 90) has the corners A = (4, 5), B = (4, 1), C = (6, 1), D = (6, 5).
That is torchvision's CXCYWHR exactly, so `boxes.tv_cxcywhr_to_rboxes` converts it: angle_ours = -radians(angle).
(detectron2's stock `load_coco_json` assumes axis-aligned XYWH_ABS; a rotated dataset sets `bbox_mode` itself.)

Choices, for robustness and lossless round trips:
- bbox is the geometry. A `segmentation` holding exactly one 4-point polygon is taken as the DOTA polygon (any
  quadrilateral, in its own point order) only when its minimum-area rectangle is the bbox to within
  `SEGMENTATION_TOLERANCE` px; any other segmentation (RLE, other point counts, or one that disagrees) is ignored
  and the polygon is the bbox's corners. The writer writes both, so DOTA -> COCO -> DOTA is exact.
- `difficult` (an extra annotation key, 0, 1 or 2, written by the writer) is read when present; otherwise an
  `iscrowd` 1 region becomes difficult 1 (both are ignored by their evaluations), else 0. The writer writes
  iscrowd 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rotated_ddetr import boxes
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
from rotated_ddetr.data.dota import DotaLabels
from rotated_ddetr.fileio import atomic_write_text
from rotated_ddetr.images import ImageError, probe_image

SEGMENTATION_TOLERANCE = 0.5  # px: farthest a segmentation's rectangle corner may lie from the bbox's corners


def _load(path: Path) -> dict:
    """The json object of `path`; ConvertError naming the line of a syntax error or the missing lists."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise ConvertError(f"{path}: not UTF-8 text (expected a COCO json)") from None
    except json.JSONDecodeError as error:
        raise ConvertError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a json object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise ConvertError(f"{path}:{key}: expected a list, got {type(data[key]).__name__}")
    if "images" not in data:
        raise ConvertError(f"{path}: no `images` list")
    return data


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key(value: object) -> int | str | None:
    """`value` when it can be a COCO id (an integer or a string), else None."""
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _id(entry: dict, where: str) -> int | str:
    value = _key(entry.get("id"))
    if value is None:
        raise ConvertError(f"{where}: expected an `id` (integer or string), got {entry.get('id')!r}")
    return value


def _parse_image(entry: object, where: str, images: Path) -> tuple[int | str, Path]:
    """One `images` entry -> (id, image file), checked against the file (exists; same width and height)."""
    if not isinstance(entry, dict):
        raise ConvertError(f"{where}: expected an object {{id, file_name, width, height}}")
    image_id, name = _id(entry, where), entry.get("file_name")
    width, height = entry.get("width"), entry.get("height")
    if not isinstance(name, str) or not name:
        raise ConvertError(f"{where}: expected a `file_name` string, got {name!r}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ConvertError(f"{where}: expected positive integers `width` and `height`, got {width!r}, {height!r}")
    path = images / name
    if not path.is_file():
        raise ConvertError(f"{where}: no image file {path}")
    try:
        size = probe_image(path).image_size
    except ImageError as error:
        raise ConvertError(f"{where}: {error}") from None
    if size != (height, width):
        raise ConvertError(f"{where}: {width}x{height} in the json, but {path} is {size[1]}x{size[0]} (width x height)")
    return image_id, path


def _parse_category(entry: object, where: str, classes: Sequence[str] | None) -> tuple[int | str, str]:
    """One `categories` entry -> (id, DOTA class name); a name outside `classes` is an error."""
    if not isinstance(entry, dict):
        raise ConvertError(f"{where}: expected an object {{id, name}}")
    category_id, name = _id(entry, where), entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConvertError(f"{where}: expected a `name` string, got {name!r}")
    name = dota_class_name(name)
    if classes is not None and name not in classes:
        raise ConvertError(f"{where}: unknown class {name!r} (not in the class list of {len(classes)} names)")
    return category_id, name


def _flag(entry: dict, key: str, allowed: tuple[int, ...], where: str) -> int | None:
    value = entry.get(key)
    if value is not None and (value not in allowed or isinstance(value, bool)):
        raise ConvertError(f"{where}: `{key}` must be one of {list(allowed)}, got {value!r}")
    return value


def _parse_annotation(
    entry: object, where: str, files: dict, categories: dict
) -> tuple[int | str, str, list, list | None, int]:
    """One annotation -> (image id, class, bbox (5,), 4-point segmentation (8,) or None, difficult)."""
    if not isinstance(entry, dict):
        raise ConvertError(f"{where}: expected an object {{id, image_id, category_id, bbox, ...}}")
    if _key(entry.get("image_id")) not in files:
        raise ConvertError(f"{where}: unknown image_id {entry.get('image_id')!r} (no such entry in images)")
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 5 and all(map(_is_number, bbox))):
        raise ConvertError(f"{where}: expected `bbox` as 5 numbers [cx, cy, w, h, angle_degrees], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ConvertError(f"{where}: bbox width and height must be >= 0, got {bbox[2]!r}, {bbox[3]!r}")
    if _key(entry.get("category_id")) not in categories:
        raise ConvertError(f"{where}: unknown category_id {entry.get('category_id')!r} (categories: "
                           f"{sorted(map(str, categories))})")  # fmt: skip
    iscrowd = _flag(entry, "iscrowd", (0, 1), where)
    difficult = _flag(entry, "difficult", (0, 1, 2), where)
    segmentation = entry.get("segmentation")
    quad = None
    if isinstance(segmentation, list) and len(segmentation) == 1 and isinstance(segmentation[0], list):
        if len(segmentation[0]) == 8 and all(map(_is_number, segmentation[0])):
            quad = segmentation[0]
    difficult = difficult if difficult is not None else int(iscrowd == 1)
    return entry["image_id"], categories[entry["category_id"]], bbox, quad, difficult


def _polygons(bboxes: np.ndarray, quads: np.ndarray, has_quad: np.ndarray) -> np.ndarray:
    """(N, 8) DOTA polygons: the segmentation quadrilateral where it agrees with the bbox, else the bbox corners."""
    rboxes = boxes.tv_cxcywhr_to_rboxes(bboxes)  # (N, 5) ours: radians, clockwise on screen
    corners = boxes.rboxes_to_corners(rboxes)  # (N, 4, 2)
    quad_corners = boxes.rboxes_to_corners(boxes.polygons_to_rboxes(quads))  # (N, 4, 2) minimum-area rectangles
    distance = np.linalg.norm(quad_corners[:, :, None] - corners[:, None], axis=-1)  # (N, 4, 4)
    agrees = distance.min(axis=2).max(axis=1) <= SEGMENTATION_TOLERANCE  # as point sets, any start and order
    use_quad = (has_quad & agrees)[:, None]
    return np.where(use_quad, quads, corners.reshape(-1, 8))


def _parse_list(
    entries: list, where: str, parse: Callable[[object, str], tuple], lenient: bool, report: ConversionReport
) -> tuple[dict[int | str, object], set[int | str]]:
    """{id: parsed value} of an `images` or `categories` list, and the ids of the entries skipped (`lenient`)."""
    parsed: dict[int | str, object] = {}
    skipped: set[int | str] = set()
    for i, entry in enumerate(entries):
        try:
            key, value = parse(entry, f"{where}[{i}]")
            if key in parsed:
                raise ConvertError(f"{where}[{i}]: id {key!r} repeats an earlier entry's")
        except ConvertError as error:
            skip_or_raise(error, lenient, report)
            if isinstance(entry, dict) and _key(entry.get("id")) not in (None, *parsed):  # not a repeated id
                skipped.add(entry["id"])
            continue
        parsed[key] = value
    return parsed, skipped


def read_coco_rotated(
    images: Path, labels: Path, classes: Sequence[str] | None = None, lenient: bool = False
) -> tuple[list[LabelledImage], ConversionReport]:
    """Reads a rotated COCO json (detectron2's XYWHA_ABS boxes) and the images it names.

    Args:
        images: the folder that the `file_name`s are relative to.
        labels: the json file.
        classes: when given, the allowed class names: a category outside them is an error (unknown class).
        lenient: skip (and list in the report) bad entries instead of raising; a skipped image or category takes
            its annotations with it.

    Returns:
        (samples in the json's image order, polygons in pixels as described in the module docstring; the report of
        what was skipped, its image and object counts left to the writer).

    Raises:
        ConvertError: invalid JSON (with its line), a malformed entry, an unknown image_id, category_id or class,
            a missing image or one whose size differs from the json's; the element (`images[3]`, `annotations[12]`)
            is named.
        FileNotFoundError: `images` is not a folder or `labels` does not exist.
    """
    images, labels, report = Path(images), Path(labels), ConversionReport()
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: no such folder of images")
    data = _load(labels)
    names = None if classes is None else [dota_class_name(name) for name in classes]
    files, bad_images = _parse_list(data["images"], f"{labels}:images", lambda e, w: _parse_image(e, w, images),
                                    lenient, report)  # fmt: skip
    categories, bad_categories = _parse_list(data.get("categories", []), f"{labels}:categories",
                                             lambda e, w: _parse_category(e, w, names), lenient, report)  # fmt: skip
    objects = []
    for i, entry in enumerate(data.get("annotations", [])):
        if isinstance(entry, dict) and (
            _key(entry.get("image_id")) in bad_images or _key(entry.get("category_id")) in bad_categories
        ):
            continue  # dropped with the image or category that was skipped and reported
        try:
            objects.append(_parse_annotation(entry, f"{labels}:annotations[{i}]", files, categories))
        except ConvertError as error:
            skip_or_raise(error, lenient, report)
    return _samples(files, objects), report


def _samples(files: dict[int | str, Path], objects: list[tuple[int | str, str, list, list | None, int]]) -> list:
    """One `LabelledImage` per image (in `files` order) holding its parsed annotations, as DOTA polygons."""
    bboxes = np.array([bbox for _, _, bbox, _, _ in objects], dtype=np.float64).reshape(-1, 5)
    quads = np.array([quad or [0.0] * 8 for _, _, _, quad, _ in objects], dtype=np.float64).reshape(-1, 8)
    polygons = _polygons(bboxes, quads, np.array([quad is not None for _, _, _, quad, _ in objects], dtype=bool))
    by_image: dict[int | str, list[int]] = {image_id: [] for image_id in files}
    for k, (image_id, *_) in enumerate(objects):
        by_image[image_id].append(k)
    return [
        LabelledImage(path, DotaLabels(polygons[ks], [objects[k][1] for k in ks], [objects[k][4] for k in ks]))
        for path, ks in ((path, by_image[image_id]) for image_id, path in files.items())
    ]


def _annotations(labels: DotaLabels, image_id: int, first_id: int, category: dict[str, int]) -> list[dict]:
    """The annotation entries of one image's objects: bbox (canonical rbox as XYWHA_ABS), its area, the DOTA
    polygon as the segmentation, iscrowd 0 and the difficult flag."""
    bboxes = boxes.rboxes_to_tv_cxcywhr(labels.rboxes()) + 0.0  # (N, 5) degrees in (-90, 90]; + 0.0 turns -0.0 to 0
    entries = []
    for k, (bbox, polygon, name, flag) in enumerate(
        zip(bboxes.tolist(), labels.polygons.tolist(), labels.classes, labels.difficult.tolist(), strict=True)
    ):
        entries.append({
            "id": first_id + k, "image_id": image_id, "category_id": category[name], "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": 0, "segmentation": [polygon], "difficult": flag,
        })  # fmt: skip
    return entries


def write_coco_rotated(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    classes: Sequence[str] | None = None,
    copy: bool = False,
    lenient: bool = False,
) -> ConversionReport:
    """Writes a DOTA-layout root as rotated COCO: `dst/images/` (symlinks, or copies) and `dst/annotations.json`
    whose `file_name`s are the image file names, relative to `dst/images` (and to the source's `images/`).

    Ids count from 1 (images in name order, annotations, categories in class-list order). Each annotation holds
    the bbox [cx, cy, w, h, angle] (the polygon's canonical minimum-area rectangle; XYWHA_ABS, degrees in
    (-90, 90], counter-clockwise), `area` = w * h, `iscrowd` 0, the polygon as its `segmentation` and `difficult`.

    Args:
        src: the DOTA-layout root (`images/`, `labelTxt/`).
        dst: the output folder (created).
        classes: the category list; None takes the sorted set of the classes in the labels.
        copy: copy the images instead of linking them.
        lenient: skip (and report) unreadable images, malformed label files and objects of classes outside
            `classes` instead of raising.

    Returns:
        The images and objects written and what was skipped.

    Raises:
        ConvertError: an unreadable image or an object whose class is not in `classes`.
        DotaFormatError: a malformed DOTA label line.
    """
    dst = Path(dst)
    samples, report = read_dota_dataset(src, lenient)
    category = {name: i for i, name in enumerate(class_list(samples, classes), start=1)}
    (dst / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for sample, (height, width) in sized_samples(src, samples, category, lenient, report):
        labels = sample.labels
        images.append({"id": len(images) + 1, "file_name": sample.image.name, "width": width, "height": height})
        annotations += _annotations(labels, len(images), len(annotations) + 1, category)
        place_image(sample.image, dst / "images", copy)
        report.images, report.objects = report.images + 1, report.objects + len(labels)
    categories = [{"id": i, "name": name} for name, i in category.items()]
    data = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(dst / "annotations.json", json.dumps(data) + "\n")
    return report
