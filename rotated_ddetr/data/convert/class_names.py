"""Class-name files of the converters (`rotated-ddetr convert --classes FILE`) -> the class names, index = class id.

Two kinds: a YOLO `data.yaml` (`.yaml`/`.yml`; its `names:` as a list, or as the {id: name} mapping Ultralytics
writes) or a text file with one name per line (line k holds id k - 1). Names come out in the one-token form a DOTA
label line needs (`dota_class_name`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from rotated_ddetr.data.convert.common import ConvertError


def dota_class_name(name: object) -> str:
    """A class name as one DOTA token: surrounding space stripped, each run of inner whitespace replaced by "-".

    DOTA label lines are whitespace-separated, so "storage tank" (as Ultralytics' DOTAv1.yaml spells DOTA's
    "storage-tank") becomes "storage-tank".

    Raises:
        ValueError: the name is empty.
    """
    text = re.sub(r"\s+", "-", str(name).strip())
    if not text:
        raise ValueError(f"empty class name {name!r}")
    return text


def _yaml_names(path: Path, text: str) -> list[object]:
    """The `names:` of a YOLO data.yaml as a list (index = id)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConvertError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        return names
    if not isinstance(names, dict):
        raise ConvertError(f"{path}:names: expected `names:` as a list or an {{id: name}} mapping, got {names!r}")
    ids = sorted(names, key=str)
    if not all(isinstance(i, int) for i in ids) or sorted(ids) != list(range(len(ids))):
        raise ConvertError(f"{path}:names: expected the ids 0..{len(ids) - 1}, got {sorted(map(str, ids))}")
    return [names[i] for i in range(len(ids))]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Reads a class-name file: a YOLO data.yaml (`names:`) or a text file with one name per line.

    In a text file, trailing blank lines are ignored and an inner blank line is an error (it would shift every id
    after it). Names are made DOTA tokens (`dota_class_name`).

    Returns:
        The names; index = class id.

    Raises:
        ConvertError: unreadable YAML, no `names:`, ids that are not 0..N-1, an empty or repeated name (the message
            names the file and the line or key).
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConvertError(f"{path}: not UTF-8 text") from None
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    raw = _yaml_names(path, text) if is_yaml else text.rstrip().splitlines()
    names: list[str] = []
    for i, name in enumerate(raw):
        where = f"{path}:names[{i}]" if is_yaml else f"{path}:{i + 1}"  # the yaml key, or the text line
        try:
            names.append(dota_class_name("" if name is None else name))
        except ValueError:
            raise ConvertError(f"{where}: empty class name") from None
        if names[-1] in names[:-1]:
            raise ConvertError(f"{where}: class {names[-1]!r} repeats id {names.index(names[-1])}")
    if not names:
        raise ConvertError(f"{path}: no class names")
    return names
