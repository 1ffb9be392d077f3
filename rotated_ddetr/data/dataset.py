"""Datasets over DOTA-layout folders (`images/` + `labelTxt/`): samples for training, images for testing.

`DotaDataset` yields (float [0, 1] image (3, H, W), `Target` with normalised canonical rboxes) after resizing and
augmentation; `collate` in `batching.py` pads them into batches. `DotaImages` yields the images as they are, with
their names, for running a trained model over a folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rotated_ddetr import boxes
from rotated_ddetr.data.dota import read_dota_labels
from rotated_ddetr.data.transforms import resize_sample
from rotated_ddetr.images import IMAGE_SUFFIXES, check_images, list_images, read_image
from rotated_ddetr.structures import Target

Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def image_files(root: str | os.PathLike) -> list[Path]:
    """The image files of a dataset root (`root/images/*`, sorted by name; see `images.list_images`).

    Raises:
        FileNotFoundError: `root` or `root/images` is not a folder.
        ValueError: `root/images` holds no image, or two images share a name stem.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not (Path(root) / "images").is_dir():
        raise FileNotFoundError(f"{root}: no images/ folder (expected DOTA layout: images/ and labelTxt/)")
    files = list_images(Path(root) / "images")
    if not files:
        raise ValueError(f"{Path(root) / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample of one epoch, independent of workers and of the order samples are drawn in."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + index


class DotaDataset(torch.utils.data.Dataset):
    """Training samples of a DOTA-layout folder.

    All label files are read once at construction (unknown classes and malformed lines fail early) and every image
    is checked (`images.probe_image`: format, size, truncation); pixels are read per sample (once with `cache`).
    Objects whose centre lies outside their image are dropped at construction and counted (`outside`), with a
    warning naming the label files whose objects all lie outside and when most of the dataset's objects do. Each
    sample's augmentation is seeded by (seed, epoch, index), so it is the same whatever the number of workers or the
    resume point; call `set_epoch` before each epoch (before creating the loader's iterator, so that worker copies
    see it).

    Args:
        root: dataset root holding `images/` and `labelTxt/` (one label file per image).
        classes: class names; label index = position. A label naming another class is an error.
        drop_difficult: difficult flags whose objects are removed from the targets, e.g. (1, 2); () keeps all.
        keep_empty: keep images without any (remaining) object.
        scale: resize factor applied to every image first.
        augment: e.g. `transforms.Augment(...)`: (uint8 image, pixel rboxes, labels) -> the same, transformed.
        seed: augmentation seed.
        cache: keep every image in memory once decoded and resized (uint8, 3 x H x W bytes each; each DataLoader
            worker holds its own copy, so use it with `num_workers=0`), instead of decoding it again every epoch.
        skip_bad_images: leave out (with a warning, listed in `skipped_images`) the images `probe_image` refuses,
            instead of raising. An image that passes the probe but does not decode raises `ImageError` when read.

    Attributes:
        num_objects: objects kept from the label files (after `drop_difficult`, before the outside check).
        outside: {label file: objects dropped because their centre lies outside the image}, for files with any.
        skipped_images: image files left out by `skip_bad_images`.

    Raises:
        FileNotFoundError: missing folders or label files. ValueError (DotaFormatError): unknown class, bad line, no
        object inside any image. ImageError: a bad image (without `skip_bad_images`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        classes: Sequence[str],
        drop_difficult: Sequence[int] = (),
        keep_empty: bool = True,
        scale: float = 1.0,
        augment: Augmentation | None = None,
        seed: int = 0,
        cache: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        self.root, self.classes = Path(root), tuple(classes)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = {} if cache else None
        self.scale, self.augment, self.seed, self.epoch = scale, augment, seed, 0
        index = {name: i for i, name in enumerate(self.classes)}
        self.files, self.rboxes, self.labels = [], [], []
        self.num_objects, self.outside, whole = 0, {}, []
        files, self.skipped_images, infos = check_images(image_files(root), skip_bad_images)
        for path, info in zip(files, infos, strict=True):
            label_path = self.root / "labelTxt" / f"{path.stem}.txt"
            if not label_path.is_file():
                raise FileNotFoundError(f"{path}: no label file {label_path}")
            labels = read_dota_labels(label_path)
            unknown = sorted(set(labels.classes) - set(index))
            if unknown:
                raise ValueError(f"{label_path}: unknown class {unknown[0]!r}; the config's classes are {self.classes}")
            keep = ~np.isin(labels.difficult, list(drop_difficult))
            rboxes = labels.rboxes()
            (height, width), (cx, cy) = info.image_size, rboxes[:, :2].T
            inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
            self.num_objects += int(keep.sum())
            if (keep & ~inside).any():
                self.outside[label_path] = int((keep & ~inside).sum())
                whole += [label_path.name] if not (keep & inside).any() else []
            keep &= inside
            if not keep.any() and not keep_empty:
                continue
            self.files.append(path)
            self.rboxes.append(torch.from_numpy(rboxes[keep]).float())
            names = [c for c, k in zip(labels.classes, keep, strict=True) if k]
            self.labels.append(torch.tensor([index[c] for c in names], dtype=torch.int64))
        self._check_outside(whole)
        if not self.files:
            raise ValueError(f"{root}: no image with objects to train on (keep_empty is off)")

    def _check_outside(self, whole: list[str]) -> None:
        """Warns about the objects dropped outside their images (`whole`: the label files that lost them all);
        ValueError when none is left at all."""
        dropped = sum(self.outside.values())
        if not dropped:
            return
        if dropped == self.num_objects:
            raise ValueError(f"{self.root}: all {dropped} objects lie outside their images (wrong images or labels?)")
        if whole:
            shown = ", ".join(whole[:5]) + (", ..." if len(whole) > 5 else "")
            warnings.warn(f"{self.root}: {len(whole)} label file(s) have all their objects outside their image "
                          f"(dropped): {shown}", stacklevel=3)  # fmt: skip
        if dropped > self.num_objects / 2:
            warnings.warn(f"{self.root}: {dropped} of {self.num_objects} objects lie outside their images and are "
                          "dropped (wrong images or labels?)", stacklevel=3)  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentation draws of `epoch`."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        """Sample `index`: (3, H, W) float32 RGB in [0, 1] and its Target (normalised canonical rboxes).

        (H, W) is the image size after resizing and augmentation, the frame of the normalised rboxes.
        """
        if self.cache is not None and index in self.cache:
            image, rboxes, labels = self.cache[index]
        else:
            image = torch.from_numpy(read_image(self.files[index])).permute(2, 0, 1)  # (3, H, W) uint8 RGB view
            image, rboxes, labels = resize_sample(image, self.rboxes[index], self.labels[index], self.scale)
            if self.cache is not None:
                self.cache[index] = image.contiguous(), rboxes, labels
        before = len(labels)
        if self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
                image, rboxes, labels = self.augment(image, rboxes, labels)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        target = Target(labels, boxes.normalize_rboxes(rboxes, size).float(), size, num_dropped=before - len(labels))
        return image.float().div_(255.0), target


class DotaImages(torch.utils.data.Dataset):
    """The images of a DOTA-layout folder (labels not read), as they are, for running a model over them
    (`rotated_ddetr.inference.folder`, which resizes them through its `Predictor`).

    Items: ((H, W, 3) uint8 RGB numpy array, image name (file stem)), in `image_files` order. Every image is checked
    at construction (`images.check_images`); with `skip_bad_images` the bad ones are left out and listed in
    `skipped_images`, else the first raises `ImageError`.
    """

    def __init__(self, root: str | os.PathLike, skip_bad_images: bool = False) -> None:
        self.files, self.skipped_images, _ = check_images(image_files(root), skip_bad_images)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        return read_image(self.files[index]), self.files[index].stem
