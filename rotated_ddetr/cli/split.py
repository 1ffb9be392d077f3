"""Split a DOTA-layout dataset (images/ + labelTxt/) into overlapping tiles, exactly as the official DOTA devkit.

Examples:
    rotated-ddetr split --src DOTA/train --dst DOTA/train_1024 --preset ss --workers 8
    rotated-ddetr split --src DOTA/val --dst DOTA/val_ms --tile-size 1024 --gap 500 --rates 0.5 1.0 1.5

Presets (the usual DOTA protocols; explicit --gap / --rates override them):
    ss  single scale: rate 1.0, gap 200 (1024 px tiles step by 824 px)
    ms  multi scale:  rates 0.5 1.0 1.5, gap 500 (tiles step by 524 px)

Output: DST/images/{image}__{rate}__{left}___{up}.png and DST/labelTxt/{same}.txt. Re-running skips tiles whose
image and label are both present, so an interrupted split can simply be started again. Every image is checked
before the first tile is written: a bad one (empty, truncated, not an image) stops the split naming it, or with
--skip-bad-images is left out and listed (exit status 1).
"""

import argparse
import sys
from pathlib import Path

from rotated_ddetr.cli.parsing import command_parser
from rotated_ddetr.data.split import PRESETS, SplitOptions, check_split_options, split_dataset
from rotated_ddetr.images import plain_message

DEFAULT_GAP = 200
DEFAULT_RATES = (1.0,)
FLAGS = {"tile_size": "--tile-size", "gap": "--gap", "rates": "--rates", "thresh": "--thresh", "workers": "--workers"}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("--src", required=True, type=Path, help="dataset root holding images/ and labelTxt/")
    parser.add_argument("--dst", required=True, type=Path, help="output root (created; existing tiles are kept)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="ss (1.0, gap 200) or ms (0.5 1.0 1.5, gap 500)")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side in pixels (default 1024)")
    parser.add_argument("--gap", type=int, default=None, help=f"tile overlap in pixels (default {DEFAULT_GAP})")
    parser.add_argument("--rates", type=float, nargs="+", default=None, help="resize rates (default 1.0)")
    parser.add_argument("--thresh", type=float, default=0.7, help="cut objects with less inside are difficult 2 (0..1)")
    parser.add_argument(
        "--pad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="zero-pad edge tiles to tile-size (default on, as the devkit)",
    )
    parser.add_argument("--skip-empty", action="store_true", help="write no tile without objects")
    parser.add_argument("--workers", type=int, default=1, help="processes, >= 1 (one image each at a time)")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out unreadable images (counted) instead of stopping at the first")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def build_options(args: argparse.Namespace) -> SplitOptions:
    """SplitOptions from the arguments: explicit --gap / --rates, else the preset's, else the defaults.

    Raises:
        ValueError: a value out of range, named by its flag (`check_split_options`; --workers too).
    """
    preset = PRESETS.get(args.preset, {})
    gap = args.gap if args.gap is not None else preset.get("gap", DEFAULT_GAP)
    rates = tuple(args.rates) if args.rates is not None else preset.get("rates", DEFAULT_RATES)
    check_split_options(args.tile_size, gap, rates, args.thresh, args.workers, names=FLAGS)
    return SplitOptions(
        tile_size=args.tile_size, gap=gap, rates=rates, thresh=args.thresh, pad=args.pad, skip_empty=args.skip_empty
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        options = build_options(args)
        if not args.src.is_dir():
            raise FileNotFoundError(f"{args.src}: no such source folder")
        counts = split_dataset(args.src, args.dst, options, workers=args.workers, progress=not args.quiet,
                               skip_bad_images=args.skip_bad_images)  # fmt: skip
    except (OSError, ValueError, RuntimeError) as error:  # ImageError (a ValueError) names the image
        print(f"split_dota: error: {plain_message(error)}", file=sys.stderr)
        return 1
    print(
        f"split {counts.images} images at rates {list(options.rates)}: {counts.written} tiles written, "
        f"{counts.existing} already present, {counts.empty_skipped} empty left out -> {args.dst}"
    )
    for path in counts.bad_images:
        print(f"split_dota: skipped unreadable image {path}", file=sys.stderr)
    return 1 if counts.bad_images else 0
