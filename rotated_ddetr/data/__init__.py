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

from rotated_ddetr.data.split import (  # noqa: E402  (splitting and the synthetic dataset)
    PRESETS,
    SplitOptions,
    split_dataset,
    split_image,
)
from rotated_ddetr.data.synthetic import (  # noqa: E402
    SYNTHETIC_CLASSES,
    SyntheticOptions,
    generate_image,
    write_dataset,
    write_scene,
)

__all__ += [
    "PRESETS",
    "SYNTHETIC_CLASSES",
    "SplitOptions",
    "SyntheticOptions",
    "generate_image",
    "split_dataset",
    "split_image",
    "write_dataset",
    "write_scene",
]
