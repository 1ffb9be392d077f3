"""Batching: images of different sizes (3, H, W) in [0, 1] -> one zero-padded batch + its padding mask.

Sits between the dataset (or the inference tiler) and the detector: images are padded at the bottom/right to a
common size, a multiple of the detector's largest stride (`Detector.size_divisor`); the mask is True at padding.
"""

from dataclasses import dataclass

import torch

from rotated_ddetr.structures import Target


def pad_images(images: list[torch.Tensor], size_divisor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads images at the bottom/right with zeros to one size, a multiple of `size_divisor`.

    Args:
        images: B >= 1 tensors (C, H_i, W_i) of one dtype and device (float RGB in [0, 1] for the detector).
        size_divisor: the padded height and width are the smallest multiples of this covering every image.

    Returns:
        batch (B, C, H', W') and masks (B, H', W') bool, True at padding, False over each image.

    Raises:
        ValueError: no images, images that are not (C, H, W) with a common C, or size_divisor < 1.
    """
    if not images:
        raise ValueError("pad_images needs at least one image")
    if size_divisor < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    channels = images[0].shape[0]
    if any(image.dim() != 3 or image.shape[0] != channels for image in images):
        raise ValueError(f"images must be (C, H, W) with one C, got {[tuple(image.shape) for image in images]}")
    height = -(-max(image.shape[1] for image in images) // size_divisor) * size_divisor
    width = -(-max(image.shape[2] for image in images) // size_divisor) * size_divisor
    batch = images[0].new_zeros(len(images), channels, height, width)
    masks = torch.ones(len(images), height, width, dtype=torch.bool, device=images[0].device)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
        masks[index, : image.shape[1], : image.shape[2]] = False
    return batch, masks


@dataclass
class Batch:
    """A padded training batch.

    Attributes:
        images: (B, 3, H, W) float RGB in [0, 1], zero-padded at the bottom/right.
        masks: (B, H, W) bool, True at padding.
        targets: B `Target`s (normalised rboxes relative to each image's valid area = its unpadded size).
    """

    images: torch.Tensor
    masks: torch.Tensor
    targets: list[Target]

    def to(self, device: torch.device | str) -> "Batch":
        """The batch on `device` (targets included; `image_size` stays a tuple)."""
        targets = [t.to(device, non_blocking=True) for t in self.targets]
        return Batch(self.images.to(device, non_blocking=True), self.masks.to(device, non_blocking=True), targets)

    def __len__(self) -> int:
        return len(self.targets)


def collate(samples: list[tuple[torch.Tensor, Target]], size_divisor: int) -> Batch:
    """The training collate: (image (3, H, W), Target) pairs -> a padded `Batch`.

    Use with `functools.partial(collate, size_divisor=model.size_divisor)` as a DataLoader's `collate_fn`.

    Raises:
        ValueError: a target's image_size differs from its image's (H, W).
    """
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    for image, target in zip(images, targets, strict=True):
        if target.image_size != tuple(image.shape[-2:]):
            raise ValueError(f"target image_size {target.image_size} != image size {tuple(image.shape[-2:])}")
    batch, masks = pad_images(images, size_divisor)
    return Batch(batch, masks, targets)
