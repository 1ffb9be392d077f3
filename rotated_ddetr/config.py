"""Typed configuration: config files (Python files defining `cfg`) + dotted overrides -> a resolved `Config`.

`load_config(path, overrides)` runs the file, applies `key=value` overrides with type checking, computes derived
values and validates; `Config.to_dict`/`from_dict` give the JSON form stored in checkpoints and `config.json`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import importlib
import os
import runpy
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rotated_ddetr.data.dota import DOTA_V1_0_CLASSES

_DERIVED = {"derived": True}  # field metadata: computed by `resolve`, never set by config files or overrides


class ConfigError(ValueError):
    """A config file or override that cannot be used: unknown key, wrong type, value out of range."""


@dataclass
class ModelConfig:
    """Primary hyper-parameters of the detector (derived values such as strides are computed in `build_model`).

    Attributes:
        depth: ResNet depth (18, 34, 50, 101).
        pretrained: local path of a torchvision ResNet state dict, or None (train the backbone from scratch).
        frozen_stages: ResNet stages frozen after the stem (1: stem + layer1, as Deformable DETR; 0: none).
        backbone_stages: ResNet stages used: 4 (layer2/3/4 give strides 8/16/32) or 3 (layer4 dropped, about a
            quarter less backbone compute; the stride-32 level then comes from a stride-2 conv like stride 64).
        backbone_norm: "frozen" (FrozenBatchNorm, for pretrained weights), "batch" or "group" (trainable: for
            training from scratch, where frozen random-init norms would normalise nothing).
        d_model: transformer width (a multiple of 32).
        n_heads: attention heads.
        n_levels: feature levels (strides 8, 16, 32, then 64, 128, ... from stride-2 convs).
        n_points: sampling points per head and level.
        enc_layers, dec_layers: encoder / decoder depth.
        ffn_dim: feed-forward hidden width.
        dropout: dropout probability.
        num_queries: decoder queries (DOTA needs >= 500: its tiles hold hundreds of objects).
        num_classes: object classes; derived from `data.classes` when resolved through `load_config`.
        two_stage: seed the decoder with the top-k encoder proposals instead of learned references.
        box_refine: iterative box refinement across decoder layers.
        proposal_nms_iou: two-stage: class-agnostic rotated NMS of the proposals before the top-k (0 = off), so the
            decoder starts from one proposal per object (see `TwoStageProposals`).
        dn_groups: noised copies of every target fed to the decoder in training (DN-DETR query denoising); 0 = off.
        dn_box_noise: denoising box noise scale (centre shift in half-sides, relative side change, angle / 45 deg).
        dn_label_noise: probability that a denoising query carries a random label.
    """

    depth: Literal[18, 34, 50, 101] = 50
    pretrained: str | None = None
    frozen_stages: int = 1
    backbone_stages: Literal[3, 4] = 4
    backbone_norm: Literal["frozen", "batch", "group"] = "frozen"
    d_model: int = 256
    n_heads: int = 8
    n_levels: int = 4
    n_points: int = 4
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 1024
    dropout: float = 0.1
    num_queries: int = 500
    num_classes: int = field(default=15, metadata=_DERIVED)
    two_stage: bool = True
    box_refine: bool = True
    proposal_nms_iou: float = 0.0
    dn_groups: int = 0
    dn_box_noise: float = 0.4
    dn_label_noise: float = 0.2


@dataclass
class DataConfig:
    """Datasets (DOTA layout: `images/` + `labelTxt/`) and augmentation.

    Attributes:
        train_root: training dataset root (required to train).
        val_root: held-out dataset root evaluated every `train.eval_every` epochs, or None.
        classes: class names in label order (e.g. DOTA_V1_0_CLASSES, SYNTHETIC_CLASSES); a label naming another
            class is an error.
        drop_difficult: difficult flags whose objects are removed from the training targets (e.g. (1, 2));
            () keeps them all (evaluation ignores difficult objects either way).
        keep_empty: keep training images without any (remaining) object.
        scale: every image is resized by this factor before the model (training and test); detections are mapped
            back to the original pixels.
        hflip, vflip: probabilities of a horizontal / vertical flip.
        rot90: probability of a rotation by a random multiple of 90 degrees.
        rotate: probability of a rotation by a uniform angle in [-rotate_degrees, rotate_degrees] (canvas kept).
        rotate_degrees: range of that rotation.
        scale_jitter: (min, max) extra random resize factor at training.
    """

    train_root: str | None = None
    val_root: str | None = None
    classes: tuple[str, ...] = DOTA_V1_0_CLASSES
    drop_difficult: tuple[int, ...] = ()
    keep_empty: bool = True
    scale: float = 1.0
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5
    rotate: float = 0.0
    rotate_degrees: float = 180.0
    scale_jitter: tuple[float, float] = (1.0, 1.0)


@dataclass
class TrainConfig:
    """Optimisation, schedule, loss weights, logging and checkpoints.

    Attributes:
        epochs: passes over the training set.
        lr, lr_backbone: AdamW learning rates of the transformer/heads and of the backbone.
        weight_decay: AdamW weight decay.
        clip_max_norm: gradient clipping by global norm (0 disables).
        lr_drop: epoch after which the learning rates drop by `lr_drop_factor` (step schedule; 0 = never).
        lr_drop_factor: that factor.
        lr_drop_time: with a time budget (`max_minutes`), also drop the rates once this fraction of it has passed
            (0 = only at epoch `lr_drop`): a budget may end long before the epoch-based drop.
        warmup_steps: linear learning-rate warmup: step s < warmup_steps runs at (s + 1) / warmup_steps of the rate.
        batch_size: images per process and step.
        num_workers: DataLoader worker processes (0 = load in the main process).
        amp: mixed precision: "none", "bf16" (autocast) or "fp16" (autocast + GradScaler).
        seed: seed of model init, data order and augmentation (offset by rank).
        eval_every: evaluate on `data.val_root` every this many epochs (0 = never; the last epoch always).
        log_every: log losses every this many steps.
        max_minutes: stop cleanly (finish the step, write the checkpoint, exit 0) after this much training time.
        keep_last: keep the newest N `checkpoint_{epoch:04d}.pth` files (0 = keep all).
        output_dir: checkpoints, `config.json`, `log.jsonl`, `tensorboard/`.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        class_weight, l1_weight, overlap_weight: loss weights (focal, L1 on normalised cx cy w h, KLD overlap).
        angle_weight: weight of the anisotropy-weighted angle loss (0 = off; see `SetCriterion`).
        match_class_weight, match_l1_weight, match_iou_weight, match_gaussian_weight: matcher cost weights.
        enc_positives: k > 0 supervises the two-stage proposals at every encoder token, each target taking its k
            cheapest tokens (one-to-many, `rotated_ddetr.training.assigner`); 0 keeps Deformable DETR's one-to-one
            loss on the top-k proposals.
        focal_alpha, focal_gamma: focal loss and focal matching cost parameters.
        eval_top_k: detections kept per image at evaluation (before the score threshold).
        eval_score_thr: minimum score of a kept detection at evaluation.
        eval_nms_iou: class-wise rotated NMS of each image's detections at evaluation and inference (0 = none).
    """

    epochs: int = 50
    lr: float = 2e-4
    lr_backbone: float = 2e-5
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    lr_drop: int = 40
    lr_drop_factor: float = 0.1
    lr_drop_time: float = 0.0
    warmup_steps: int = 0
    batch_size: int = 2
    num_workers: int = 2
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 42
    eval_every: int = 1
    log_every: int = 50
    max_minutes: float | None = None
    keep_last: int = 0
    output_dir: str = "work_dirs/run"
    device: str = "auto"
    class_weight: float = 2.0
    l1_weight: float = 5.0
    overlap_weight: float = 2.0
    angle_weight: float = 0.0
    match_class_weight: float = 2.0
    match_l1_weight: float = 5.0
    match_iou_weight: float = 2.0
    match_gaussian_weight: float = 0.0
    enc_positives: int = 0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    eval_top_k: int = 300
    eval_score_thr: float = 0.0
    eval_nms_iou: float = 0.0


@dataclass
class Config:
    """Everything a training run needs; `to_dict` is its JSON form (saved as `config.json` and in checkpoints)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable nested dict (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The config of a `to_dict` result (from a checkpoint); unknown keys and bad types raise ConfigError."""
        cfg = cls()
        for section, values in data.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config section {section!r}; expected one of {sorted(_SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping, got {type(values).__name__}")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, parse=False)
        return cfg


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON form)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _field(cfg: Config, key: str) -> tuple[Any, dataclasses.Field, Any]:
    """(the dataclass holding `key`, its field, its type hint) for a dotted key such as "model.num_queries"."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"unknown config key {key!r}: keys are section.name with section in {sorted(_SECTIONS)}")
    section_type = _SECTIONS[parts[0]]
    fields = {f.name: f for f in dataclasses.fields(section_type)}
    if parts[1] not in fields:
        close = difflib.get_close_matches(parts[1], fields, n=1)
        hint = f"; did you mean {parts[0]}.{close[0]}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}")
    return getattr(cfg, parts[0]), fields[parts[1]], typing.get_type_hints(section_type)[parts[1]]


