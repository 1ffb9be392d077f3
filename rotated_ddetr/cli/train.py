"""Train rotated Deformable DETR from a config file, with dotted overrides; single process or under torchrun (DDP).

Examples:
    rotated-ddetr train synthetic_tiny data.train_root=data/synth train.max_minutes=15
    rotated-ddetr train dota_v1_r50 model.num_queries=800 optim.lr=1e-4 --resume work/checkpoint_last.pth
    torchrun --nproc-per-node 4 --no-python rotated-ddetr train dota_v1_r50 data.train_root=data/dota_train_1024

    rotated-ddetr train --print-config synthetic_tiny train.epochs=5 > my_config.json   # then: train my_config.json

CONFIG is a shipped config's short name (synthetic_tiny, dota_v1_r50), a Python file defining `cfg`, or a JSON
config as --print-config prints it (or a run's config.json). Under torchrun, `--no-python rotated-ddetr train ...`
or `-m rotated_ddetr train ...` start the installed command on every rank.

Writes into output.dir: checkpoint_last.pth and checkpoint_{epoch:04d}.pth (self-contained: weights,
optimiser, schedule, RNG, resolved config, classes), config.json, log.jsonl and tensorboard/.
"""

import argparse
import json
import sys

from rotated_ddetr.cli.parsing import command_parser
from rotated_ddetr.config import ConfigError, load_config
from rotated_ddetr.distributed import init_distributed, shutdown_distributed
from rotated_ddetr.training.loop import RunStopped, SetupError, train


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("config", help="a shipped config (synthetic_tiny, dota_v1_r50), a .py or a .json config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    parser.add_argument("--resume", metavar="PATH", help="checkpoint to continue from exactly")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoints and log of an earlier run found in output.dir")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (overrides applied) as JSON and exit")  # fmt: skip
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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
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
