"""What the subcommands' parsers share: the parser built from the module docstring, and the device flags."""

import argparse

from rotated_ddetr.structures import AMP_MODES


def command_parser(doc: str, prog: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the docstring's first paragraph and whose epilog is the rest, kept as written."""
    paragraphs = doc.split("\n\n")
    return argparse.ArgumentParser(prog=prog, description=paragraphs[0], epilog="\n\n".join(paragraphs[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """--device (auto: CUDA when available) and --amp (auto: bf16 where the device computes it natively)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto",
                        help="autocast (default auto: bf16 where the device computes it natively)")  # fmt: skip
