"""The tiny model learns: a few optimiser steps on one synthetic image lower the loss (slow: about a minute)."""

import dataclasses

import pytest
import torch

from rotated_ddetr.boxes import normalize_rboxes
from rotated_ddetr.model import build_model
from rotated_ddetr.structures import Target
from rotated_ddetr.training import HungarianMatcher, SetCriterion
from tests.small_model import small_test_model_config


def _draw(rboxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) image in [0, 1]: 0 background, 1 inside the pixel rboxes."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    inside = torch.zeros(height, width, dtype=torch.bool)
    for cx, cy, w, h, a in rboxes.tolist():
        dx, dy = xs - cx, ys - cy
        u = dx * torch.cos(torch.tensor(a)) + dy * torch.sin(torch.tensor(a))
        v = -dx * torch.sin(torch.tensor(a)) + dy * torch.cos(torch.tensor(a))
        inside |= (u.abs() <= w / 2) & (v.abs() <= h / 2)
    return inside.float().expand(3, -1, -1)


@pytest.mark.slow
def test_tiny_model_overfits_one_image():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(small_test_model_config(2), num_queries=30))
    gt = torch.tensor([[30.0, 30.0, 40.0, 12.0, 0.5], [70.0, 44.0, 30.0, 14.0, -1.0]])
    images = _draw(gt, 64, 96)[None]
    targets = [Target(labels=torch.tensor([0, 1]), rboxes=normalize_rboxes(gt, (64, 96)), image_size=(64, 96))]
    criterion = SetCriterion(HungarianMatcher(), 2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(25):
        loss = criterion(model(images), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history
