"""Config validation: a `Config` -> a resolved copy, derived values computed and every type and range checked.

The last step of `load_config` (after the file and the overrides), and of any code building a `Config` by hand.
"""

from __future__ import annotations

import copy
import dataclasses

from rotated_ddetr.config.schema import SECTIONS, Config, ConfigError, set_value


def resolve(cfg: Config) -> Config:
    """A copy of `cfg` with the derived values computed and every value validated.

    Derived: `model.num_classes = len(data.classes)`.

    Raises:
        ConfigError: a wrongly typed or out-of-range value.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.num_classes = len(cfg.data.classes)
    for section, section_type in SECTIONS.items():
        for f in dataclasses.fields(section_type):
            set_value(cfg, f"{section}.{f.name}", getattr(getattr(cfg, section), f.name))  # type check only
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    """Range checks that types cannot express."""
    m, d, t, o, e, out = cfg.model, cfg.data, cfg.train, cfg.optim, cfg.eval, cfg.output
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
        (t.max_minutes is None or t.max_minutes > 0, f"train.max_minutes must be > 0 or none, got {t.max_minutes}"),
        (t.max_steps is None or t.max_steps > 0, f"train.max_steps must be > 0 or none, got {t.max_steps}"),
        (t.init_from is None or t.init_from.strip() != "", "train.init_from must be a file path or none"),
        (o.lr > 0 and o.lr_backbone >= 0 and o.weight_decay >= 0, "optim.lr > 0, lr_backbone and weight_decay >= 0"),
        (o.clip_max_norm >= 0 and o.lr_drop >= 0 and o.warmup_steps >= 0, "optim.clip_max_norm, lr_drop, warmup >= 0"),
        (0.0 <= o.lr_drop_time < 1.0, f"optim.lr_drop_time must be in [0, 1), got {o.lr_drop_time}"),
        (e.every >= 0, f"eval.every must be >= 0, got {e.every}"),
        (e.top_k >= 1, f"eval.top_k must be >= 1, got {e.top_k}"),
        (0.0 <= e.score_threshold <= 1.0, f"eval.score_threshold must be in [0, 1], got {e.score_threshold}"),
        (0.0 <= e.nms_iou < 1.0, f"eval.nms_iou must be in [0, 1), got {e.nms_iou}"),
        (out.log_every >= 1 and out.keep_last >= 0, "output.log_every >= 1 and output.keep_last >= 0"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
