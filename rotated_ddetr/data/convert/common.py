"""What every dataset converter shares: one image's labels in DOTA form, the conversion report, and the writer of a
DOTA-layout dataset (`images/` as symlinks or copies, `labelTxt/*.txt`) that every tool of rotated_ddetr reads.

Readers of other formats (`yolo_obb.py`, `coco_rotated.py`, `xml_datasets.py`) yield `LabelledImage`s; writers of
other formats take a DOTA-layout folder. Polygons are DOTA's 8 numbers x1 y1 ... x4 y4 in pixels (DESIGN.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rotated_ddetr.data.dota import DotaFormatError, DotaLabels, write_dota_labels


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
        target = dst / "images" / sample.image.name
        if target.is_symlink() or target.exists():
            target.unlink()
        if copy:
            shutil.copyfile(sample.image, target)
        else:
            target.symlink_to(sample.image.resolve())
        write_dota_labels(dst / "labelTxt" / f"{stem}.txt", sample.labels, header=False)
        report.images += 1
        report.objects += len(sample.labels)
    return report
