"""Augmentation: uint8 image (3, H, W) + pixel rboxes (N, 5) + labels (N,) -> the same, transformed consistently.

Runs inside the dataset, before batching. Geometry goes through torchvision `transforms.v2` on rotated
`BoundingBoxes(format="CXCYWHR")`; our rboxes cross into torchvision's convention (degrees, counter-clockwise) and back
in exactly one place, `_augment`, through `rotated_ddetr.boxes.rboxes_to_tv_cxcywhr` / `tv_cxcywhr_to_rboxes`.

Policies: flips and 90-degree turns are exact (a turn swaps H and W). The arbitrary-angle rotation keeps the canvas
(the corners rotated out are cropped, the ones rotated in are zero-filled); boxes are never clamped, and a box whose
centre leaves the image is dropped with its label. Scale jitter resizes the whole image (isotropically up to
rounding). Output rboxes are canonical (w >= h, angle in [-pi/2, pi/2)).
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from rotated_ddetr import boxes
from rotated_ddetr.tiles import resized_size


def resize_image(image: torch.Tensor, scale: float) -> torch.Tensor:
    """(C, H, W) image resized by `scale` to `resized_size` (bilinear, antialiased); unchanged for scale 1."""
    if scale == 1.0:
        return image
    size = list(resized_size(image.shape[-2:], scale))
    return F.resize(image, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def resize_sample(
    image: torch.Tensor, rboxes: torch.Tensor, labels: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image and pixel rboxes resized by `scale` (as `resize_image`; boxes exact under the rounded sizes)."""
    if scale == 1.0:
        return image, rboxes, labels
    size = list(resized_size(image.shape[-2:], scale))
    return _augment(v2.Resize(size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True), image, rboxes, labels)


class RandomRotate90(v2.Transform):
    """Rotates by a random multiple of 90 degrees (1, 2 or 3 quarter turns counter-clockwise) with probability p.

    Exact for images and boxes; H and W swap for odd turns.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def make_params(self, flat_inputs: list) -> dict:
        turns = int(torch.randint(1, 4, ()).item()) if torch.rand(()) < self.p else 0
        return {"turns": turns}

    def transform(self, inpt, params: dict):
        if params["turns"] == 0:
            return inpt
        return F.rotate(inpt, 90.0 * params["turns"], expand=True)


class RandomScale(v2.Transform):
    """Resizes by a factor drawn uniformly from [low, high] (both sides by the same factor, up to rounding)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list) -> dict:
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        return {"size": list(resized_size(v2.query_size(flat_inputs), factor))}

    def transform(self, inpt, params: dict):
        return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class Augment:
    """The training augmentation: scale jitter, flips, 90-degree turns, arbitrary rotation (each optional).

    Args:
        hflip, vflip: probabilities of a horizontal / vertical flip.
        rot90: probability of 1-3 quarter turns.
        rotate: probability of a rotation by a uniform angle in [-degrees, degrees] (canvas kept, corners cropped).
        degrees: range of that rotation.
        scale_jitter: (low, high) random resize factor; (1, 1) = none.
    """

    def __init__(
        self,
        *,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: float = 0.5,
        rotate: float = 0.0,
        degrees: float = 180.0,
        scale_jitter: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        steps: list[v2.Transform] = []
        if tuple(scale_jitter) != (1.0, 1.0):
            steps.append(RandomScale(*scale_jitter))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(vflip))
        if rot90 > 0:
            steps.append(RandomRotate90(rot90))
        if rotate > 0 and degrees > 0:
            rotation = v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR, expand=False)
            steps.append(v2.RandomApply([rotation], p=rotate))
        self.transform = v2.Compose(steps or [v2.Identity()])

    def __call__(
        self, image: torch.Tensor, rboxes: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transforms one sample with the global torch RNG.

        Args:
            image: (C, H, W) uint8 or float image.
            rboxes: (N, 5) float pixel rboxes (our convention: radians, clockwise on screen).
            labels: (N,) per-box values kept aligned with the boxes (class indices).

        Returns:
            (image (C, H', W'), canonical pixel rboxes (M, 5), labels (M,)): boxes whose centre left the image
            dropped.
        """
        return _augment(self.transform, image, rboxes, labels)


def _augment(
    transform: v2.Transform, image: torch.Tensor, rboxes: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Applies a v2 transform to image + rboxes: the one place where rboxes cross to torchvision and back."""
    height, width = image.shape[-2:]
    tv_boxes = tv_tensors.BoundingBoxes(
        boxes.rboxes_to_tv_cxcywhr(rboxes.float()), format="CXCYWHR", canvas_size=(height, width), clamping_mode=None
    )
    out_image, out_boxes = transform(tv_tensors.Image(image), tv_boxes)
    out_rboxes = boxes.canonicalize_rboxes(boxes.tv_cxcywhr_to_rboxes(out_boxes.as_subclass(torch.Tensor)))
    out_height, out_width = out_image.shape[-2:]
    cx, cy = out_rboxes[:, 0], out_rboxes[:, 1]
    inside = (cx >= 0) & (cx < out_width) & (cy >= 0) & (cy < out_height)
    return out_image.as_subclass(torch.Tensor), out_rboxes[inside], labels[inside]