def _convert(value: Any, hint: Any, key: str, parse: bool) -> Any:
    """`value` checked against (and, from text when `parse`, converted to) the type `hint`; ConfigError otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (parse and isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key, parse)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        choices = {str(c): c for c in args}
        if parse and isinstance(value, str) and value in choices:
            return choices[value]
        if value in args and type(value) in {type(c) for c in args}:
            return value
        raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        if parse and isinstance(value, str):
            value = _literal(value, key) if value.strip().startswith(("(", "[")) else value.split(",")
            value = [v.strip() if isinstance(v, str) else v for v in ([] if value == [""] else value)]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a sequence, got {value!r}")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{key} must have {len(item_types)} items, got {len(value)}: {value!r}")
        return tuple(_convert(v, t, key, parse) for v, t in zip(value, item_types, strict=True))
    return _scalar(value, hint, key, parse)


def _literal(text: str, key: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key}: cannot read {text!r} as a Python literal") from None


def _scalar(value: Any, hint: type, key: str, parse: bool) -> Any:
    """A bool, int, float or str value of the field `key`, parsed from text when `parse`."""
    if parse and isinstance(value, str) and hint is not str:
        text = value.strip().lower()
        if hint is bool:
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
            return text in ("true", "1", "yes")
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}") from None
        if hint is int and not number.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return hint(number)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not hint:
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _set(cfg: Config, key: str, value: Any, parse: bool) -> None:
    """Sets the dotted `key` to `value`, type-checked (and parsed from text when `parse`)."""
    section, f, hint = _field(cfg, key)
    setattr(section, f.name, _convert(value, hint, key, parse))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `section.name=value` overrides applied (text parsed by the field's type).

    Values: numbers, true/false, none (optional fields), tuples as `a,b` or `(1, 2)`, strings as written.

    Raises:
        ConfigError: malformed override, unknown key (with the closest key named), derived key, or bad value.
    """
    cfg = copy.deepcopy(cfg)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value (e.g. train.lr=1e-4)")
        _, f, _ = _field(cfg, key.strip())
        if f.metadata.get("derived"):
            raise ConfigError(f"{key.strip()} is derived (computed after overrides), it cannot be set")
        _set(cfg, key.strip(), value, parse=True)
    return cfg


