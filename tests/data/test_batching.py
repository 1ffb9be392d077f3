"""Padding and collate: sizes rounded up to the divisor, masks True exactly at padding, pixels copied unchanged."""

import dataclasses

import pytest
import torch

from rotated_ddetr.data.batching import collate, pad_images
from rotated_ddetr.structures import Target


def test_pad_images_sizes_masks_and_values():
    a, b = torch.rand(3, 50, 70), torch.rand(3, 64, 33)
    batch, masks = pad_images([a, b], size_divisor=32)
    assert batch.shape == (2, 3, 64, 96) and masks.shape == (2, 64, 96) and masks.dtype == torch.bool
    assert torch.equal(batch[0, :, :50, :70], a) and torch.equal(batch[1, :, :64, :33], b)
    expected = torch.ones(2, 64, 96, dtype=torch.bool)
    expected[0, :50, :70] = False
    expected[1, :64, :33] = False
    assert torch.equal(masks, expected)
    assert batch[masks[:, None].expand_as(batch)].abs().sum() == 0  # zero padding


def test_pad_images_divisor_one_and_exact_multiple():
    image = torch.rand(3, 64, 128)
    batch, masks = pad_images([image], size_divisor=64)
    assert batch.shape == (1, 3, 64, 128) and not masks.any()
    batch, _ = pad_images([torch.rand(3, 5, 7)])
    assert batch.shape == (1, 3, 5, 7)


def test_pad_images_errors():
    with pytest.raises(ValueError, match="at least one"):
        pad_images([])
    with pytest.raises(ValueError, match="one C"):
        pad_images([torch.rand(3, 4, 4), torch.rand(1, 4, 4)])
    with pytest.raises(ValueError, match="size_divisor"):
        pad_images([torch.rand(3, 4, 4)], size_divisor=0)


def test_collate_keeps_targets_and_checks_sizes():
    target = Target(labels=torch.tensor([1]), rboxes=torch.tensor([[0.5, 0.5, 0.2, 0.1, 0.3]]), image_size=(40, 60))
    batch = collate(
        [(torch.rand(3, 40, 60), target), (torch.rand(3, 64, 20), dataclasses.replace(target, image_size=(64, 20)))], 64
    )
    assert batch.images.shape == (2, 3, 64, 64) and len(batch) == 2
    assert (~batch.masks).sum((1, 2)).tolist() == [40 * 60, 64 * 20]
    assert batch.targets[1].image_size == (64, 20) and torch.equal(batch.targets[0].labels, torch.tensor([1]))
    moved = batch.to("cpu")
    assert torch.equal(moved.images, batch.images) and moved.targets[0].image_size == (40, 60)
    with pytest.raises(ValueError, match="image_size"):
        collate([(torch.rand(3, 40, 61), target)], 64)
