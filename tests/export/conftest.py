"""A checkpoint of the README's tiny detector (seeded, untrained, so its scores are 0.02-0.07: export and parity do
not depend on training) and synthetic tiles to run it on."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rotated_ddetr.checkpoint import save_checkpoint
from rotated_ddetr.config import load_config
from rotated_ddetr.data.synthetic import generate_image
from rotated_ddetr.model import build_model

EXPORT_SIZE = (256, 256)  # 8 x 8 tokens at the coarsest level: a fast export, all four levels present


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """`synthetic_tiny`'s detector with seed 0 as a training checkpoint."""
    cfg = load_config("synthetic_tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = tmp_path_factory.mktemp("export") / "tiny.pth"
    save_checkpoint(path, model, cfg, cfg.data.classes)
    return path


@pytest.fixture(scope="session")
def synthetic_tiles() -> np.ndarray:
    """Three (256, 256, 3) uint8 RGB synthetic tiles (images 0-2 of dataset seed 7), stacked."""
    tiles = [generate_image(7, index, EXPORT_SIZE)[0][..., ::-1] for index in range(3)]  # BGR -> RGB
    return np.stack(tiles)


@pytest.fixture(scope="session")
def tile_batch(synthetic_tiles) -> torch.Tensor:
    """The tiles as the exported graphs take them: (3, 3, 256, 256) float32 RGB in [0, 1]."""
    return torch.from_numpy(synthetic_tiles.copy()).permute(0, 3, 1, 2).float().div(255.0).contiguous()
