"""The config schema: typed sections (model, data, train, optim, loss, eval, output) in one `Config`, and validation.

Sections reject unknown attributes (a typo or a renamed key in a config file is a `ConfigError`, not a silent new
attribute); `set_value` type-checks one dotted key; `to_dict`/`from_dict` give the JSON form stored in checkpoints
and `config.json` (`from_dict` also reads the old key names of `RENAMED`). `validation.resolve` computes the derived
values and checks every type and range.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from rotated_ddetr.config.renamed import RENAMED, upgrade_keys
from rotated_ddetr.data.dota import DOTA_V1_0_CLASSES

_DERIVED = {"derived": True}  # field metadata: computed by `resolve`, never set by config files or overrides


class ConfigError(ValueError):
    """A config file or override that cannot be used: unknown key, wrong type, value out of range."""


class _Section:
    """Base of the config dataclasses: only their fields can be assigned (else ConfigError naming the fix)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__dataclass_fields__:
            raise unknown_key(_prefix(type(self)) + name)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:  # only called for missing attributes
        key = _prefix(type(self)) + name
        hint = f" (renamed {RENAMED[key]!r})" if key in RENAMED else ""
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}{hint}")


@dataclass
class ModelConfig(_Section):
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
class DataConfig(_Section):
    """Datasets (DOTA layout: `images/` + `labelTxt/`) and augmentation.

    Attributes:
        train_root: training dataset root (required to train).
        val_root: held-out dataset root evaluated every `eval.every` epochs, or None.
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
        cache_images: keep the decoded, resized training images in memory (about 3 x H x W bytes each, per
            DataLoader process: best with `train.num_workers=0`) instead of decoding them every epoch.
        skip_bad_images: leave out the training images that fail the up-front check (empty, unknown format,
            truncated: `rotated_ddetr.images.probe_image`), with a warning naming them, instead of stopping.
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
    cache_images: bool = False
    skip_bad_images: bool = False


@dataclass
class TrainConfig(_Section):
    """The run: its length, batching, precision, seed, time budget and device.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per process and step.
        num_workers: DataLoader worker processes (0 = load in the main process).
        amp: mixed precision: "auto" (bf16 autocast where the device computes bf16 natively: Ampere+ GPUs, CPUs with
            AVX-512 BF16 or AMX; else float32), "none", "bf16" (autocast) or "fp16" (autocast + GradScaler).
        seed: seed of model init, data order and augmentation (offset by rank).
        max_minutes: stop cleanly (finish the step, write the checkpoint, exit 0) after this much training time.
        max_steps: stop cleanly the same way after this many optimiser steps (a budget independent of the
            machine's speed); with `max_minutes` too, whichever comes first.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        init_from: fine-tuning: a training checkpoint (.pth) or release weights (.safetensors with its .json) whose
            tensors initialise the new run's model wherever name and shape match (the others, e.g. the class heads
            of another class list, keep their fresh initialisation); optimiser and schedule start at step 0. None:
            the usual initialisation. Ignored, with a note in the log, by a run that continues with `--resume`.
    """

    epochs: int = 50
    batch_size: int = 2
    num_workers: int = 2
    amp: Literal["auto", "none", "bf16", "fp16"] = "none"
    seed: int = 42
    max_minutes: float | None = None
    max_steps: int | None = None
    device: str = "auto"
    init_from: str | None = None


@dataclass
class OptimConfig(_Section):
    """AdamW and its learning-rate schedule.

    Attributes:
        lr, lr_backbone: AdamW learning rates of the transformer/heads and of the backbone.
        weight_decay: AdamW weight decay.
        clip_max_norm: gradient clipping by global norm (0 disables).
        lr_drop: epoch after which the learning rates drop by `lr_drop_factor` (step schedule; 0 = never).
        lr_drop_factor: that factor.
        lr_drop_time: with a budget (`train.max_minutes`, `train.max_steps`), also drop the rates once this
            fraction of it has passed (0 = only at epoch `lr_drop`): a budget may end long before the epoch-based drop.
        warmup_steps: linear learning-rate warmup: step s < warmup_steps runs at (s + 1) / warmup_steps of the rate.
    """

    lr: float = 2e-4
    lr_backbone: float = 2e-5
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    lr_drop: int = 40
    lr_drop_factor: float = 0.1
    lr_drop_time: float = 0.0
    warmup_steps: int = 0


@dataclass
class LossConfig(_Section):
    """The set criterion's loss weights and the Hungarian matcher's cost weights (`training.trainer.build_criterion`).

    Attributes:
        class_weight, l1_weight, kld_weight: loss weights (focal, L1 on normalised cx cy w h, KLD loss).
        angle_weight: weight of the anisotropy-weighted angle loss (0 = off; see `SetCriterion`).
        enc_positives: k > 0 supervises the two-stage proposals at every encoder token, each target taking its k
            cheapest tokens (one-to-many, `rotated_ddetr.training.assigner`); 0 keeps Deformable DETR's one-to-one
            loss on the top-k proposals.
        iou_aware: the class loss is the varifocal loss towards each matched prediction's rotated IoU (the score
            learns localisation quality, which ranks the detections for mAP) instead of the focal loss towards 1.
        kld_symmetric: the KLD loss on the symmetric divergence (`training.kld.kld_loss`): the one-way divergence
            shortens elongated predictions whose angle is off.
        focal_alpha, focal_gamma: focal loss and focal matching cost parameters (and the varifocal negatives').
        match_class_weight, match_l1_weight, match_iou_weight, match_kld_weight: matcher cost weights.
    """

    class_weight: float = 2.0
    l1_weight: float = 5.0
    kld_weight: float = 2.0
    angle_weight: float = 0.0
    enc_positives: int = 0
    iou_aware: bool = False
    kld_symmetric: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    match_class_weight: float = 2.0
    match_l1_weight: float = 5.0
    match_iou_weight: float = 2.0
    match_kld_weight: float = 0.0


@dataclass
class EvalConfig(_Section):
    """Periodic evaluation in training, and the detection defaults of `rotated-ddetr test` and `Predictor`.

    Attributes:
        every: evaluate on `data.val_root` every this many epochs (0 = never; the last epoch always).
        top_k: detections kept per image (before the score threshold).
        score_threshold: minimum score of a kept detection.
        nms_iou: class-wise rotated NMS of each image's detections at evaluation and inference (0 = none).
    """

    every: int = 1
    top_k: int = 300
    score_threshold: float = 0.0
    nms_iou: float = 0.0


@dataclass
class OutputConfig(_Section):
    """Where and how often a run writes.

    Attributes:
        dir: checkpoints, `config.json`, `log.jsonl`, `tensorboard/`.
        log_every: log losses every this many steps.
        keep_last: keep the newest N `checkpoint_{epoch:04d}.pth` files (0 = keep all).
    """

    dir: str = "work_dirs/run"
    log_every: int = 50
    keep_last: int = 0


@dataclass
class Config(_Section):
    """Everything a training run needs; `to_dict` is its JSON form (saved as `config.json` and in checkpoints)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable nested dict (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The config of a `to_dict` result (from a checkpoint), old key names (`RENAMED`) included with a warning.

        Raises:
            ConfigError: an unknown section or key, or a wrongly typed value.
        """
        items = []
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r}; expected one of {sorted(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping, got {type(values).__name__}")
            items += [(f"{section}.{key}", value) for key, value in values.items()]
        cfg = cls()
        keys = upgrade_keys([key for key, _ in items], "stored config")
        for key, (_, value) in zip(keys, items, strict=True):
            set_value(cfg, key, value)
        return cfg


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "optim": OptimConfig,
            "loss": LossConfig, "eval": EvalConfig, "output": OutputConfig}  # fmt: skip


def _prefix(section_type: type) -> str:
    """The prefix of a section's dotted keys ("train." for `TrainConfig`); "" for `Config` itself."""
    return next((f"{name}." for name, t in SECTIONS.items() if t is section_type), "")


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON form)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def unknown_key(key: str) -> ConfigError:
    """The error for a dotted key that is no field: the new name of a renamed key, else the closest field's name."""
    if key in RENAMED:
        return ConfigError(f"config key {key!r} was renamed {RENAMED[key]!r}")
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        return ConfigError(f"unknown config key {key!r}: keys are section.name with section in {sorted(SECTIONS)}")
    known = {old.partition(".")[2]: new for old, new in RENAMED.items()}  # an old name points to its new key
    known |= {f.name: f"{section}.{f.name}" for f in dataclasses.fields(SECTIONS[section])}
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {known[close[0]]}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def field_of(key: str) -> tuple[dataclasses.Field, Any]:
    """(the dataclass field, its type hint) of a dotted key such as "model.num_queries"; ConfigError if none."""
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])} if section in SECTIONS else {}
    if name not in fields:
        raise unknown_key(key)
    return fields[name], typing.get_type_hints(SECTIONS[section])[name]


def check_value(value: Any, hint: Any, key: str) -> Any:
    """`value` checked against the type `hint` (ints accepted as floats, lists as tuples); ConfigError otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        if value in args and type(value) in {type(c) for c in args}:
            return value
        raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a sequence, got {value!r}")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{key} must have {len(item_types)} items, got {len(value)}: {value!r}")
        return tuple(check_value(v, t, key) for v, t in zip(value, item_types, strict=True))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not hint:
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Sets the dotted `key` of `cfg` to `value`, type-checked (`check_value`)."""
    f, hint = field_of(key)
    setattr(getattr(cfg, key.partition(".")[0]), f.name, check_value(value, hint, key))
