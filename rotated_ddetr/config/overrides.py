"""Command-line overrides: `section.name=value` text -> typed values set on a copy of a `Config`.

The text is parsed by the field's type hint (numbers, true/false, none, tuples), then checked by the schema
(`schema.check_value`); old key names (`RENAMED`) are read under their new names with a warning.
"""

from __future__ import annotations

import ast
import copy
import types
import typing
from typing import Any, Literal

from rotated_ddetr.config.renamed import upgrade_keys
from rotated_ddetr.config.schema import Config, ConfigError, check_value, field_of, set_value


def parse_value(text: str, hint: Any, key: str) -> Any:
    """The value of type `hint` that `text` writes (not yet checked: `check_value` reports what does not fit).

    Values: numbers, true/false (also 1/0, yes/no), none/null (optional fields), tuples as `a,b` or `(1, 2)`,
    strings as written.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(parse_value(text, arg, key), arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        return {str(choice): choice for choice in args}.get(text, text)
    if origin is tuple:
        items = _literal(text, key) if text.strip().startswith(("(", "[")) else text.split(",")
        items = [] if items == [""] else items
        if not isinstance(items, list | tuple):
            return items
        item_types = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(items):
            return items  # check_value names the expected length
        return tuple(
            parse_value(v.strip(), t, key) if isinstance(v, str) else v for v, t in zip(items, item_types, strict=True)
        )
    return _scalar(text, hint, key)


def _literal(text: str, key: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key}: cannot read {text!r} as a Python literal") from None


def _scalar(text: str, hint: type, key: str) -> Any:
    """A bool, int or float written as `text` (a str field keeps the text as it is)."""
    if hint is str:
        return text
    value = text.strip().lower()
    if hint is bool:
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{key} must be true or false, got {text!r}")
        return value in ("true", "1", "yes")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be {hint.__name__}, got {text!r}") from None
    if hint is int and not number.is_integer():
        raise ConfigError(f"{key} must be an integer, got {text!r}")
    return hint(number)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `section.name=value` overrides applied (text parsed by the field's type).

    An old key name (`RENAMED`, e.g. `train.output_dir`) sets its new key (`output.dir`), with a FutureWarning.

    Raises:
        ConfigError: malformed override, unknown key (with the closest key named), derived key, or bad value.
    """
    cfg = copy.deepcopy(cfg)
    pairs = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=1e-4)")
        pairs.append((key.strip(), value))
    keys = upgrade_keys([key for key, _ in pairs], "override")
    for key, (_, value) in zip(keys, pairs, strict=True):
        f, hint = field_of(key)
        if f.metadata.get("derived"):
            raise ConfigError(f"{key} is derived (computed after overrides), it cannot be set")
        set_value(cfg, key, parse_value(value, hint, key))
    return cfg


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two `Config.to_dict` results, as "key: old -> new" (sorted).

    For messages that say why a checkpoint does not fit a config; keys only one side has show "(absent)".
    """

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    a, b = flat(old), flat(new)
    keys = sorted(k for k in {*a, *b} if a.get(k, "(absent)") != b.get(k, "(absent)"))
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in keys]
