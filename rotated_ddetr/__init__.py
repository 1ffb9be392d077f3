"""rotated_ddetr: Deformable DETR for oriented object detection in aerial and satellite imagery.

Importing the package imports nothing else (not even torch: `rotated-ddetr --help` stays fast); `ops._extension`
imports torch before the compiled extension, which needs libtorch loaded.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`rotated_ddetr.load`, `RotatedDETR`, `Results` (the Python API, `rotated_ddetr.api`), imported on first use so
    that importing a low layer (`rotated_ddetr.boxes`) does not import the whole package."""
    if name in ("load", "RotatedDETR", "Results"):
        from rotated_ddetr import api

        return getattr(api, name)
    raise AttributeError(f"module 'rotated_ddetr' has no attribute {name!r}")
