"""tools/train.py and tools/test.py end to end on a tiny synthetic set, their error messages for bad input, and
the old `--*-thr` aliases of the threshold flags."""

import importlib
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rotated_ddetr.checkpoint import load_checkpoint
from rotated_ddetr.data.dota import read_dota_labels
from rotated_ddetr.data.synthetic import SYNTHETIC_CLASSES, SyntheticOptions, write_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN = runpy.run_path(str(ROOT / "tools" / "train.py"))["main"]
TEST = runpy.run_path(str(ROOT / "tools" / "test.py"))["main"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, 4, size=128, seed=0, options=SyntheticOptions(objects=(40, 80)), progress=False)
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """The tiny synthetic config imported by path, shrunk further for a test."""
    path = tmp_path_factory.mktemp("configs") / "micro.py"
    path.write_text(
        "from rotated_ddetr.config import load_config_file\n"
        "cfg = load_config_file('synthetic_tiny')\n"
        "cfg.model.d_model, cfg.model.ffn_dim, cfg.model.enc_layers, cfg.model.dec_layers = 32, 64, 1, 1\n"
        "cfg.model.num_queries = 10\n"
        "cfg.data.scale = 1.0\n"
        "cfg.train.batch_size, cfg.train.num_workers, cfg.output.log_every = 2, 0, 1\n"
    )
    return path


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(ROOT / "tools" / tool), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_train_then_test(dataset, config_file, tmp_path):
    work = tmp_path / "work"
    done = _run("train.py", str(config_file), f"data.train_root={dataset}", f"output.dir={work}",
                "train.epochs=1", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "done: epoch 1, step 2" in done.stdout
    state = load_checkpoint(work / "checkpoint_last.pth")
    assert state["step"] == 2 and state["classes"] == list(SYNTHETIC_CLASSES)
    assert state["config"]["data"]["train_root"] == str(dataset) and state["config"]["model"]["d_model"] == 32
    assert json.loads((work / "config.json").read_text()) == state["config"]
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]

    out = tmp_path / "pred"
    done = _run("test.py", str(work / "checkpoint_last.pth"), "--data", str(dataset), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("Task1_*.txt")) == sorted(f"Task1_{c}.txt" for c in SYNTHETIC_CLASSES)
    lines = [line.split() for p in out.glob("Task1_*.txt") for line in p.read_text().splitlines()]
    assert lines and all(len(line) == 10 for line in lines)
    assert {line[0] for line in lines} <= {f"synth_{i:05d}" for i in range(4)}
    metrics = json.loads((out / "metrics.json").read_text())
    labels = [read_dota_labels(p) for p in (dataset / "labelTxt").glob("*.txt")]
    easy = sum(int(np.sum(label.difficult == 0)) for label in labels)
    assert sum(metrics["num_gt"].values()) == easy and 0.0 <= metrics["mAP"] <= 1.0
    assert f"{metrics['mAP']:.4f}" in done.stdout.splitlines()[-1]


def test_time_limit_exits_cleanly(dataset, config_file, tmp_path, capsys):
    code = TRAIN([str(config_file), f"data.train_root={dataset}", f"output.dir={tmp_path}",
                  "train.max_minutes=1e-6", "--no-progress"])  # fmt: skip
    assert code == 0 and "time limit reached: epoch 0, step 1" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "checkpoint_last.pth")["batches_done"] == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean optim.lr?"),
        (["data.train_root={missing}"], "dataset folder not found"),
        (["data.train_root={dataset}", "data.classes=plane,ship"], "unknown class"),
        (["data.train_root={dataset}", "data.val_root={missing}"], "no labelTxt/"),
        (["data.train_root={dataset}", "model.pretrained={missing}"], "pretrained backbone weights not found"),
        ([], "data.train_root is not set"),
    ],
)
def test_train_errors(dataset, config_file, tmp_path, capsys, overrides, message):
    args = [o.format(dataset=dataset, missing=tmp_path / "missing") for o in overrides]
    code = TRAIN([str(config_file), *args, f"output.dir={tmp_path / 'out'}", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_test_errors(dataset, tmp_path, capsys):
    assert TEST([str(tmp_path / "none.pth"), "--data", str(dataset), "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert TEST([str(tmp_path / "junk.pth"), "--data", str(dataset), "--out", str(tmp_path)]) == 2
    assert "cannot read the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "tool, args, attribute",
    [
        ("test", ["CKPT", "--data", "D", "--out", "O"], "score_threshold"),
        ("infer", ["CKPT", "SCENE", "--out", "O"], "score_threshold"),
        ("evaluate", ["--dets", "D", "--labels", "L"], "iou_threshold"),
    ],
)
def test_threshold_flags_keep_their_thr_aliases(tool, args, attribute):
    parse_args = importlib.import_module(f"rotated_ddetr.cli.{tool}").parse_args
    flag = "--" + attribute.replace("_", "-")
    assert getattr(parse_args([*args, flag, "0.25"]), attribute) == 0.25
    assert getattr(parse_args([*args, flag.replace("threshold", "thr"), "0.75"]), attribute) == 0.75
