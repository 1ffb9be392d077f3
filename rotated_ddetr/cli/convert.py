"""Convert datasets between the DOTA layout (images/ + labelTxt/) and YOLO-OBB, DIOR-R, HRSC2016, FAIR1M, rotated COCO.

Examples:
    rotated-ddetr convert --from yolo-obb --images Y/images/train --labels Y/labels/train --classes Y/data.yaml \\
        --dst DOTA/train
    rotated-ddetr convert --from coco-rotated --images C/images --labels C/annotations.json --dst DOTA/train
    rotated-ddetr convert --to yolo-obb --src DOTA/train --dst Y [--classes names.txt]
    rotated-ddetr convert --to coco-rotated --src DOTA/train --dst C

--from writes DST/images/ (symlinks, or copies with --copy) and DST/labelTxt/*.txt; --labels is the folder of label
files (YOLO txt; DIOR-R, HRSC2016, FAIR1M XML) or the json file (COCO). --to writes DST/images/ and DST/labels/ +
DST/data.yaml (YOLO-OBB) or DST/annotations.json (COCO; file_name relative to DST/images). --classes is a YOLO
data.yaml (its names:) or a text file with one name per line (line k = id k-1); YOLO-OBB input needs it.
A malformed file or an unknown class stops the conversion naming the file and line or element (exit status 1);
with --lenient it is skipped, counted and listed on stderr. Difficult flags become 0 in YOLO-OBB (it has none).
"""

import argparse
import sys
from pathlib import Path

from rotated_ddetr.cli.parsing import command_parser
from rotated_ddetr.data.convert.class_names import read_class_names
from rotated_ddetr.data.convert.coco_rotated import read_coco_rotated, write_coco_rotated
from rotated_ddetr.data.convert.common import write_dota_dataset
from rotated_ddetr.data.convert.xml_datasets import read_dior_r, read_fair1m, read_hrsc2016
from rotated_ddetr.data.convert.yolo_obb import read_yolo_obb, write_yolo_obb
from rotated_ddetr.images import plain_message

READERS = {  # --from choice -> read_X(images, labels, classes, lenient) -> (samples, report)
    "yolo-obb": read_yolo_obb,
    "dior-r": read_dior_r,
    "hrsc2016": read_hrsc2016,
    "fair1m": read_fair1m,
    "coco-rotated": read_coco_rotated,
}
WRITERS = {"yolo-obb": write_yolo_obb, "coco-rotated": write_coco_rotated}  # --to choice -> write_X(src, dst, ...)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog or "convert")  # parser.error lines read "convert: error: ..."
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=list(READERS), help="convert this format to DOTA")
    direction.add_argument("--to", dest="target", choices=list(WRITERS), help="convert DOTA to this format")
    parser.add_argument("--images", type=Path, help="--from: the folder of images")
    parser.add_argument("--labels", type=Path, help="--from: the folder of label files, or the COCO json")
    parser.add_argument("--src", type=Path, help="--to: the DOTA-layout root (images/, labelTxt/)")
    parser.add_argument("--dst", required=True, type=Path, help="the output folder (created)")
    parser.add_argument("--classes", type=Path, help="a YOLO data.yaml or a text file with one class name per line")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    parser.add_argument("--lenient", action="store_true", help="skip and count bad files, lines and entries")
    args = parser.parse_args(argv)
    needed = ("images", "labels") if args.source else ("src",)
    missing = [f"--{name}" for name in needed if getattr(args, name) is None]
    if missing:
        parser.error(f"{'--from' if args.source else '--to'} needs {' and '.join(missing)}")
    if args.source == "yolo-obb" and args.classes is None:
        parser.error("--from yolo-obb needs --classes FILE (a data.yaml or one class name per line): YOLO labels "
                     "hold class ids only")  # fmt: skip
    return args


def convert(args: argparse.Namespace):
    """Runs the conversion the arguments ask for; returns its ConversionReport."""
    classes = read_class_names(args.classes) if args.classes is not None else None
    if args.source:
        reader = READERS[args.source]
        if not args.labels.exists():
            raise FileNotFoundError(f"{args.labels}: no such file or folder (--labels)")
        samples, report = reader(args.images, args.labels, classes, lenient=args.lenient)
        return write_dota_dataset(samples, args.dst, copy=args.copy, report=report)
    if not args.src.is_dir():
        raise FileNotFoundError(f"{args.src}: no such folder (--src)")
    return WRITERS[args.target](args.src, args.dst, classes, copy=args.copy, lenient=args.lenient)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        report = convert(args)
    except (OSError, ValueError) as error:  # ConvertError, DotaFormatError, ImageError are ValueErrors
        print(f"convert: error: {plain_message(error)}", file=sys.stderr)
        return 1
    for message in report.skipped:
        print(f"convert: skipped: {message}", file=sys.stderr)
    print(f"converted {report.images} images, {report.objects} objects, {len(report.skipped)} skipped -> {args.dst}")
    return 0
