"""Write a procedural synthetic aerial dataset in DOTA layout (OUT/images/*.png + OUT/labelTxt/*.txt).

Six DOTA classes (plane, ship, small-vehicle, large-vehicle, storage-tank, tennis-court) on textured ground with
fields, water, roads, buildings, trees and shadows; deterministic by --seed (image i depends on (seed, i) only).

Examples:
    rotated-ddetr synth --out data/synthetic/train --images 2000 --size 512 --seed 0 --workers 2
    rotated-ddetr synth --out data/synthetic/val --images 200 --size 512 --seed 1
    rotated-ddetr synth --out data/scene --scene-size 8000 --format tif   # one large scene, in stripes

Scene mode (--scene-size) writes --images (default 1) large scenes scene_00000... rendered stripe by stripe: as PNG
(the pixels are assembled in memory, 3 bytes per pixel) or as a tiled, georeferenced GeoTIFF (--format tif).
Densities (--objects) are per 512 x 512 pixels, so a scene holds proportionally more objects.
"""

import argparse
import sys
import time
from pathlib import Path

from rotated_ddetr.cli.parsing import command_parser
from rotated_ddetr.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticOptions,
    image_name,
    write_dataset,
    write_scene,
)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write (images/, labelTxt/)")
    parser.add_argument("--images", type=int, default=None, help="number of images (default 100; scenes: 1)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--scene-size", type=int, default=None, help="write large scenes of this side instead")
    parser.add_argument("--format", choices=("png", "tif"), default="png", help="scene file format (default png)")
    parser.add_argument(
        "--objects",
        type=int,
        nargs=2,
        default=(5, 40),
        metavar=("MIN", "MAX"),
        help="labelled objects per 512 x 512 pixels (default 5 40)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.8, 1.25),
        metavar=("MIN", "MAX"),
        help="object size factor range per image (default 0.8 1.25)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=list(SYNTHETIC_CLASSES),
        choices=SYNTHETIC_CLASSES,
        metavar="CLASS",
        help=f"classes to generate (default all: {' '.join(SYNTHETIC_CLASSES)})",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    """Raises ValueError for values no generator run could use."""
    size = args.scene_size if args.scene_size is not None else args.size
    if size < 32 or size > 200_000:
        raise ValueError(f"image side must be in [32, 200000], got {size}")
    if args.images is not None and args.images < 0:
        raise ValueError(f"--images must be >= 0, got {args.images}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        _check(args)
        options = SyntheticOptions(objects=tuple(args.objects), scale=tuple(args.scale), classes=tuple(args.classes))
        start = time.perf_counter()
        if args.scene_size is None:
            images = 100 if args.images is None else args.images
            counts = write_dataset(args.out, images, size=args.size, seed=args.seed, options=options,
                                   workers=args.workers, progress=not args.quiet)  # fmt: skip
        else:
            images, counts = 1 if args.images is None else args.images, {}
            for index in range(images):
                name = image_name(index, prefix="scene")
                image_path = args.out / "images" / f"{name}.{args.format}"
                labels = write_scene(
                    image_path, args.out / "labelTxt" / f"{name}.txt", args.scene_size, args.seed, index, options
                )
                counts = {c: counts.get(c, 0) + labels.classes.count(c) for c in {*counts, *labels.classes}}
                print(f"{image_path}: {len(labels)} objects")
        seconds = time.perf_counter() - start
    except (OSError, ValueError, RuntimeError) as error:
        print(f"make_synthetic: error: {error}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{name} {counts.get(name, 0)}" for name in SYNTHETIC_CLASSES)
    print(f"wrote {images} images to {args.out} in {seconds:.1f} s ({summary})")
    return 0
