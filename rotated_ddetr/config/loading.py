"""Config files (Python files defining `cfg`), JSON configs and shipped configs + dotted overrides -> a resolved
`Config`.

A config is named by
- a path to a Python file that defines `cfg` (it may import a base by path or module and set fields, leaving the
  derived values alone),
- a path to a JSON file: a resolved config as `rotated-ddetr train --print-config` prints it and runs store it
  (`config.json`),
- the short name of a config shipped in the package (`shipped_configs()`: `synthetic_tiny`, `dota_v1_r50`), which
  works after a plain `pip install`, without the repository,
- or a dotted module path (e.g. `rotated_ddetr.configs.synthetic_tiny`).
`load_config` then applies the command line's overrides and resolves.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import json
import os
import runpy
from pathlib import Path

from rotated_ddetr.config.overrides import apply_overrides
from rotated_ddetr.config.schema import SECTIONS, Config, ConfigError
from rotated_ddetr.config.validation import resolve

# The configs shipped with the package: files, not imported here (they import the layers above this one).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """Short name -> file of each config shipped in `rotated_ddetr/configs/`, e.g. {"synthetic_tiny": ...}."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.py")) if not p.name.startswith("_")}


def _config_source(name: str) -> tuple[str, str]:
    """("file" | "json" | "module", where) for a config name; shipped short names become their files."""
    if name.endswith(".json"):
        return "json", name
    if name.endswith(".py") or os.sep in name or "/" in name:
        return "file", name
    shipped = shipped_configs()
    if name in shipped:
        return "file", str(shipped[name])
    if "." in name:
        return "module", name
    close = difflib.get_close_matches(name, shipped, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown config {name!r}: expected a .py or .json file, a module, or a shipped config "
        f"({', '.join(shipped)}){hint}"
    )


def _json_config(path: str) -> Config:
    """The config of a JSON file (`Config.to_dict` form)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON config ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a JSON config must be an object of sections, got {type(data).__name__}")
    try:
        return Config.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def load_config_file(path_or_name: str | os.PathLike) -> Config:
    """The `cfg` of a config file, JSON config, shipped config or module (see the module docstring).

    Config files may import a base by path: `cfg = load_config_file(Path(__file__).with_name("base.py"))`, or by
    short name: `cfg = load_config_file("synthetic_tiny")`. Returns a fresh copy (a module's `cfg` is never
    modified). A JSON config is a resolved one: its derived values are recomputed by `resolve`, not checked here.

    Raises:
        ConfigError: the file is missing, defines no `Config` named `cfg`, sets a derived value, or assigns a key
            that is not a field (a typo, or a renamed key: the message names the new one); an unknown short name.
    """
    kind, name = _config_source(os.fspath(path_or_name))
    if kind == "json":
        return _json_config(name)
    if kind == "file" and not Path(name).is_file():
        raise ConfigError(f"config file not found: {name}")
    try:
        namespace = runpy.run_path(name) if kind == "file" else vars(importlib.import_module(name))
    except ModuleNotFoundError as error:
        if kind == "file":
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


def load_config(path_or_name: str | os.PathLike, overrides: list[str] = ()) -> Config:
    """Config (file, JSON, short name or module) + `key=value` overrides -> resolved, validated `Config`."""
    return resolve(apply_overrides(load_config_file(path_or_name), list(overrides)))
