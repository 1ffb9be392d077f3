"""Inference: detector outputs -> per-image `Detections` (canonical pixel rboxes, scores, labels)."""

from rotated_ddetr.inference.postprocess import Detections, postprocess

__all__ = ["Detections", "postprocess"]
