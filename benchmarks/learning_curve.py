"""Learning curve: train a config for N minutes (or steps), then held-out mAP50 (VOC07) of every checkpoint vs time.

Runs the documented commands as subprocesses (tools/make_synthetic.py for missing data sets, tools/train.py with
train.max_minutes or, with --steps, train.max_steps, tools/test.py on each per-epoch checkpoint and on
checkpoint_last.pth) and appends the table,
the machine description and the CPU share the run actually got (the machine may be shared) to RESULTS.md.

Examples:
    python benchmarks/learning_curve.py --work runs/curve --minutes 15 --train-seed 0 --val-seed 1
    python benchmarks/learning_curve.py --work runs/ablation --steps 800 loss.iou_aware=false   # a fixed step count
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import append_results, format_table, machine_description  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for data sets, the run and predictions")
    parser.add_argument("--config", default="synthetic_tiny", help="a shipped config's short name or a config file")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time (train.max_minutes)")
    parser.add_argument("--steps", type=int, help="train this many steps instead (train.max_steps; no time limit)")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--val-seed", type=int, default=1)
    parser.add_argument("--images", type=int, default=600, help="training images (default 600)")
    parser.add_argument("--val-images", type=int, default=200, help="held-out images (default 200)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides")
    return parser.parse_args(argv)


def _run(*args: str) -> subprocess.CompletedProcess:
    """A tool run with this checkout on PYTHONPATH; stdout captured, failures raised with their stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def _dataset(path: Path, images: int, size: int, seed: int) -> Path:
    if not (path / "labelTxt").is_dir():
        _run(str(ROOT / "tools" / "make_synthetic.py"), "--out", str(path), "--images", str(images), "--size",
             str(size), "--seed", str(seed), "--quiet")  # fmt: skip
    return path


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    values = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return sum(values) - values[3] - values[4], sum(values)


def _train(args: argparse.Namespace, train_root: Path, run_dir: Path) -> dict:
    """Runs tools/train.py; returns its wall time and the CPU share it got."""
    budget = f"train.max_steps={args.steps}" if args.steps else f"train.max_minutes={args.minutes}"
    command = [str(ROOT / "tools" / "train.py"), args.config, f"data.train_root={train_root}",
               budget, f"output.dir={run_dir}", "output.keep_last=0",
               *args.overrides, "--no-progress"]  # fmt: skip
    busy0, total0 = _cpu_jiffies()
    start, cpu0 = time.monotonic(), os.times()
    done = _run(*command)
    wall, cpu1 = time.monotonic() - start, os.times()
    busy1, total1 = _cpu_jiffies()
    own = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    cores = os.cpu_count() or 1
    return {"wall_s": wall, "summary": done.stdout.strip().splitlines()[-1], "own_cpu_share": own / (wall * cores),
            "machine_busy": (busy1 - busy0) / max(total1 - total0, 1)}  # fmt: skip


def _points(run_dir: Path, num_images: int) -> list[dict]:
    """(checkpoint, minutes, epoch, step, images) of every per-epoch checkpoint and of the final one."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    batch = json.loads((run_dir / "config.json").read_text())["train"]["batch_size"]
    steps_per_epoch = -(-num_images // batch)
    points = [{"checkpoint": run_dir / f"checkpoint_{r['epoch']:04d}.pth", "minutes": r["minutes"],
               "epoch": r["epoch"], "step": r["step"]} for r in records if r["kind"] == "epoch"]  # fmt: skip
    stops = [r for r in records if r["kind"] == "stop"]
    if stops and stops[-1]["batches_done"]:
        r = stops[-1]
        points.append({"checkpoint": run_dir / "checkpoint_last.pth", "minutes": r["minutes"],
                       "epoch": r["epoch"] + r["batches_done"] / steps_per_epoch, "step": r["step"]})  # fmt: skip
    for point in points:
        point["images"] = point["step"] * batch
    return points


def _commit() -> str:
    """The checkout's short commit hash, or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _throughput(run_dir: Path) -> float:
    """Median training images/s over the logged intervals."""
    rates = sorted(json.loads(line).get("images_per_s", 0.0) for line in (run_dir / "log.jsonl").open()
                   if '"kind": "train"' in line)  # fmt: skip
    return rates[len(rates) // 2] if rates else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train_root = _dataset(args.work / f"train_seed{args.train_seed}", args.images, args.size, args.train_seed)
    val_root = _dataset(args.work / f"val_seed{args.val_seed}", args.val_images, args.size, args.val_seed)
    run_dir = args.work / "run"
    if run_dir.exists():
        sys.exit(f"{run_dir} exists: pick a fresh --work folder")
    info = _train(args, train_root, run_dir)
    rows = []
    for point in _points(run_dir, len(list((train_root / "images").iterdir()))):
        out = args.work / "pred" / point["checkpoint"].stem
        _run(str(ROOT / "tools" / "test.py"), str(point["checkpoint"]), "--data", str(val_root), "--out", str(out),
             "--quiet")  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append({"minutes": round(point["minutes"], 2), "epoch": round(point["epoch"], 2), "step": point["step"],
                     "images seen": point["images"], "mAP50": metrics["mAP"]})  # fmt: skip
        print(format_table(rows[-1:]), flush=True)
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in metrics["AP"].items())
    notes = (
        f"Commit {_commit()}, "
        f"`{' '.join([args.config, *args.overrides])}`; train seed {args.train_seed} ({args.images} images), "
        f"held-out seed {args.val_seed} ({args.val_images} images), {args.size} px. Final: {info['summary']}. "
        f"Final per-class AP50: {per_class}. Training throughput (median of logged intervals): "
        f"{_throughput(run_dir):.2f} images/s. Wall {info['wall_s'] / 60:.1f} min; CPU share of this run "
        f"{info['own_cpu_share']:.0%}, machine busy {info['machine_busy']:.0%} (other users included)."
    )
    print(f"Machine: {machine_description()}\n{format_table(rows)}\n{notes}")
    if not args.no_record:
        budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
        append_results(f"learning_curve.py: mAP50 on held-out synthetic vs training minutes ({budget})", rows, notes)


if __name__ == "__main__":
    main()
