"""Fine-tuning (`train.init_from`): a checkpoint or release weights -> the matching tensors of a new run's model.

When the class list changes and shares classes with the file's, the class-indexed tensors (class heads, denoising
label embedding: `Detector.class_rows`) are first remapped by class name: each shared class takes its row of the
file, new classes keep their fresh rows, classes the run no longer has are dropped. Without a shared class they load
by position when the count is the same, else keep their fresh initialisation.

Called by the training loop's set-up on a freshly built model, before the optimiser exists; the report it returns
becomes the "init_from" record of `log.jsonl` and the summary printed by the main process (`log_init`).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rotated_ddetr.checkpoint import MatchReport, load_matching, load_weights, unwrap
from rotated_ddetr.config import config_differences
from rotated_ddetr.model import Detector
from rotated_ddetr.training.logger import RunLogger

_SHOWN_GROUPS = 8  # per reason in the printed summary; the log record holds every name


@dataclass
class ClassRemap:
    """How the class-indexed tensors were remapped by class name (`remap_class_rows`)."""

    tensors: list[str]  # the remapped state-dict names
    shared: list[str]  # classes whose rows came from the file
    fresh: list[str]  # the run's classes the file lacks: fresh rows
    dropped: list[str]  # the file's classes the run lacks


@dataclass
class InitReport:
    """What `init_from` loaded from `path`: the `MatchReport`, the class names the file was trained for, and the
    class-row remapping (None: the class lists are equal, or share no class)."""

    path: str
    match: MatchReport
    file_classes: tuple[str, ...]
    classes: tuple[str, ...]
    remap: ClassRemap | None = None

    def record(self) -> dict[str, Any]:
        """The "init_from" record of `log.jsonl`: counts, every skipped name (with both shapes where they differ)."""
        m = self.match
        return {
            "from": self.path, "loaded": len(m.loaded), "skipped": m.skipped, "unexpected": len(m.unexpected),
            "shape_mismatch": {name: [list(a), list(b)] for name, (a, b) in m.mismatched.items()},
            "missing_in_file": m.missing, "unexpected_in_file": m.unexpected,
            "file_classes": list(self.file_classes), "same_classes": self.file_classes == self.classes,
            "class_rows": None if self.remap is None else dataclasses.asdict(self.remap),
        }  # fmt: skip

    def summary(self) -> str:
        """A few lines for the console: counts, then the skipped names grouped (`group_names`) by reason."""
        m = self.match
        total = len(m.loaded) + m.skipped
        lines = [f"init_from {self.path}: loaded {len(m.loaded)} of the model's {total} tensors; "
                 f"{m.skipped} keep their fresh initialisation"]  # fmt: skip
        shapes = {name: f"{_shape(a)} -> {_shape(b)}" for name, (a, b) in m.mismatched.items()}
        for label, names, detail in (("shape differs (file -> model)", list(m.mismatched), shapes),
                                     ("missing in the file", m.missing, {}),
                                     ("only in the file (ignored)", m.unexpected, {})):  # fmt: skip
            if names:
                lines.append(f"  {label}, {len(names)}: {'; '.join(group_names(names, detail, _SHOWN_GROUPS))}")
        if self.file_classes != self.classes:
            lines.append(f"  the file was trained for classes {list(self.file_classes)}, data.classes is "
                         f"{list(self.classes)}")  # fmt: skip
            if self.remap is not None:
                r = self.remap
                fresh, dropped = r.fresh or "none", r.dropped or "none"
                lines.append(f"  class rows of {len(r.tensors)} tensors remapped by name: {len(r.shared)} classes "
                             f"from the file, fresh rows for {fresh}, dropped {dropped}")  # fmt: skip
            elif len(self.file_classes) == len(self.classes):
                lines.append("  (no class in common, same count: the class heads loaded by position, row i = the "
                             "file's class i)")  # fmt: skip
        return "\n".join(lines)


def init_from(model: nn.Module, path: str | os.PathLike, classes: tuple[str, ...], model_config: dict) -> InitReport:
    """Loads the tensors of `path` that match `model` by name and shape (`checkpoint.load_matching`).

    Args:
        model: the new run's model (DDP-wrapped or not).
        path: a training checkpoint (.pth) or release weights (.safetensors with its .json beside it).
        classes: the new run's class names (`data.classes`), compared with the file's in the report.
        model_config: the new run's `model` section as a dict (`Config.to_dict()["model"]`), for the message of a
            file that matches nothing.

    Returns:
        The `InitReport`.

    Raises:
        FileNotFoundError, CheckpointError: a missing or unreadable file (`checkpoint.load_weights`).
        ValueError: no tensor of the file matches the model (the message lists how the model configs differ).
    """
    weights, config, file_classes = load_weights(path)
    weights, remap = remap_class_rows(unwrap(model), weights, tuple(file_classes), tuple(classes))
    match = load_matching(model, weights)
    if not match.loaded:
        differ = config_differences({"model": config.get("model", {})}, {"model": model_config})
        detail = "; ".join(differ[:6]) + ("; ..." if len(differ) > 6 else "") if differ else "none"
        raise ValueError(f"{path}: none of its {len(weights)} tensors matches this model by name and shape "
                         f"(model config, file -> now: {detail})")  # fmt: skip
    return InitReport(str(path), match, tuple(file_classes), tuple(classes), remap)


def remap_class_rows(
    model: Detector, weights: dict[str, torch.Tensor], file_classes: tuple[str, ...], classes: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], ClassRemap | None]:
    """The file's class-indexed tensors rewritten for the run's class list, by class name.

    For each tensor of `model.class_rows()` whose file version has the file's class count (plus the same trailing
    rows), a copy of the model's fresh tensor takes the file's row of every shared class and the file's trailing
    rows. Other tensors are returned as they are.

    Returns:
        (the weights, remapped where that applies; the `ClassRemap`, or None when the lists are equal or share no
        class: then nothing is changed).
    """
    shared = [name for name in classes if name in file_classes]
    if file_classes == classes or not shared:
        return weights, None
    own = model.state_dict()
    new_rows = torch.tensor([classes.index(name) for name in shared])
    file_rows = torch.tensor([file_classes.index(name) for name in shared])
    weights, remapped = dict(weights), []
    for name, count in model.class_rows().items():
        value, fresh = weights.get(name), own[name]
        extra = fresh.shape[0] - count  # trailing rows that are not classes (the denoising padding row)
        if value is None or value.shape[0] != len(file_classes) + extra or value.shape[1:] != fresh.shape[1:]:
            continue  # another layout: left to the shape check (reported, fresh)
        rows = fresh.detach().clone()
        rows[new_rows] = value[file_rows].to(rows.dtype)
        rows[count:] = value[len(file_classes) :].to(rows.dtype)
        weights[name] = rows
        remapped.append(name)
    fresh_classes = [name for name in classes if name not in file_classes]
    dropped = [name for name in file_classes if name not in classes]
    return weights, ClassRemap(remapped, shared, fresh_classes, dropped) if remapped else None


def log_init(logger: RunLogger, step: int, path: str, report: InitReport | None, show: bool) -> None:
    """Writes the "init_from" record of `log.jsonl` and, when `show`, prints the summary; `report` None: a resumed
    run, which ignored `train.init_from` (its own checkpoint holds the weights), says so instead."""
    if report is None:
        note = "ignored: --resume restores the run's own weights and training state"
        logger.log("init_from", step, {"from": str(path), "ignored": note})
        summary = f"init_from {path}: {note}"
    else:
        logger.log("init_from", step, report.record())
        summary = report.summary()
    if show:
        print(summary, flush=True)


def group_names(names: list[str], detail: dict[str, str], limit: int) -> list[str]:
    """Tensor names grouped over their layer indices, then by module when long: at most `limit` groups (then a
    count of the rest).

    Names that differ only in numeric parts, with the same `detail`, are one group: "decoder.class_heads.0.bias"
    and "decoder.class_heads.1.bias" -> "decoder.class_heads.{0,1}.bias"; `detail[name]` (e.g. the shapes) follows.
    While that gives more than `limit` groups, names are grouped by ever shorter module prefixes instead, without
    details: "encoder.layers.{0,1}.* (16)" stands for 16 tensors under those modules.
    """
    depth = max((name.count(".") + 1 for name in names), default=1)
    groups = _groups(names, detail, depth)
    while len(groups) > limit and depth > 1:
        depth -= 1
        groups = _groups(names, {}, depth)
    shown = []
    for (pattern, extra), members in list(groups.items())[:limit]:
        if len(members) == 1:  # the name itself, with its detail
            shown.append(f"{members[0][0]} {detail.get(members[0][0], '')}".rstrip())
            continue
        text = pattern
        for i in range(len(members[0][1])):
            options = sorted({numbers[i] for _, numbers in members}, key=int)
            text = text.replace("#", options[0] if len(options) == 1 else "{" + ",".join(options) + "}", 1)
        count = f" ({len(members)})" if pattern.endswith(".*") else ""
        shown.append(f"{text}{count} {extra}".rstrip())
    if len(groups) > limit:
        shown.append(f"... {len(groups) - limit} more groups (every name is in log.jsonl)")
    return shown


def _groups(names: list[str], detail: dict[str, str], depth: int) -> dict[tuple[str, str], list]:
    """(pattern of the first `depth` parts, numbers as "#", ".*" when cut; detail) -> [(name, its numbers), ...]."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for name in names:
        parts = name.split(".")
        head = parts[:depth]
        pattern = ".".join("#" if part.isdigit() else part for part in head) + (".*" if len(parts) > depth else "")
        groups[(pattern, detail.get(name, ""))].append((name, [part for part in head if part.isdigit()]))
    return groups


def _shape(shape: tuple[int, ...]) -> str:
    """(6, 64) -> "[6, 64]"."""
    return "[" + ", ".join(str(size) for size in shape) + "]"
