"""The rotated Deformable DETR model: images -> per-layer class logits and normalised rboxes (`DetectorOutput`)."""

from rotated_ddetr.config import ModelConfig
from rotated_ddetr.model.attention import reference_ops
from rotated_ddetr.model.detector import Detector, DetectorOutput, build_model

__all__ = ["Detector", "DetectorOutput", "ModelConfig", "build_model", "reference_ops"]
