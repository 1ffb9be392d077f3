"""A DOTA-layout folder's images -> a `Predictor` (each whole image one tile) -> Task1 detections per class.

The path of the training loop's periodic evaluation and of `rotated-ddetr test`, the same as tiled inference's from the
tiles on: DataLoader workers decode `root/images` (`DotaImages`: uint8 RGB arrays), the predictor resizes, batches,
detects and post-processes them, and each image's `Detections` (original pixels) become Task1 polygons per class.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from rotated_ddetr import boxes
from rotated_ddetr.data.dataset import DotaImages
from rotated_ddetr.data.dota import Task1Detections
from rotated_ddetr.images import ImageError, plain_message
from rotated_ddetr.inference.predictor import Predictor


def _collate(samples: list[tuple[np.ndarray, str]]) -> tuple[list[np.ndarray], list[str]]:
    """DataLoader batches as lists: images of different sizes go to the predictor unstacked."""
    return [image for image, _ in samples], [name for _, name in samples]


def predict_folder(
    predictor: Predictor,
    root: str | os.PathLike | DotaImages,
    *,
    batch_size: int = 2,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Task1Detections]:
    """Runs `predictor` over every image of `root/images`, `batch_size` whole images per `predict_tiles` call.

    Args:
        predictor: the detector with its input scale and post-processing settings (`Predictor.from_config`,
            `Predictor.from_checkpoint`); its model is left in eval mode.
        root: dataset root holding `images/` (labels are not read), or its `DotaImages` (e.g. made with
            `skip_bad_images`, whose `skipped_images` then say what was left out).
        batch_size: images per forward pass (the batch is padded to its largest image).
        num_workers: DataLoader processes decoding the images (0: in this process).
        progress: show a tqdm bar.

    Returns:
        {class: Task1Detections} for every class of `predictor.classes` (possibly empty), images in file-name
        order, each by decreasing score; polygons (float64) are the corners of the canonical rboxes in original
        image pixels.

    Raises:
        FileNotFoundError, ValueError: `root` is not a DOTA-layout folder with images (see `image_files`).
        ImageError: an image is bad (see `images.read_image`; the message names it).
    """
    images = root if isinstance(root, DotaImages) else DotaImages(root)
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    per_class: dict[int, list] = {c: [] for c in range(len(predictor.classes))}
    try:
        for batch, names in tqdm(loader, desc="detect", disable=not progress, leave=False):
            _add(per_class, names, predictor.predict_tiles(batch))
    except ImageError as error:  # raised in a worker: the message without the worker's traceback
        raise ImageError(plain_message(error)) from None
    return {predictor.classes[c]: _detections(parts) for c, parts in per_class.items()}


def _add(per_class: dict[int, list], names: list[str], detections: list) -> None:
    """Appends each image's detections, per class, as (image name, scores, polygons) to `per_class`."""
    for name, dets in zip(names, detections, strict=True):
        polygons = boxes.rboxes_to_polygons(dets.rboxes.double()).cpu().numpy()
        scores, labels = dets.scores.double().cpu().numpy(), dets.labels.cpu().numpy()
        for c in np.unique(labels).tolist():
            keep = labels == c
            per_class[c].append((name, scores[keep], polygons[keep]))


def _detections(parts: list[tuple[str, np.ndarray, np.ndarray]]) -> Task1Detections:
    """Concatenates (image name, scores, polygons) parts of one class."""
    if not parts:
        return Task1Detections([], np.zeros(0), np.zeros((0, 8)))
    names = [name for name, scores, _ in parts for _ in range(len(scores))]
    return Task1Detections(names, np.concatenate([s for _, s, _ in parts]), np.concatenate([p for _, _, p in parts]))
