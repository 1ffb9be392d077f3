"""DotaDataset / DotaImages over a hand-made DOTA-layout folder: targets, options, determinism, clear errors."""

import cv2
import numpy as np
import pytest
import torch

from rotated_ddetr import boxes
from rotated_ddetr.data import dataset as dataset_module
from rotated_ddetr.data.dataset import DotaDataset, DotaImages
from rotated_ddetr.data.dota import DotaLabels, write_dota_labels
from rotated_ddetr.data.transforms import Augment

CLASSES = ("plane", "ship", "small-vehicle")
RBOXES = np.array([[40.0, 30.0, 30.0, 10.0, 0.5], [90.0, 60.0, 20.0, 12.0, -0.3], [20.0, 70.0, 8.0, 4.0, 0.0]])


def _make(root, labels_by_image, size=(96, 128)):
    (root / "images").mkdir(parents=True)
    for name, (rboxes, classes, difficult) in labels_by_image.items():
        image = np.zeros((*size, 3), np.uint8)
        image[..., 2] = 200  # red in RGB (cv2 writes BGR)
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        polygons = boxes.rboxes_to_polygons(np.asarray(rboxes, dtype=np.float64).reshape(-1, 5))
        write_dota_labels(root / "labelTxt" / f"{name}.txt", DotaLabels(polygons, classes, difficult))
    return root


@pytest.fixture
def dataset_root(tmp_path):
    return _make(
        tmp_path / "ds",
        {"a": (RBOXES, ["plane", "ship", "small-vehicle"], [0, 1, 2]), "b": (RBOXES[:1], ["ship"], [2]),
         "c": (np.zeros((0, 5)), [], [])},
    )  # fmt: skip


def test_targets_without_augmentation(dataset_root):
    ds = DotaDataset(dataset_root, CLASSES)
    assert len(ds) == 3 and [p.stem for p in ds.files] == ["a", "b", "c"]
    image, target = ds[0]
    assert image.shape == (3, 96, 128) and image.dtype == torch.float32
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))  # RGB order, [0, 1]
    assert target.image_size == (96, 128) and target.labels.tolist() == [0, 1, 2]
    pixels = boxes.denormalize_rboxes(target.rboxes.double(), (96, 128))
    torch.testing.assert_close(pixels, boxes.canonicalize_rboxes(torch.from_numpy(RBOXES)), atol=1e-4, rtol=0)
    assert len(ds[2][1].labels) == 0 and ds[2][1].rboxes.shape == (0, 5)


def test_difficult_empty_and_scale_options(dataset_root):
    ds = DotaDataset(dataset_root, CLASSES, drop_difficult=(1, 2), keep_empty=False)
    assert [p.stem for p in ds.files] == ["a"] and ds[0][1].labels.tolist() == [0]
    ds = DotaDataset(dataset_root, CLASSES, drop_difficult=(2,), scale=0.5)
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and target.image_size == (48, 64) and target.labels.tolist() == [0, 1]
    pixels = boxes.denormalize_rboxes(target.rboxes.double(), (48, 64))
    expected = boxes.canonicalize_rboxes(torch.from_numpy(RBOXES[:2] * [0.5, 0.5, 0.5, 0.5, 1.0]))
    torch.testing.assert_close(pixels, expected, atol=1e-4, rtol=0)


def test_augmentation_is_seeded_by_epoch_and_index(dataset_root):
    augment = Augment(rot90=0.5, rotate=0.5, degrees=30.0, scale_jitter=(0.8, 1.2))
    ds = DotaDataset(dataset_root, CLASSES, augment=augment, seed=3)
    torch.manual_seed(0)
    first = ds[0]
    torch.manual_seed(99)  # the global RNG does not matter
    again = ds[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1].rboxes, again[1].rboxes)
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add(tuple(ds[0][1].rboxes[0].tolist()))
    assert len(draws) >= 5


def test_cached_samples_equal_decoded_ones_and_the_file_is_read_once(dataset_root, monkeypatch):
    augment = Augment(rot90=0.5, rotate=0.5, degrees=30.0, scale_jitter=(0.8, 1.2))
    plain = DotaDataset(dataset_root, CLASSES, scale=0.5, augment=augment, seed=3)
    cached = DotaDataset(dataset_root, CLASSES, scale=0.5, augment=augment, seed=3, cache=True)
    reads = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real_read(path))
    for epoch in range(3):  # augmentation differs by epoch and never alters the cached image
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(plain)):
            (a, ta), (b, tb) = plain[index], cached[index]
            assert torch.equal(a, b) and torch.equal(ta.rboxes, tb.rboxes) and torch.equal(ta.labels, tb.labels)
    assert len(reads) == 3 * len(plain) + len(cached)  # the plain dataset decodes every epoch, the cached one once


def test_errors(tmp_path, dataset_root):
    with pytest.raises(FileNotFoundError, match="not found"):
        DotaDataset(tmp_path / "missing", CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images/ folder"):
        DotaDataset(tmp_path / "empty", CLASSES)
    with pytest.raises(ValueError, match="unknown class 'small-vehicle'"):
        DotaDataset(dataset_root, ("plane", "ship"))
    (dataset_root / "labelTxt" / "b.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no label file"):
        DotaDataset(dataset_root, CLASSES)
    root = _make(tmp_path / "bad", {"x": (RBOXES[:1], ["plane"], [0])})
    (root / "labelTxt" / "x.txt").write_text("1 2 3 4 5 6 7 plane 0\n")
    with pytest.raises(ValueError, match="x.txt:1"):
        DotaDataset(root, CLASSES)


def test_images_for_inference(dataset_root):
    images = DotaImages(dataset_root)  # as they are: the Predictor resizes (tests/inference/test_folder.py)
    image, name = images[1]
    assert len(images) == 3 and name == "b" and image.shape == (96, 128, 3) and image.dtype == np.uint8
