"""Train rotated Deformable DETR from a config file, with dotted overrides; single process or under torchrun (DDP).

Examples:
    python tools/train.py configs/synthetic_tiny.py data.train_root=data/synth train.max_minutes=15
    python tools/train.py configs/dota_v1_r50.py model.num_queries=800 optim.lr=1e-4 --resume work/checkpoint_last.pth
    torchrun --nproc_per_node 4 tools/train.py configs/dota_v1_r50.py data.train_root=data/dota_train_1024

Writes into output.dir: checkpoint_last.pth and checkpoint_{epoch:04d}.pth (self-contained: weights,
optimiser, schedule, RNG, resolved config, classes), config.json, log.jsonl and tensorboard/.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotated_ddetr.config import ConfigError, load_config  # noqa: E402
from rotated_ddetr.distributed import init_distributed, shutdown_distributed  # noqa: E402
from rotated_ddetr.training.loop import RunStopped, SetupError, train  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="config file (a Python file defining `cfg`), e.g. configs/synthetic_tiny.py")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    parser.add_argument("--resume", metavar="PATH", help="checkpoint to continue from exactly")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoints and log of an earlier run found in output.dir")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_intermixed_args(argv)


def _summary(result, output_dir: str) -> str:
    """Two lines on how the run ended and what data it trained on."""
    how = "time limit reached" if result.stopped_early else "done"
    text = f"{how}: epoch {result.epoch}, step {result.step}; checkpoint {result.checkpoint} (run folder {output_dir})"
    if result.metrics is not None:
        text += f"; val mAP50 {result.metrics['mAP']:.4f}"
    d = result.data
    text += (f"\ndata: {d['images']} images ({len(d['skipped_images'])} unreadable skipped), {d['objects']} objects "
             f"({d['objects_outside']} outside their images dropped); augmentation dropped {d['objects_dropped']} of "
             f"{d['objects_trained'] + d['objects_dropped']} object instances")  # fmt: skip
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        ctx = init_distributed(cfg.train.device)
    except (ConfigError, ValueError) as error:
        print(f"train: config error: {error}", file=sys.stderr)
        return 2
    try:
        result = train(cfg, ctx, args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    except SetupError as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stop:
        saved = f"work saved; continue with --resume {stop.checkpoint}" if stop.checkpoint else "nothing saved"
        print(f"train: stopped: {stop.reason} ({saved})", file=sys.stderr)
        return 130 if stop.reason == "interrupted" else 1
    except FloatingPointError as error:
        print(f"train: training diverged: {error}", file=sys.stderr)
        return 1
    finally:
        shutdown_distributed()
    if ctx.is_main:
        print(_summary(result, cfg.output.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
