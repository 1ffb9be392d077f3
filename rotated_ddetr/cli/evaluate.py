"""Scores a DOTA Task1 submission against labelTxt ground truth: prints per-class AP and the mAP (the devkit's numbers),
at one IoU threshold or several, by object size; writes curves and a confusion matrix, and the server's zip.

rotated-ddetr evaluate --dets DIR --labels DIR [--imageset FILE] [--metric voc07|area] [--iou-threshold 0.5]
                         [--sizes] [--plots DIR [--confusion-score 0.25]] [--json OUT]
                         [--zip OUT.zip --classes dota1.0|dota1.5|dota2.0]
--iou-threshold takes one value (default 0.5), a range start:stop:step (0.5:0.95:0.05, stop included) or a list
(0.5,0.75). --zip alone (no --labels) only packages the submission.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from rotated_ddetr.data.dota import dota_classes, read_task1
from rotated_ddetr.data.submission import write_task1_zip
from rotated_ddetr.evaluation import evaluate_matches, match_detections, parse_iou_thresholds
from rotated_ddetr.evaluation.dota_map import METRICS, check_iou_threshold
from rotated_ddetr.evaluation.plots import write_plots
from rotated_ddetr.evaluation.report import format_report
from rotated_ddetr.fileio import atomic_write_text

VERSIONS = ("dota1.0", "dota1.5", "dota2.0")


def _thresholds(text: str) -> float | tuple[float, ...]:
    try:
        return parse_iou_thresholds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="DOTA Task1 rotated mAP, equal to the official devkit's voc_eval class by class.",
    )
    parser.add_argument("--dets", required=True, help="folder of Task1_{class}.txt submission files")
    parser.add_argument("--labels", help="labelTxt folder (or a dataset root holding labelTxt/); needed unless --zip")
    parser.add_argument("--imageset", help="file with one image name per line (default: every label file)")
    parser.add_argument("--metric", choices=METRICS, default="voc07", help="11-point VOC07 (default) or area")
    parser.add_argument("--iou-threshold", "--iou-thr", type=_thresholds, default=0.5, metavar="T|A:B:STEP|T,T",
                        help="IoU a true positive must exceed, in [0, 1) (default 0.5); a range such as "
                             "0.5:0.95:0.05 (stop included) or a list 0.5,0.75 evaluates at each")  # fmt: skip
    parser.add_argument("--sizes", action="store_true", help="also AP by object size (COCO: sqrt area <32, 32-96, >96)")
    parser.add_argument("--plots", metavar="DIR", help="write per-class PR curves and a confusion matrix (CSV, PNG)")
    parser.add_argument("--confusion-score", type=float, default=0.25, metavar="S",
                        help="detections scoring below S stay out of the confusion matrix (default 0.25)")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="also write the full result as JSON here")
    parser.add_argument("--zip", metavar="OUT.zip", help="write the DOTA server's submission zip of --dets")
    parser.add_argument("--classes", choices=VERSIONS, help="dataset version whose classes --zip holds (needed by it)")
    return parser.parse_args(argv)


def _check(args: argparse.Namespace) -> tuple[float, ...]:
    """The thresholds, after every check that needs no file (ValueError: one line naming the flag)."""
    thresholds = args.iou_threshold if isinstance(args.iou_threshold, tuple) else (args.iou_threshold,)
    for t in thresholds:
        check_iou_threshold(t, "--iou-threshold")
    if not 0.0 <= args.confusion_score <= 1.0:
        raise ValueError(f"--confusion-score must be in [0, 1], got {args.confusion_score}")
    if args.zip and not args.classes:
        raise ValueError(f"--zip needs --classes ({'|'.join(VERSIONS)}): the server expects every class's file")
    if args.labels is None and not args.zip:
        raise ValueError("--labels is required (only --zip works without it)")
    if args.labels is None and (args.sizes or args.plots or args.json):
        raise ValueError("--sizes, --plots and --json need --labels")
    return thresholds


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        thresholds = _check(args)  # before any file is read
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if args.zip:
                entries = write_task1_zip(args.zip, read_task1(args.dets), dota_classes(args.classes[4:]))
            if args.labels is not None:
                matches = match_detections(args.dets, args.labels, args.imageset, thresholds)
                single = not isinstance(args.iou_threshold, tuple)
                result = evaluate_matches(matches, args.metric, args.sizes, single)
                if args.plots:
                    write_plots(args.plots, matches, args.metric, confusion_score=args.confusion_score)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        if args.labels is not None:
            print(format_report(result))
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        if args.zip:
            print(f"wrote {args.zip}: {len(entries)} Task1 files ({args.classes} classes)", file=sys.stderr)
    except (OSError, ValueError) as error:  # missing files, malformed lines (DotaFormatError names file:line)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
