"""Export a trained checkpoint (or release weights) as ONNX, a torch.export program (.pt2) or safetensors weights.

Examples:
    rotated-ddetr export work_dirs/run/checkpoint_last.pth --format onnx --out model.onnx --image-size 1024 1024
    rotated-ddetr export work_dirs/run/checkpoint_last.pth --format pt2 --out model.pt2
    rotated-ddetr export work_dirs/run/checkpoint_last.pth --format safetensors --out model.safetensors

onnx and pt2 compute the model's raw outputs: input `images` float (B, 3, H, W) RGB in [0, 1] at exactly
--image-size (default: a 1024-px tile at the config's data.scale), any batch; outputs `logits` (B, Q, C) and
`rboxes` (B, Q, 5) normalised (cx, cy, w, h, angle). `rotated_ddetr.inference.postprocess_raw` turns them into
detections. ONNX uses standard operators only (the deformable sampling as GridSample; opset >= 18) and is checked by
onnx.checker; pt2 keeps the compiled op (load it with `import rotated_ddetr` before `torch.export.load`) and the
device it was exported on (--device). safetensors writes the weights and, beside them, OUT with .json for the config
and class names: `rotated_ddetr.load(OUT)` reads the pair, with no pickle. Files are written atomically. Needs the
export extra: pip install "rotated_ddetr[export]".
"""

import argparse
import sys
from pathlib import Path

from rotated_ddetr.checkpoint import CheckpointError, load_model, weights_config_path
from rotated_ddetr.cli.parsing import command_parser
from rotated_ddetr.export import FORMATS, MIN_OPSET, ExportError, export_model


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of rotated-ddetr train, or .safetensors weights")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size of the onnx/pt2 graph, multiples of the model's stride")  # fmt: skip
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (default and minimum {MIN_OPSET})")
    parser.add_argument("--device", default="cpu", help="device to trace on; pt2 programs keep it (default cpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        if args.format != "onnx" and args.opset != MIN_OPSET:
            raise ExportError(f"--opset applies to --format onnx only, not {args.format}")
        if args.format == "safetensors" and args.image_size is not None:
            raise ExportError("--image-size applies to onnx and pt2; safetensors holds weights only")
        if args.out.is_dir():
            raise ExportError(f"--out {args.out} is a folder; expected a file path")
        model, cfg, classes = load_model(args.checkpoint, args.device)
        written = export_model(model, cfg, classes, args.format, args.out, image_size=args.image_size,
                               opset=args.opset)  # fmt: skip
    except ImportError as error:  # onnx, onnxscript or safetensors missing
        print(f'export: error: {error.msg} (pip install "rotated_ddetr[export]")', file=sys.stderr)
        return 1
    except (ValueError, CheckpointError, OSError) as error:  # ExportError is a ValueError
        print(f"export: error: {error}", file=sys.stderr)
        return 1
    extra = f" and {weights_config_path(written)}" if args.format == "safetensors" else ""
    print(f"wrote {written}{extra} ({args.format}, {len(classes)} classes: {', '.join(classes)})")
    return 0
