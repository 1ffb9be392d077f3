"""distributed.py without a process group (samplers, reductions, devices) and a real 2-process gloo run (slow)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rotated_ddetr.checkpoint import load_checkpoint
from rotated_ddetr.data.synthetic import SyntheticOptions, write_dataset
from rotated_ddetr.distributed import DistContext, SkipSampler, any_process, reduce_mean, resolve_device, train_sampler

ROOT = Path(__file__).resolve().parents[1]
SINGLE = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_sampler_split_seeded_and_skipped():
    data = list(range(10))
    ranks = [train_sampler(data, DistContext(r, 2, r, torch.device("cpu")), seed=5) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shards = [list(s) for s in ranks]
    assert sorted(shards[0] + shards[1]) == data and len(shards[0]) == 5  # a partition of the epoch
    again = train_sampler(data, DistContext(0, 2, 0, torch.device("cpu")), seed=5)
    again.set_epoch(3)
    assert list(again) == shards[0]
    again.set_epoch(4)
    assert list(again) != shards[0]
    single = train_sampler(data, SINGLE, seed=5)
    single.set_epoch(0)
    order = list(single)
    assert list(SkipSampler(single, 4)) == order[4:] and len(SkipSampler(single, 4)) == 6


def test_single_process_helpers():
    assert reduce_mean({"b": torch.tensor(2.0), "a": 1.5}, SINGLE) == {"a": 1.5, "b": 2.0}
    assert any_process(True, SINGLE) and not any_process(False, SINGLE)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, 4, size=128, seed=0, options=SyntheticOptions(objects=(40, 80)), progress=False)
    config = tmp_path / "micro.py"
    config.write_text(
        "from rotated_ddetr.config import load_config_file\n"
        "cfg = load_config_file('synthetic_tiny')\n"
        "cfg.model.d_model, cfg.model.ffn_dim, cfg.model.enc_layers, cfg.model.dec_layers = 32, 64, 1, 1\n"
        "cfg.model.num_queries, cfg.data.scale = 10, 1.0\n"
        "cfg.train.batch_size, cfg.train.num_workers, cfg.output.log_every, cfg.train.epochs = 1, 0, 1, 1\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tools" / "train.py"), str(config), f"data.train_root={data}",
           f"output.dir={tmp_path / 'work'}", "train.device=cpu", "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # 4 images over 2 ranks with batch 1: 2 steps; only rank 0 reports and writes.
    assert done.stdout.count("done: epoch 1, step 2") == 1, done.stdout
    state = load_checkpoint(tmp_path / "work" / "checkpoint_last.pth")
    assert state["step"] == 2 and state["epoch"] == 1
    lines = (tmp_path / "work" / "log.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 2
