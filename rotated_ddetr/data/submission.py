"""The DOTA evaluation server's Task1 submission: {class: Task1Detections} in, one zip out, holding
`Task1_{class}.txt` (`dota.task1_text`) for every class of a DOTA version, at the zip's root.

What the server expects, from its users and maintainers (no formal specification is published): files named
`Task1_{class}.txt` directly in the zip, no folder (a folder inside makes the server fail, CAPTAIN-WHU/DOTA issues
and csuhan/ReDet#54); one file per class of the dataset version, empty for a class without detections (mmrotate's
`DOTAMetric.merge_results` writes all of them the same way); lines `image score x1 y1 ... x4 y4`.
"""

from __future__ import annotations

import os
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping

from rotated_ddetr.data.dota import Task1Detections, task1_text
from rotated_ddetr.fileio import atomic_open


def write_task1_zip(
    path: str | os.PathLike, detections: Mapping[str, Task1Detections], classes: Iterable[str]
) -> list[str]:
    """Writes the submission zip atomically (a crash leaves no partial zip), deflated, entries in `classes` order.

    Detections of a class outside `classes` are left out, with one warning naming those classes.

    Args:
        path: the zip file; its folder is created when missing.
        detections: {class name: its detections} (e.g. `read_task1` of a submission folder, or inference's).
        classes: every class of the dataset version (`dota.dota_classes("1.0")`, ...).

    Returns:
        The entry names, `Task1_{class}.txt` per class.
    """
    classes = list(classes)
    left_out = sorted(name for name, dets in detections.items() if name not in classes and len(dets))
    if left_out:
        n = sum(len(detections[name]) for name in left_out)
        warnings.warn(
            f"{n} detections of classes outside the submission's left out: {', '.join(left_out)}", stacklevel=2
        )
    names = [f"Task1_{name}.txt" for name in classes]
    stamp = time.localtime()[:6]
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, entry in zip(classes, names, strict=True):
            info = zipfile.ZipInfo(entry, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # a plain readable file once unpacked (writestr's default is 0600)
            dets = detections.get(name)
            archive.writestr(info, task1_text(dets) if dets is not None else "")
    return names
