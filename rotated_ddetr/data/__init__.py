"""DOTA-format data: label and submission I/O (dota.py)."""

from rotated_ddetr.data.dota import (
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

__all__ = [
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "DotaFormatError",
    "DotaLabels",
    "Task1Detections",
    "dota_classes",
    "read_dota_labels",
    "read_task1",
    "write_dota_labels",
    "write_task1",
]
