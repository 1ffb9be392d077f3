"""Shared by the benchmark scripts: describe the machine, print a table of result rows, append it to RESULTS.md."""

import datetime
import os
import platform
from pathlib import Path

import torch

from rotated_ddetr.fileio import atomic_write_text

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_description() -> str:
    """One line: CPU model and cores, RAM, GPU (if any), load average, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # other jobs on the machine skew timings
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM, {gpu}, load average {load}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def format_table(rows: list[dict]) -> str:
    """A Markdown table of `rows` (dicts; columns in first-seen order, floats to 3 significant digits)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(col)) for col in columns) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, rows: list[dict], notes: str = "") -> None:
    """Appends a dated section with the machine description and the table to benchmarks/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nAppended by `benchmarks/*.py`.\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}, {stamp}\n\n- machine: {machine_description()}\n"
    if notes:
        section += f"- {notes}\n"
    atomic_write_text(RESULTS, text + section + "\n" + format_table(rows) + "\n")
