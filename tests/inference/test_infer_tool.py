"""Predictor and tools/infer.py: tile batches through a checkpoint's model, input scale mapped back to tile pixels;
the tool survives corrupt and truncated scenes, resumes, splits scenes over torchrun ranks, feeds tools/evaluate.py."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from rotated_ddetr.checkpoint import save_checkpoint
from rotated_ddetr.config import Config
from rotated_ddetr.data.dota import read_task1
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES
from rotated_ddetr.inference.predictor import Predictor
from rotated_ddetr.model import DetectorOutput, build_model
from tests.small_model import small_test_model_config

ROOT = Path(__file__).resolve().parents[2]


class _FixedModel(torch.nn.Module):
    """Predicts one box at the centre of each image's valid area, 0.2 x 0.1 of it; records the input shape."""

    size_divisor = 32

    def forward(self, images, masks):
        self.seen = tuple(images.shape)
        valid = ~masks
        sizes = torch.stack((valid.any(2).sum(1), valid.any(1).sum(1)), dim=1)  # (B, 2) (h, w)
        rboxes = torch.tensor([0.5, 0.5, 0.2, 0.1, 0.3]).expand(1, len(images), 1, 5)
        return DetectorOutput(torch.full((1, len(images), 1, 2), 3.0), rboxes, None, None, sizes)


@pytest.mark.parametrize("scale", [1.0, 0.5, 1.3])
def test_predictor_maps_the_input_scale_back_to_tile_pixels(scale):
    predictor = Predictor(_FixedModel(), ("a", "b"), scale=scale, top_k=2)
    tiles = [np.zeros((400, 600, 3), np.uint8), np.zeros((200, 100, 3), np.uint8)]
    first, second = predictor(tiles)
    h, w = round(400 * scale), round(600 * scale)
    assert predictor.model.seen == (2, 3, -(-h // 32) * 32, -(-w // 32) * 32)  # resized, padded to the divisor
    # The same normalised box in each tile's own pixels, whatever the scale (exact up to the rounded size).
    torch.testing.assert_close(first.rboxes[0], torch.tensor([300.0, 200.0, 120.0, 40.0, 0.3]), atol=0.5, rtol=0)
    torch.testing.assert_close(second.rboxes[0], torch.tensor([50.0, 100.0, 20.0, 20.0, 0.3]), atol=0.5, rtol=0)
    assert first.labels.tolist() == [0, 1] and predictor([]) == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with random weights, saved as tools/train.py saves checkpoints."""
    cfg = Config()
    cfg.model = small_test_model_config(len(SYNTHETIC_CLASSES))
    cfg.data.classes = SYNTHETIC_CLASSES
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, build_model(cfg.model), cfg, SYNTHETIC_CLASSES)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, dota_samples):
    """good.png, cut.png (truncated), junk.tif (not a TIFF), geo.tif (a georeferenced copy of P1888)."""
    folder = tmp_path_factory.mktemp("scenes")
    png = (dota_samples / "images" / "P1888.png").read_bytes()
    (folder / "good.png").write_bytes(png)
    (folder / "cut.png").write_bytes(png[: len(png) // 3])
    (folder / "junk.tif").write_bytes(b"II*\x00" + bytes(500))
    rgb = cv2.imread(str(dota_samples / "images" / "P1888.png"))[..., ::-1].transpose(2, 0, 1)
    profile = dict(driver="GTiff", width=712, height=557, count=3, dtype="uint8", tiled=True, blockxsize=256,
                   blockysize=256, crs="EPSG:32633", transform=Affine(0.3, 0, 5e5, 0, -0.3, 4.6e6))  # fmt: skip
    with rasterio.open(folder / "geo.tif", "w", **profile) as dst:
        dst.write(rgb)
    return folder


def _infer(*args, launcher=(sys.executable,)):
    command = [*launcher, str(ROOT / "tools" / "infer.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_infer_tool_survives_bad_scenes_and_resumes(checkpoint, scenes, tmp_path, dota_samples):
    out = tmp_path / "out"
    run = _infer(checkpoint, scenes, "--out", out, "--tile-size", 512, "--gap", 100, "--quiet")
    assert run.returncode == 1, run.stderr
    assert "cut.png: truncated PNG file" in run.stderr and "junk.tif: cannot open as a raster" in run.stderr
    assert "rank 0: 2 scenes done, 0 done before, 2 failed" in run.stdout
    assert sorted(p.name for p in (out / "scenes").iterdir()) == ["geo.txt", "good.txt"]
    assert (out / "pictures" / "geo.png").is_file() and (out / "geojson" / "good.geojson").is_file()
    task1 = read_task1(out)
    assert sorted(task1) == sorted(SYNTHETIC_CLASSES)
    assert {name for dets in task1.values() for name in dets.image_names} <= {"good", "geo"}
    again = _infer(checkpoint, scenes / "good.png", scenes / "geo.tif", "--out", out, "--quiet")
    assert again.returncode == 0 and "0 scenes done, 2 done before, 0 failed" in again.stdout
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("good", "geo"):
        (labels / f"{name}.txt").write_bytes((dota_samples / "labelTxt" / "P1888.txt").read_bytes())
    score = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "--dets", str(out), "--labels",
                            str(labels)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert score.returncode == 0, score.stderr
    assert 0.0 <= float(score.stdout.strip().splitlines()[-1].rsplit(":", 1)[1]) <= 1.0


@pytest.mark.slow
def test_infer_tool_splits_scenes_over_torchrun_ranks(checkpoint, scenes, tmp_path):
    out = tmp_path / "out"
    good = [scenes / "good.png", scenes / "geo.tif", scenes / "cut.png"]
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517")
    run = _infer(checkpoint, *good, "--out", out, "--tile-size", 512, "--quiet", "--formats", "dota", launcher=launcher)
    assert run.returncode != 0  # cut.png (rank 0's second scene) fails; the others finish
    assert "rank 0: 1 scenes done, 0 done before, 1 failed" in run.stdout
    assert "rank 1: 1 scenes done, 0 done before, 0 failed" in run.stdout
    assert sorted(p.name for p in (out / "scenes").iterdir()) == ["geo.txt", "good.txt"]
    assert not (out / "pictures").exists()
    assert {n for dets in read_task1(out).values() for n in dets.image_names} <= {"good", "geo"}
