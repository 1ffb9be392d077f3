"""What every dataset converter shares: one image's labels in DOTA form, the conversion report, and the writer of a
DOTA-layout dataset (`images/` as symlinks or copies, `labelTxt/*.txt`) that every tool of rotated_ddetr reads.

Readers of other formats (`yolo_obb.py`, `coco_rotated.py`, `xml_datasets.py`) yield `LabelledImage`s; writers of
other formats take a DOTA-layout folder. Polygons are DOTA's 8 numbers x1 y1 ... x4 y4 in pixels (DESIGN.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotated_ddetr.data.dataset import image_files
from rotated_ddetr.data.dota import DotaFormatError, DotaLabels, read_dota_labels, write_dota_labels
from rotated_ddetr.images import ImageError, probe_image


class ConvertError(ValueError):
    """A malformed annotation file or an unknown class; the message names the file (and line or element) and what
    was expected."""


@dataclass
class LabelledImage:
    """One image and its objects, converted: `image` (the source image file) and `labels` (DOTA polygons, class
    names, difficult flags)."""

    image: Path
    labels: DotaLabels


@dataclass
class ConversionReport:
    """What a conversion did: images written, objects written, and the problems `lenient` skipped (one message
    each, naming the file and what was wrong)."""

    images: int = 0
    objects: int = 0
    skipped: list[str] = field(default_factory=list)


def skip_or_raise(error: ConvertError | DotaFormatError, lenient: bool, report: ConversionReport) -> None:
    """Records `error` in `report.skipped` when `lenient`, else raises it."""
    if not lenient:
        raise error
    report.skipped.append(str(error))


def write_dota_dataset(
    samples: Iterable[LabelledImage], dst: str | os.PathLike, copy: bool = False, report: ConversionReport | None = None
) -> ConversionReport:
    """Writes `dst/images/{name}` (a symlink to the source image, or a copy) and `dst/labelTxt/{stem}.txt` for each
    sample (label files atomically). Image names keep their file names; two samples with one stem are an error.

    Returns:
        `report` (or a new one) with the images and objects written added.
    """
    dst, report = Path(dst), report or ConversionReport()
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labelTxt").mkdir(parents=True, exist_ok=True)
    seen: dict[str, Path] = {}
    for sample in samples:
        stem = sample.image.stem
        if stem in seen:
            raise ConvertError(f"{sample.image}: another image has the name {stem!r} ({seen[stem]})")
        seen[stem] = sample.image
        place_image(sample.image, dst / "images", copy)
        write_dota_labels(dst / "labelTxt" / f"{stem}.txt", sample.labels, header=False)
        report.images += 1
        report.objects += len(sample.labels)
    return report


def place_image(image: Path, folder: Path, copy: bool = False) -> Path:
    """Puts `folder/{image.name}`: a symlink to `image` (absolute), or a copy; replaces what was there.

    Returns:
        The placed file.
    """
    target = Path(folder) / Path(image).name
    if target.is_symlink() or target.exists():
        target.unlink()
    if copy:
        shutil.copyfile(image, target)
    else:
        target.symlink_to(Path(image).resolve())
    return target


def read_dota_dataset(src: str | os.PathLike, lenient: bool = False) -> tuple[list[LabelledImage], ConversionReport]:
    """The images of a DOTA-layout root (`src/images/*`, sorted by name) with their `src/labelTxt/{stem}.txt`.

    The source side of the writers of other formats. An image without a label file has no objects (as the
    splitter reads it); a malformed label file is an error, or with `lenient` its image is skipped whole.

    Returns:
        (samples, report): the report lists what was skipped; its image and object counts are left at 0.

    Raises:
        FileNotFoundError: `src`, `src/images` or `src/labelTxt` is not a folder.
        DotaFormatError: a malformed label line (file and line in the message), unless `lenient`.
    """
    src, report = Path(src), ConversionReport()
    paths = image_files(src)
    if not (src / "labelTxt").is_dir():
        raise FileNotFoundError(f"{src}: no labelTxt/ folder (expected DOTA layout: images/ and labelTxt/)")
    samples = []
    for path in paths:
        label_path = src / "labelTxt" / f"{path.stem}.txt"
        try:
            labels = read_dota_labels(label_path) if label_path.is_file() else DotaLabels(np.zeros((0, 8)), [], [])
        except DotaFormatError as error:
            skip_or_raise(error, lenient, report)
            continue
        samples.append(LabelledImage(path, labels))
    return samples, report


def drop_unknown_classes(
    label_path: Path, labels: DotaLabels, known: Collection[str], lenient: bool, report: ConversionReport
) -> DotaLabels:
    """`labels` without the objects whose class is not in `known`: each is a ConvertError naming `label_path` and
    the object (its rank in the file), or with `lenient` is skipped and reported."""
    keep = np.array([name in known for name in labels.classes], dtype=bool)
    for k in np.flatnonzero(~keep).tolist():
        message = f"{label_path}: object {k + 1}: class {labels.classes[k]!r} is not in the class list"
        skip_or_raise(ConvertError(f"{message} ({len(known)} names)"), lenient, report)
    classes = [name for name, kept in zip(labels.classes, keep.tolist(), strict=True) if kept]
    return DotaLabels(labels.polygons[keep], classes, labels.difficult[keep])


def class_list(samples: Iterable[LabelledImage], classes: Sequence[str] | None) -> list[str]:
    """The class list a writer of another format uses: `classes` as given, else the sorted set of the samples'."""
    return list(classes) if classes is not None else sorted({c for s in samples for c in s.labels.classes})


def sized_samples(
    src: str | os.PathLike,
    samples: Iterable[LabelledImage],
    known: Collection[str],
    lenient: bool,
    report: ConversionReport,
) -> Iterator[tuple[LabelledImage, tuple[int, int]]]:
    """What writers of other formats write: each sample of the DOTA root `src` with its image size (height, width)
    and without the objects whose class is not in `known` (`drop_unknown_classes`). An unreadable image is a
    ConvertError naming it, or with `lenient` is skipped and reported."""
    for sample in samples:
        try:
            size = probe_image(sample.image).image_size
        except ImageError as error:
            skip_or_raise(ConvertError(str(error)), lenient, report)
            continue
        label_path = Path(src) / "labelTxt" / f"{sample.image.stem}.txt"
        yield LabelledImage(sample.image, drop_unknown_classes(label_path, sample.labels, known, lenient, report)), size
