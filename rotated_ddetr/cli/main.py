"""`rotated-ddetr SUBCOMMAND [options]`: dispatches to the subcommand's module, imported only when it runs."""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

PROG = "rotated-ddetr"
# name -> (module, one line for the overview): the overview needs no import of torch or of any subcommand.
SUBCOMMANDS = {
    "train": ("rotated_ddetr.cli.train", "train from a config (a shipped name, .py or .json) with dotted overrides"),
    "test": ("rotated_ddetr.cli.test", "run a checkpoint over a DOTA-layout folder: Task1 files and mAP"),
    "infer": ("rotated_ddetr.cli.infer", "tiled detection over scenes of any size: DOTA, GeoJSON, GeoPackage, PNG"),
    "evaluate": ("rotated_ddetr.cli.evaluate", "score a Task1 submission against labelTxt (the devkit's mAP)"),
    "split": ("rotated_ddetr.cli.split", "split a DOTA-layout dataset into tiles, as the DOTA devkit does"),
    "synth": ("rotated_ddetr.cli.synth", "write a procedural synthetic aerial dataset or large scene"),
    "convert": ("rotated_ddetr.cli.convert", "convert YOLO-OBB, rotated COCO, DIOR-R, HRSC2016, FAIR1M <-> DOTA"),
    "export": ("rotated_ddetr.cli.export", "export a checkpoint as ONNX, torch.export (.pt2) or safetensors"),
}


def _version() -> str:
    try:
        return metadata.version("rotated_ddetr")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def usage() -> str:
    """The overview `rotated-ddetr --help` prints."""
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: {PROG} SUBCOMMAND [options]   ({PROG} SUBCOMMAND --help for its options)", ""]
    lines += ["Rotated Deformable DETR for oriented objects in aerial and satellite imagery.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "options:", "  -h, --help     this overview", "  --version      the installed version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"{PROG}: error: unknown subcommand {name!r}; expected one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest, prog=f"{PROG} {name}")


if __name__ == "__main__":
    sys.exit(main())
