"""Checkpoints: training state (model, optimiser, schedule, scaler, counters, RNG, resolved config, classes) <-> file.

Written atomically (temp file + rename through `rotated_ddetr.fileio`) by the training loop; read back with
`torch.load(weights_only=True)` to resume training (`load_checkpoint`), to run inference (`load_model`) or, by name
and shape, to initialise a new run (`load_matching`). Release files are weights only: safetensors plus the config as
JSON beside them (`save_weights`, `load_weights`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rotated_ddetr.config import Config, ConfigError
from rotated_ddetr.fileio import atomic_open, atomic_write_text
from rotated_ddetr.model import Detector, build_model

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "model", "config", "classes", "epoch", "step")


class CheckpointError(ValueError):
    """A file that is not a usable rotated_ddetr checkpoint (the message names the file and the fault)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel (or any wrapper exposing `.module`)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclasses.dataclass
class MatchReport:
    """What `load_matching` loaded into a model and what it left at the model's own values.

    Attributes:
        loaded: names of the tensors copied from the file (name and shape matched), in the model's order.
        mismatched: name -> (shape in the file, shape in the model), for names both have.
        missing: names the model has and the file lacks.
        unexpected: names the file has and the model lacks (ignored).
    """

    loaded: list[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    missing: list[str]
    unexpected: list[str]

    @property
    def skipped(self) -> int:
        """How many of the model's tensors kept their own values (shape mismatch or missing in the file)."""
        return len(self.mismatched) + len(self.missing)


def load_matching(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> MatchReport:
    """Copies every tensor of `state_dict` whose name and shape match one of the model's (parameters and
    persistent buffers), leaving the others as they are: the partial load of fine-tuning.

    Args:
        model: the model (DDP-wrapped or not: names are those of the plain module, `unwrap`).
        state_dict: name -> tensor, e.g. the weights of `load_weights`; dtypes are converted to the model's.

    Returns:
        A `MatchReport` of what was loaded and what was skipped and why.
    """
    target = unwrap(model)
    own = target.state_dict()
    mismatched = {name: (tuple(value.shape), tuple(own[name].shape)) for name, value in state_dict.items()
                  if name in own and tuple(value.shape) != tuple(own[name].shape)}  # fmt: skip
    matching = {name: value for name, value in state_dict.items() if name in own and name not in mismatched}
    target.load_state_dict(matching, strict=False)  # loads exactly `matching`: every name and shape fits
    return MatchReport(
        loaded=[name for name in own if name in matching],
        mismatched=mismatched,
        missing=[name for name in own if name not in state_dict],
        unexpected=[name for name in state_dict if name not in own],
    )


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and every CUDA device) and Python's `random`, as tensors and plain values.

    numpy's legacy global RNG is not part of it: the project never draws from it (ruff NPY002).
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the RNG states captured by `rng_state` (CUDA states only for the devices present)."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    cfg: Config,
    classes: tuple[str, ...] | list[str],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int = 0,
    step: int = 0,
    batches_done: int = 0,
) -> None:
    """Writes a self-contained checkpoint atomically (a crash never leaves a half-written file).

    Args:
        path: the file to (over)write.
        model: the detector (DDP-wrapped or not).
        cfg: the resolved config (stored as its dict).
        classes: class names in label order.
        optimizer, scheduler, scaler: training state, or None.
        epoch: the epoch the next step belongs to (0-based).
        step: optimiser steps done so far.
        batches_done: batches of `epoch` already consumed (0 at an epoch boundary).
    """
    state = {
        "format_version": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "step": int(step),
        "batches_done": int(batches_done),
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "classes": list(classes),
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint with `torch.load(weights_only=True)` (tensors and plain containers only).

    Returns:
        The dict written by `save_checkpoint` ("model", "optimizer", "scheduler", "scaler", "epoch", "step",
        "batches_done", "rng", "config" (dict), "classes", "format_version").

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, or not a rotated_ddetr checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a damaged file
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from None
    missing = [key for key in _REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a rotated_ddetr checkpoint (missing {missing})")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {state['format_version']} is newer than this code ({FORMAT_VERSION})")
    return state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Detector, Config, tuple[str, ...]]:
    """The trained detector of a checkpoint (`.pth`) or of release weights (`.safetensors` + `.json`), for inference.

    The backbone's `pretrained` path is not needed (all weights come from the file).

    Returns:
        (model on `device` in eval mode, its resolved Config, its class names in label order).

    Raises:
        FileNotFoundError, CheckpointError: see `load_checkpoint`, `load_weights`; also a config or weights that do
            not fit.
    """
    weights, config, classes = load_weights(path)
    try:
        cfg = Config.from_dict(config)
    except ConfigError as error:
        raise CheckpointError(f"{path}: bad stored config ({error})") from None
    model = build_model(dataclasses.replace(cfg.model, pretrained=None))
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit the stored config ({error})") from None
    return model.to(device).eval(), cfg, classes


WEIGHTS_FORMAT = "rotated_ddetr.weights"


def weights_config_path(path: str | os.PathLike) -> Path:
    """The config JSON beside a weights file: `model.safetensors` -> `model.json`."""
    return Path(path).with_suffix(".json")


def save_weights(path: str | os.PathLike, model: nn.Module, cfg: Config, classes: tuple[str, ...] | list[str]) -> Path:
    """Writes a release file pair: the weights as safetensors at `path` (no pickle) and the resolved config and
    classes as JSON beside it (`weights_config_path`), both atomically. `load_weights` and `load_model` read it.

    Returns:
        The JSON's path.

    Raises:
        ValueError: `path` does not end in ".safetensors".
        ImportError: safetensors is not installed (`pip install safetensors`).
    """
    from safetensors.torch import save as save_safetensors  # optional: only the release files need it

    if Path(path).suffix != ".safetensors":
        raise ValueError(f"weights file must end in .safetensors, got {path}")
    # Tensors that share storage (none today) would be refused by safetensors: each is written as its own copy.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in unwrap(model).state_dict().items()}
    meta = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    meta["classes"] = list(classes)
    with atomic_open(path, "wb") as f:
        f.write(save_safetensors(tensors))
    atomic_write_text(weights_config_path(path), json.dumps(meta, indent=1) + "\n")
    return weights_config_path(path)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], tuple[str, ...]]:
    """The model weights, stored config (as a dict) and classes of a training checkpoint (`.pth`) or of a release
    pair (`.safetensors` + `.json`, `save_weights`), on the CPU.

    Raises:
        FileNotFoundError: the file, or the JSON beside a .safetensors, is missing.
        CheckpointError: unreadable, or not a rotated_ddetr file.
    """
    if Path(path).suffix != ".safetensors":
        state = load_checkpoint(path)
        return state["model"], state["config"], tuple(state["classes"])
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = weights_config_path(path)
    for required in (Path(path), meta_path):
        if not required.is_file():
            raise FileNotFoundError(f"weights file not found: {required} (a .safetensors needs its .json beside it)")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read the weights ({error})") from None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT or not {"config", "classes"} <= set(meta):
        raise CheckpointError(f"{meta_path}: not the config of rotated_ddetr weights (format {WEIGHTS_FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        version = meta["format_version"]
        raise CheckpointError(f"{meta_path}: format {version} is newer than this code ({FORMAT_VERSION})")
    return tensors, meta["config"], tuple(meta["classes"])
