"""rotated_ddetr: Deformable DETR for oriented object detection in aerial and satellite imagery."""

import torch  # noqa: F401  (loads libc10/libtorch before the compiled extension, which has no RPATH to them)

__version__ = "0.1.0"
