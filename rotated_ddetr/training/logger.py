"""Run logs of the main process: scalars -> `log.jsonl` (one JSON object per line) and TensorBoard (`tensorboard/`).

Written by the training loop on rank 0 only; other ranks get a logger that writes nothing. A resumed run marks its
start with a "resume" record; `read_log` reads a log with the records that resume superseded left out.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends records to `output_dir/log.jsonl` and their numbers to TensorBoard under `output_dir/tensorboard`.

    Args:
        output_dir: the run folder (created when missing).
        enabled: False on non-main ranks (every call is then a no-op).
    """

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.enabled = enabled
        self._file = self._writer = None
        if enabled:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self._file = open(Path(output_dir) / "log.jsonl", "a", encoding="utf-8")  # closed by close()
            from torch.utils.tensorboard import SummaryWriter  # tensorboard is heavy: only where logs are written

            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Writes one record {"kind", "step", "time", **values}; numbers also go to TensorBoard as kind/name.

        Args:
            kind: "train", "eval", "epoch", ...
            step: the optimiser step (TensorBoard's x axis).
            values: JSON-serialisable values; non-finite floats are written as null.
        """
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(f"{kind}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        """Closes the files (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._writer.close()
            self._file = self._writer = None


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a `log.jsonl`, without those a resumed run superseded.

    A run killed after its last checkpoint has logged steps that the resumed run trains again; the resumed run
    writes a "resume" record at its checkpoint's step s first. At each such record, the earlier records with a step
    above s are dropped, so that every step appears once, as the run that continued logged it.

    Raises:
        ValueError: a line that is not a JSON object (the message names the file and line).
    """
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not a JSON record ({error.msg})") from None
            if record.get("kind") == "resume":
                records = [r for r in records if r["step"] <= record["step"]]
            records.append(record)
    return records
