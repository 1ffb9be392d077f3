"""Shared pytest set-up: CUDA tests skip without a GPU; the real DOTA samples are found beside the checkout."""

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` from the project root (real DOTA samples); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real DOTA samples not found at {SHARED_DATA} (only present in the project workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dota_samples(shared_data: Path) -> Path:
    """Root of the real DOTA-v1.0 samples: images/ (P0706, P1888) and labelTxt/ (7 label files)."""
    return shared_data / "dota_samples"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 synthetic images of 128 x 128 pixels with 2-7 objects each (the training and fault-injection tests)."""
    from rotated_ddetr.data.synthetic import SyntheticOptions, write_dataset

    root = tmp_path_factory.mktemp("tiny_synthetic")
    write_dataset(root, 4, size=128, seed=0, options=SyntheticOptions(objects=(40, 80)), progress=False)
    return root