def resolve(cfg: Config) -> Config:
    """A copy of `cfg` with the derived values computed and every value validated.

    Derived: `model.num_classes = len(data.classes)`.

    Raises:
        ConfigError: a wrongly typed or out-of-range value.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.num_classes = len(cfg.data.classes)
    for section in _SECTIONS:
        for f in dataclasses.fields(_SECTIONS[section]):
            key = f"{section}.{f.name}"
            _set(cfg, key, getattr(getattr(cfg, section), f.name), parse=False)  # type check, no conversion
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    """Range checks that types cannot express."""
    m, d, t = cfg.model, cfg.data, cfg.train
    checks = [
        (m.d_model % 32 == 0 and m.d_model % m.n_heads == 0, f"model.d_model={m.d_model}: need a multiple of 32 "
                                                             f"and of model.n_heads={m.n_heads}"),
        (0 <= m.frozen_stages <= m.backbone_stages,
         f"model.frozen_stages must be in [0, model.backbone_stages={m.backbone_stages}], got {m.frozen_stages}"),
        (m.pretrained is None or m.backbone_norm != "group", "model.pretrained needs backbone_norm frozen or batch"),
        (min(m.n_levels, m.n_points, m.enc_layers, m.dec_layers, m.num_queries, m.ffn_dim) >= 1,
         "model.n_levels, n_points, enc_layers, dec_layers, num_queries and ffn_dim must be >= 1"),
        (0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (0.0 <= m.proposal_nms_iou < 1.0, f"model.proposal_nms_iou must be in [0, 1), got {m.proposal_nms_iou}"),
        (m.dn_groups >= 0 and m.dn_box_noise >= 0 and 0 <= m.dn_label_noise <= 1, "model.dn_* out of range"),
        (len(d.classes) >= 1 and len(set(d.classes)) == len(d.classes), "data.classes must be distinct, >= 1"),
        (set(d.drop_difficult) <= {1, 2}, f"data.drop_difficult must hold 1 and/or 2, got {d.drop_difficult}"),
        (d.scale > 0 and 0 < d.scale_jitter[0] <= d.scale_jitter[1], "data.scale and data.scale_jitter must be > 0"),
        (all(0 <= p <= 1 for p in (d.hflip, d.vflip, d.rot90, d.rotate)), "augmentation probabilities in [0, 1]"),
        (t.epochs >= 1 and t.batch_size >= 1 and t.num_workers >= 0, "train.epochs, batch_size >= 1, workers >= 0"),
        (t.lr > 0 and t.lr_backbone >= 0 and t.weight_decay >= 0, "train.lr > 0, lr_backbone and weight_decay >= 0"),
        (t.clip_max_norm >= 0 and t.lr_drop >= 0 and t.warmup_steps >= 0, "train.clip_max_norm, lr_drop, warmup >= 0"),
        (t.eval_every >= 0 and t.log_every >= 1 and t.keep_last >= 0, "train.eval_every, keep_last >= 0, log >= 1"),
        (t.max_minutes is None or t.max_minutes > 0, f"train.max_minutes must be > 0 or none, got {t.max_minutes}"),
        (0.0 <= t.lr_drop_time < 1.0, f"train.lr_drop_time must be in [0, 1), got {t.lr_drop_time}"),
        (t.eval_top_k >= 1, f"train.eval_top_k must be >= 1, got {t.eval_top_k}"),
        (0.0 <= t.eval_nms_iou < 1.0, f"train.eval_nms_iou must be in [0, 1), got {t.eval_nms_iou}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load_config_file(path_or_module: str | os.PathLike) -> Config:
    """The `cfg` defined by a config file (a path ending in .py) or module (e.g. "configs.synthetic_tiny").

    Config files may import a base by path: `cfg = load_config_file(Path(__file__).with_name("base.py"))`.
    Returns a fresh copy (a module's `cfg` is never modified).

    Raises:
        ConfigError: the file is missing, defines no `Config` named `cfg`, or sets a derived value.
    """
    name = os.fspath(path_or_module)
    if name.endswith(".py") or os.sep in name:
        if not Path(name).is_file():
            raise ConfigError(f"config file not found: {name}")
        namespace = runpy.run_path(name)
    else:
        try:
            namespace = vars(importlib.import_module(name))
        except ModuleNotFoundError as error:
            raise ConfigError(f"config module {name!r} not found ({error})") from None
    cfg = namespace.get("cfg")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{name} must define `cfg = Config(...)`, found {type(cfg).__name__}")
    for section in _SECTIONS:
        for f in dataclasses.fields(_SECTIONS[section]):
            if f.metadata.get("derived") and getattr(getattr(cfg, section), f.name) != f.default:
                raise ConfigError(f"{name}: {section}.{f.name} is derived (computed after overrides), do not set it")
    return copy.deepcopy(cfg)


def load_config(path_or_module: str | os.PathLike, overrides: list[str] = ()) -> Config:
    """Config file + `key=value` overrides -> resolved, validated `Config` (see `apply_overrides`, `resolve`)."""
    return resolve(apply_overrides(load_config_file(path_or_module), list(overrides)))
