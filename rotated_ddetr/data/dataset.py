"""Datasets over DOTA-layout folders (`images/` + `labelTxt/`): samples for training, images for testing.

`DotaDataset` yields (float [0, 1] image (3, H, W), `Target` with normalised canonical rboxes) after resizing and
augmentation; `collate` in `batching.py` pads them into batches. `DotaImages` yields the images as they are, with
their names, for running a trained model over a folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from rotated_ddetr import boxes
from rotated_ddetr.data.dota import read_dota_labels
from rotated_ddetr.data.transforms import resize_sample
from rotated_ddetr.structures import Target

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def image_files(root: str | os.PathLike) -> list[Path]:
    """The image files of a dataset root (`root/images/*`, sorted by name).

    Raises:
        FileNotFoundError: `root` or `root/images` is not a folder.
        ValueError: `root/images` holds no image, or two images share a name stem.
    """
    folder = Path(root) / "images"
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: no images/ folder (expected DOTA layout: images/ and labelTxt/)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        duplicate = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"{folder}: several images named {duplicate!r}")
    return files


def read_image_rgb(path: str | os.PathLike) -> torch.Tensor:
    """An image file as the model reads it: a (3, H, W) uint8 RGB torch tensor (grey and 4-channel images converted;
    a channels-last view of the decoded pixels). See `split.read_image_bgr` for the devkit's (H, W, 3) BGR array.

    Raises:
        OSError: the file cannot be decoded.
    """
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample of one epoch, independent of workers and of the order samples are drawn in."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + index


class DotaDataset(torch.utils.data.Dataset):
    """Training samples of a DOTA-layout folder.

    All label files are read once at construction (unknown classes and malformed lines fail early); images are read
    per sample (once with `cache`). Each sample's augmentation is seeded by (seed, epoch, index), so it is the same
    whatever the number of workers or the resume point; call `set_epoch` before each epoch (before creating the
    loader's iterator, so that worker copies see it).

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

    Raises:
        FileNotFoundError: missing folders or label files. ValueError (DotaFormatError): unknown class, bad line.
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
    ) -> None:
        self.root, self.classes = Path(root), tuple(classes)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = {} if cache else None
        self.scale, self.augment, self.seed, self.epoch = scale, augment, seed, 0
        index = {name: i for i, name in enumerate(self.classes)}
        self.files, self.rboxes, self.labels = [], [], []
        for path in image_files(root):
            label_path = self.root / "labelTxt" / f"{path.stem}.txt"
            if not label_path.is_file():
                raise FileNotFoundError(f"{path}: no label file {label_path}")
            labels = read_dota_labels(label_path)
            unknown = sorted(set(labels.classes) - set(index))
            if unknown:
                raise ValueError(f"{label_path}: unknown class {unknown[0]!r}; the config's classes are {self.classes}")
            keep = ~np.isin(labels.difficult, list(drop_difficult))
            if not keep.any() and not keep_empty:
                continue
            self.files.append(path)
            self.rboxes.append(torch.from_numpy(labels.rboxes()[keep]).float())
            names = [c for c, k in zip(labels.classes, keep, strict=True) if k]
            self.labels.append(torch.tensor([index[c] for c in names], dtype=torch.int64))
        if not self.files:
            raise ValueError(f"{root}: no image with objects to train on (keep_empty is off)")

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
            image = read_image_rgb(self.files[index])
            image, rboxes, labels = resize_sample(image, self.rboxes[index], self.labels[index], self.scale)
            if self.cache is not None:
                self.cache[index] = image.contiguous(), rboxes, labels
        if self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
                image, rboxes, labels = self.augment(image, rboxes, labels)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        target = Target(labels=labels, rboxes=boxes.normalize_rboxes(rboxes, size).float(), image_size=size)
        return image.float().div_(255.0), target


class DotaImages(torch.utils.data.Dataset):
    """The images of a DOTA-layout folder (labels not read), as they are, for running a model over them
    (`rotated_ddetr.inference.folder`, which resizes them through its `Predictor`).

    Items: ((H, W, 3) uint8 RGB numpy array, image name (file stem)), in `image_files` order.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.files = image_files(root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        return read_image_rgb(self.files[index]).permute(1, 2, 0).numpy(), self.files[index].stem
