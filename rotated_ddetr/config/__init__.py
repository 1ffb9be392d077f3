"""Typed configuration: config files (Python files defining `cfg`) + dotted overrides -> a resolved `Config`.

`load_config(name, overrides)` runs the file (a path, a JSON config, or the short name of a shipped config:
`shipped_configs()`, e.g. "synthetic_tiny"), applies `key=value` overrides with type checking, computes derived
values and validates; `Config.to_dict`/`from_dict` give the JSON form stored in checkpoints and `config.json`.

Sections: `model` (the detector), `data` (datasets, augmentation), `train` (the run: epochs, batch_size, num_workers,
amp, seed, max_minutes, device), `optim` (AdamW and schedule), `loss` (criterion weights and the matcher's costs),
`eval` (periodic evaluation and the inference defaults: every, top_k, score_threshold, nms_iou) and `output` (dir,
log_every, keep_last).

Renamed keys: the optimiser, loss, evaluation and output fields once lived in `train` (`train.lr`,
`train.overlap_weight`, `train.eval_top_k`, `train.output_dir`, ...). `RENAMED` maps each old dotted key to its new
one (e.g. `train.eval_top_k` -> `eval.top_k`, `train.eval_score_thr` -> `eval.score_threshold`,
`train.overlap_weight` -> `loss.kld_weight`, `train.match_gaussian_weight` -> `loss.match_kld_weight`,
`train.output_dir` -> `output.dir`). Configs stored in old checkpoints (`Config.from_dict`) and old keys on the
command line (`apply_overrides`) still load, with a FutureWarning naming old -> new. In config files, assigning an
old or unknown attribute (`cfg.train.eval_top_k = 1000`, `cfg.train.epochz = 1`) raises `ConfigError` naming the new
key or the closest field.

Modules: `schema` (sections, `Config`, `ConfigError`, type checks), `validation` (`resolve`: derived values and
ranges), `overrides` (text -> typed values, `apply_overrides`, `config_differences`), `loading` (config files,
shipped configs, `load_config`), `renamed` (`RENAMED`).
"""

from rotated_ddetr.config.loading import load_config, load_config_file, shipped_configs
from rotated_ddetr.config.overrides import apply_overrides, config_differences
from rotated_ddetr.config.renamed import RENAMED
from rotated_ddetr.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
)
from rotated_ddetr.config.validation import resolve

__all__ = [
    "RENAMED",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_overrides",
    "config_differences",
    "load_config",
    "load_config_file",
    "resolve",
    "shipped_configs",
]
