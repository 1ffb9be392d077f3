"""Run a trained checkpoint over a DOTA-layout folder: Task1 submission files, DOTA mAP (metrics.json) and a table.

Example:
    rotated-ddetr test work/checkpoint_last.pth --data data/synth_val --out work/test

Images (DATA/images) are resized by the training scale stored in the checkpoint; detections are mapped back to the
original pixels and written as OUT/Task1_{class}.txt (polygons from the canonical rboxes). With DATA/labelTxt the
devkit's mAP (VOC07, IoU > 0.5) goes to OUT/metrics.json and the per-class table to stdout; without it (e.g. the DOTA
test set) only the submission is written. Every image is checked before the checkpoint loads: a bad one (empty,
truncated, not an image) stops the tool naming it, or with --skip-bad-images is left out, counted and not evaluated.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from rotated_ddetr.cli.parsing import add_device_flags, command_parser
from rotated_ddetr.data.dataset import DotaImages
from rotated_ddetr.data.dota import write_task1
from rotated_ddetr.distributed import resolve_device
from rotated_ddetr.evaluation import eval_dota, format_table
from rotated_ddetr.fileio import atomic_write_text, check_writable_folder
from rotated_ddetr.images import ImageError
from rotated_ddetr.inference import Predictor, predict_folder
from rotated_ddetr.inference.postprocess import check_postprocess_options

FLAGS = {"top_k": "--top-k", "score_threshold": "--score-threshold", "nms_iou": "--nms-iou"}  # messages' names


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by rotated-ddetr train")
    parser.add_argument("--data", required=True, type=Path, help="DOTA-layout folder: images/ (and labelTxt/)")
    parser.add_argument("--out", required=True, type=Path, help="folder for Task1_{class}.txt and metrics.json")
    parser.add_argument("--score-threshold", "--score-thr", type=float, default=None,
                        help="minimum score (default: the config's eval.score_threshold)")  # fmt: skip
    parser.add_argument("--top-k", type=int, default=None, help="detections kept per image (default: the config's)")
    parser.add_argument("--nms-iou", type=float, default=None,
                        help="class-wise rotated NMS IoU per image, 0 = none (default: the config's)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="image loading processes (default 1)")
    add_device_flags(parser)
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out unreadable images (counted; not evaluated) instead of stopping")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {args.workers}")
        given = {"top_k": args.top_k, "score_threshold": args.score_threshold, "nms_iou": args.nms_iou}
        check_postprocess_options(**given, names=FLAGS)  # before the checkpoint loads; None: the config's
        options = {key: value for key, value in given.items() if value is not None}  # the others: the config's
        images = DotaImages(args.data, args.skip_bad_images)  # every image checked before the checkpoint loads
        predictor = Predictor.from_checkpoint(args.checkpoint, resolve_device(args.device), args.amp, **options)
        check_writable_folder(args.out)
    except (OSError, ValueError) as error:  # ImageError too: a bad image, named
        print(f"test: error: {error}", file=sys.stderr)
        return 2
    classes = predictor.classes
    try:
        with torch.inference_mode():
            detections = predict_folder(predictor, images, batch_size=args.batch_size, num_workers=args.workers,
                                        progress=not args.quiet)  # fmt: skip
    except ImageError as error:
        print(f"test: error: {error}", file=sys.stderr)
        return 1
    write_task1(args.out, detections)
    count, skipped = sum(len(d) for d in detections.values()), images.skipped_images
    print(f"wrote {count} detections of {len(classes)} classes to {args.out}/Task1_*.txt", end="")
    print(f"; {len(skipped)} unreadable images skipped (not evaluated)" if skipped else "")
    labels = args.data / "labelTxt"
    if not labels.is_dir():
        print(f"no {labels}: evaluation skipped")
        return 0
    try:
        imageset = [path.stem for path in images.files] if skipped else None
        result = eval_dota(detections, labels, classes=list(classes), imageset=imageset)
    except ValueError as error:  # malformed label lines (file:line named), or nothing to evaluate
        print(f"test: error: {error}", file=sys.stderr)
        return 1
    atomic_write_text(args.out / "metrics.json", json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return 0
