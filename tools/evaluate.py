"""Scores a DOTA Task1 submission against labelTxt ground truth: prints per-class AP and the mAP (the devkit's numbers).

python tools/evaluate.py --dets DIR --labels DIR [--imageset FILE] [--metric voc07|area] [--iou-threshold 0.5]
                         [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rotated_ddetr.evaluation import eval_dota  # noqa: E402
from rotated_ddetr.evaluation.dota_map import METRICS, check_iou_threshold  # noqa: E402
from rotated_ddetr.evaluation.report import format_table  # noqa: E402
from rotated_ddetr.fileio import atomic_write_text  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DOTA Task1 rotated mAP, equal to the official devkit's voc_eval class by class.",
    )
    parser.add_argument("--dets", required=True, help="folder of Task1_{class}.txt submission files")
    parser.add_argument("--labels", required=True, help="labelTxt folder (or a dataset root holding labelTxt/)")
    parser.add_argument("--imageset", help="file with one image name per line (default: every label file)")
    parser.add_argument("--metric", choices=METRICS, default="voc07", help="11-point VOC07 (default) or area")
    parser.add_argument("--iou-threshold", "--iou-thr", type=float, default=0.5,
                        help="IoU a true positive must exceed, in [0, 1) (default 0.5)")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="also write the full result as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_iou_threshold(args.iou_threshold, "--iou-threshold")  # before any file is read
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = eval_dota(
                args.dets, args.labels, args.imageset, metric=args.metric, iou_threshold=args.iou_threshold
            )
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        print(format_table(result))
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    except (OSError, ValueError) as error:  # missing files, malformed lines (DotaFormatError names file:line)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
