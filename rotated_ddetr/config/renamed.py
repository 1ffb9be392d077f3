"""Config keys renamed since checkpoints were first written: old dotted key -> new dotted key.

Read by `Config.from_dict` (configs stored in old checkpoints) and `apply_overrides` (old keys on a command line);
both warn once, naming each old key and its new name. Python config files get no such leniency: assigning a renamed
attribute raises `ConfigError` with the new name (the file is ours to fix).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

RENAMED: dict[str, str] = {
    "train.lr": "optim.lr", "train.lr_backbone": "optim.lr_backbone", "train.weight_decay": "optim.weight_decay",
    "train.clip_max_norm": "optim.clip_max_norm", "train.lr_drop": "optim.lr_drop",
    "train.lr_drop_factor": "optim.lr_drop_factor", "train.lr_drop_time": "optim.lr_drop_time",
    "train.warmup_steps": "optim.warmup_steps",
    "train.class_weight": "loss.class_weight", "train.l1_weight": "loss.l1_weight",
    "train.overlap_weight": "loss.kld_weight", "train.angle_weight": "loss.angle_weight",
    "train.enc_positives": "loss.enc_positives", "train.focal_alpha": "loss.focal_alpha",
    "train.focal_gamma": "loss.focal_gamma", "train.match_class_weight": "loss.match_class_weight",
    "train.match_l1_weight": "loss.match_l1_weight", "train.match_iou_weight": "loss.match_iou_weight",
    "train.match_gaussian_weight": "loss.match_kld_weight",
    "train.eval_every": "eval.every", "train.eval_top_k": "eval.top_k", "train.eval_score_thr": "eval.score_threshold",
    "train.eval_nms_iou": "eval.nms_iou",
    "train.output_dir": "output.dir", "train.log_every": "output.log_every", "train.keep_last": "output.keep_last",
}  # fmt: skip


def upgrade_keys(keys: Iterable[str], source: str) -> list[str]:
    """`keys` with every renamed key replaced by its new name; one FutureWarning lists the replacements.

    Args:
        keys: dotted keys such as "train.eval_top_k".
        source: what held the keys, for the warning (e.g. "stored config", "override").

    Returns:
        The keys in the same order, renamed keys replaced.
    """
    keys = list(keys)
    old = [key for key in keys if key in RENAMED]
    if old:
        renames = ", ".join(f"{key} -> {RENAMED[key]}" for key in old)
        warnings.warn(f"{source}: renamed config keys read under their new names: {renames}", FutureWarning,
                      stacklevel=3)  # fmt: skip
    return [RENAMED.get(key, key) for key in keys]
