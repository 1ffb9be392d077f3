"""A trained detector over a DOTA-layout folder (whole images) -> Task1 detections per class -> DOTA mAP.

Used for periodic evaluation during training and by `tools/test.py`. Images are resized by the training scale,
batched with padding, detected, post-processed and mapped back to original pixels; polygons come from the
canonical rboxes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rotated_ddetr import boxes
from rotated_ddetr.data.batching import pad_images
from rotated_ddetr.data.dataset import DotaImages
from rotated_ddetr.data.dota import Task1Detections
from rotated_ddetr.evaluation.dota_map import eval_dota
from rotated_ddetr.inference.postprocess import postprocess


def _collate(samples: list, size_divisor: int) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    images, masks = pad_images([image for image, _, _ in samples], size_divisor)
    sizes = torch.tensor([size for _, _, size in samples], dtype=torch.int64)
    return images, masks, [name for _, name, _ in samples], sizes


@torch.no_grad()
def predict_folder(
    model: nn.Module,
    root: str | os.PathLike,
    classes: Sequence[str],
    *,
    scale: float = 1.0,
    batch_size: int = 2,
    top_k: int = 300,
    score_threshold: float = 0.0,
    nms_iou: float = 0.0,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Task1Detections]:
    """Runs `model` over every image of `root/images`.

    Args:
        model: a `Detector` (eval mode is set here and restored afterwards); its device is used.
        root: dataset root holding `images/`.
        classes: class names in label order.
        scale: resize factor of the images before the model (the training `data.scale`).
        batch_size: images per forward pass.
        top_k: (query, class) candidates kept per image (see `postprocess`).
        score_threshold: minimum score kept.
        nms_iou: class-wise rotated NMS IoU of `postprocess` (0 = none).
        num_workers: DataLoader workers.
        progress: show a tqdm bar.

    Returns:
        {class: Task1Detections} for every class (possibly empty), polygons in original image pixels.
    """
    device = next(model.parameters()).device
    dataset = DotaImages(root, scale)
    collate = partial(_collate, size_divisor=model.size_divisor)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    per_class: dict[int, list] = {c: [] for c in range(len(classes))}
    was_training = model.training
    model.eval()
    for images, masks, names, sizes in tqdm(loader, desc="detect", disable=not progress, leave=False):
        outputs = model(images.to(device), masks.to(device))
        detections = postprocess(outputs, sizes.to(device), top_k, score_threshold, nms_iou)
        for name, dets in zip(names, detections, strict=True):
            polygons = boxes.rboxes_to_polygons(dets.rboxes.double()).cpu().numpy()
            scores, labels = dets.scores.double().cpu().numpy(), dets.labels.cpu().numpy()
            for c in np.unique(labels).tolist():
                keep = labels == c
                per_class[c].append((name, scores[keep], polygons[keep]))
    model.train(was_training)
    return {classes[c]: _detections(parts) for c, parts in per_class.items()}


def _detections(parts: list[tuple[str, np.ndarray, np.ndarray]]) -> Task1Detections:
    """Concatenates (image name, scores, polygons) parts of one class."""
    if not parts:
        return Task1Detections([], np.zeros(0), np.zeros((0, 8)))
    names = [name for name, scores, _ in parts for _ in range(len(scores))]
    return Task1Detections(names, np.concatenate([s for _, s, _ in parts]), np.concatenate([p for _, _, p in parts]))


def evaluate_model(
    model: nn.Module, root: str | os.PathLike, classes: Sequence[str], scale: float = 1.0, **predict_kwargs
) -> tuple[dict, dict[str, Task1Detections]]:
    """`predict_folder`, then the DOTA Task1 mAP (VOC07, IoU > 0.5) against `root/labelTxt` for `classes`.

    Returns:
        (the `eval_dota` result, the detections).
    """
    detections = predict_folder(model, root, classes, scale=scale, **predict_kwargs)
    return eval_dota(detections, os.path.join(root, "labelTxt"), classes=list(classes)), detections
