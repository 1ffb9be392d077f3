"""Config files (Python files defining `cfg`) + dotted overrides -> a resolved, validated `Config`.

A config file imports a base (a module, or another file by path), sets fields and leaves derived values alone;
`load_config` then applies the command line's overrides and resolves.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import runpy
from pathlib import Path

from rotated_ddetr.config.overrides import apply_overrides
from rotated_ddetr.config.schema import SECTIONS, Config, ConfigError
from rotated_ddetr.config.validation import resolve


def load_config_file(path_or_module: str | os.PathLike) -> Config:
    """The `cfg` defined by a config file (a path ending in .py) or module (e.g. "configs.synthetic_tiny").

    Config files may import a base by path: `cfg = load_config_file(Path(__file__).with_name("base.py"))`.
    Returns a fresh copy (a module's `cfg` is never modified).

    Raises:
        ConfigError: the file is missing, defines no `Config` named `cfg`, sets a derived value, or assigns a key
            that is not a field (a typo, or a renamed key: the message names the new one).
    """
    name = os.fspath(path_or_module)
    is_file = name.endswith(".py") or os.sep in name
    if is_file and not Path(name).is_file():
        raise ConfigError(f"config file not found: {name}")
    try:
        namespace = runpy.run_path(name) if is_file else vars(importlib.import_module(name))
    except ModuleNotFoundError as error:
        if is_file:
            raise
        raise ConfigError(f"config module {name!r} not found ({error})") from None
    except ConfigError as error:  # e.g. `cfg.train.output_dir = ...`: the message names the new key
        raise ConfigError(f"{name}: {error}") from None
    cfg = namespace.get("cfg")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{name} must define `cfg = Config(...)`, found {type(cfg).__name__}")
    for section, section_type in SECTIONS.items():
        for f in dataclasses.fields(section_type):
            if f.metadata.get("derived") and getattr(getattr(cfg, section), f.name) != f.default:
                raise ConfigError(f"{name}: {section}.{f.name} is derived (computed after overrides), do not set it")
    return copy.deepcopy(cfg)


def load_config(path_or_module: str | os.PathLike, overrides: list[str] = ()) -> Config:
    """Config file + `key=value` overrides -> resolved, validated `Config` (see `apply_overrides`, `resolve`)."""
    return resolve(apply_overrides(load_config_file(path_or_module), list(overrides)))
