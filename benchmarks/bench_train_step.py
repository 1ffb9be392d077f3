"""Training-step benchmark: a config's detector on synthetic tiles in memory -> s/step, images/s, peak memory.

python benchmarks/bench_train_step.py CONFIG [key=value ...] [--device cpu|cuda] [--steps 50] [--warmup 2]
    [--amp none|bf16|fp16] [--size 1024] [--threads N] [--json OUT]

Everything goes through the library: load_config (with the overrides), build_model and training.trainer.build_trainer
(criterion, AdamW, schedule and the Trainer's step as training runs it: autocast forward, float32 loss, backward,
clipping, AdamW step), on train.batch_size synthetic tiles of --size px (rotated_ddetr.data.synthetic.training_samples)
reused every step. Peak memory is torch.cuda.max_memory_allocated on CUDA and the process's peak RSS
(resource.getrusage) on CPU.
"""

import argparse
import functools
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rotated_ddetr.config import load_config  # noqa: E402
from rotated_ddetr.data.batching import collate  # noqa: E402
from rotated_ddetr.data.synthetic import training_samples  # noqa: E402
from rotated_ddetr.model import build_model  # noqa: E402
from rotated_ddetr.structures import AMP_MODES  # noqa: E402
from rotated_ddetr.training.trainer import Trainer, build_trainer  # noqa: E402

# The config keys this script reads or sets, in one place (config sections may be renamed: adapt here only).
MODEL_SECTION = "model"
AMP_KEY = "train.amp"
BATCH_SIZE_KEY = "train.batch_size"
CLASSES_KEY = "data.classes"
MIB = 2**20


def value(cfg, key: str):
    """The config value at a dotted key, e.g. value(cfg, "train.amp")."""
    return functools.reduce(getattr, key.split("."), cfg)


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch (CUDA) or the process's peak resident set (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(cfg, device: torch.device) -> Trainer:
    """The detector, criterion, AdamW and per-step schedule of a resolved config, as the training loop builds them."""
    return build_trainer(cfg, build_model(value(cfg, MODEL_SECTION)).to(device), device, steps_per_epoch=1)


def run(cfg, device: torch.device, steps: int, warmup: int, size: int, seed: int = 0) -> dict:
    """Builds the trainer, makes one synthetic batch, runs warmup + timed steps; returns the measurements."""
    torch.manual_seed(seed)
    trainer = make_trainer(cfg, device)
    batch_size = value(cfg, BATCH_SIZE_KEY)
    samples = training_samples(seed, batch_size, size, value(cfg, CLASSES_KEY))
    batch = collate(samples, trainer.model.size_divisor).to(device)  # on the device once: the step alone is timed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        losses.append(trainer.step(batch)["loss"])  # returns floats: the step is complete on the device
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    mean = statistics.fmean(times)
    cpu = f"cpu ({torch.get_num_threads()} threads)"
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "amp": value(cfg, AMP_KEY),
        "batch": batch_size,
        "size_px": size,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "s_per_step": mean,
        "s_per_step_min": min(times),
        "images_per_s": batch_size / mean,
        "peak_memory_mib": peak_memory_mib(device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (getrusage)",
        "losses_finite": all(math.isfinite(loss) for loss in losses),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="config file, e.g. dota_v1_r50 or a .py file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.num_queries=300")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=50, help="timed optimiser steps (default 50)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--amp", choices=AMP_MODES,
                        help=f"sets {AMP_KEY} (default: the config's)")  # fmt: skip
    parser.add_argument("--size", type=int, default=1024, help="synthetic tile side in pixels (default 1024)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.size < 64:
        parser.error("need --steps >= 1, --warmup >= 0 and --size >= 64")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"{AMP_KEY}={args.amp}"] if args.amp else [])
    cfg = load_config(args.config, overrides)
    result = {"config": args.config, "overrides": " ".join(overrides), "torch": torch.__version__}
    result |= run(cfg, device, args.steps, args.warmup, args.size)
    for key, item in result.items():
        print(f"{key:18} {item:.4g}" if isinstance(item, float) else f"{key:18} {item}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["losses_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
