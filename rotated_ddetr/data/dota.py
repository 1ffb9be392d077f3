"""DOTA label, Task1 submission and scene result files: text on disk <-> numpy polygons (pixels), classes, scores.

Sits at the file boundary of the pipeline: read by splitting, the dataset and evaluation; written by the synthetic
generator, the splitter and the inference writers. Every writer goes through `rotated_ddetr.fileio.atomic_write_text`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotated_ddetr import boxes
from rotated_ddetr.fileio import atomic_write_text

DOTA_V1_0_CLASSES: tuple[str, ...] = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle", "ship",
    "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout", "harbor",
    "swimming-pool", "helicopter",
)  # fmt: skip
DOTA_V1_5_CLASSES: tuple[str, ...] = (*DOTA_V1_0_CLASSES, "container-crane")
DOTA_V2_0_CLASSES: tuple[str, ...] = (*DOTA_V1_5_CLASSES, "airport", "helipad")
_CLASSES_BY_VERSION = {"1.0": DOTA_V1_0_CLASSES, "1.5": DOTA_V1_5_CLASSES, "2.0": DOTA_V2_0_CLASSES}
_TASK1_PREFIX = "Task1_"
MAX_COORDINATE = 2.0**53  # refused beyond: float64 no longer holds whole pixels there (and areas would overflow)


class DotaFormatError(ValueError):
    """A malformed line in a DOTA label or Task1 file; the message names the file, the line and the fault."""

    def __init__(self, path: str | os.PathLike, line_no: int, problem: str):
        super().__init__(f"{path}:{line_no}: {problem}")
        self.path, self.line_no, self.problem = str(path), line_no, problem


def dota_classes(version: str) -> tuple[str, ...]:
    """The official class names of a DOTA version ("1.0", "1.5" or "2.0"; a leading "v" is accepted)."""
    key = version.lower().removeprefix("v")
    if key not in _CLASSES_BY_VERSION:
        raise ValueError(f"unknown DOTA version {version!r}; expected one of {sorted(_CLASSES_BY_VERSION)}")
    return _CLASSES_BY_VERSION[key]


@dataclass
class DotaLabels:
    """The objects of one DOTA image.

    Attributes:
        polygons: (N, 8) float64, x1 y1 ... x4 y4 in pixels, in the order written in the file.
        classes: N class names.
        difficult: (N,) int64; 0 easy, 1 difficult (official), 2 mostly cut off by splitting.
        image_source: the `imagesource:` header ("GoogleEarth", "GF", ...) or None when absent.
        gsd: the `gsd:` header in metres per pixel, or None when absent or "null".
    """

    polygons: np.ndarray
    classes: list[str]
    difficult: np.ndarray
    image_source: str | None = None
    gsd: float | None = None

    def __post_init__(self) -> None:
        self.polygons = np.asarray(self.polygons, dtype=np.float64).reshape(-1, 8)
        self.classes = [str(c) for c in self.classes]
        self.difficult = np.asarray(self.difficult, dtype=np.int64).reshape(-1)
        n = len(self.polygons)
        if len(self.classes) != n or len(self.difficult) != n:
            raise ValueError(f"{n} polygons but {len(self.classes)} classes and {len(self.difficult)} difficult flags")

    def __len__(self) -> int:
        return len(self.polygons)

    def rboxes(self) -> np.ndarray:
        """(N, 5) float64 canonical (le90) rboxes: the minimum-area rectangles of the polygons."""
        return np.asarray(boxes.polygons_to_rboxes(self.polygons), dtype=np.float64).reshape(-1, 5)


@dataclass
class Task1Detections:
    """The detections of one class in a Task1 submission (`Task1_{class}.txt`), in file order.

    Attributes:
        image_names: N image names (file stems, e.g. "P0706").
        scores: (N,) float64 confidences.
        polygons: (N, 8) float64, x1 y1 ... x4 y4 in pixels.
    """

    image_names: list[str]
    scores: np.ndarray
    polygons: np.ndarray

    def __post_init__(self) -> None:
        self.image_names = [str(name) for name in self.image_names]
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.polygons = np.asarray(self.polygons, dtype=np.float64).reshape(-1, 8)
        n = len(self.image_names)
        if len(self.scores) != n or len(self.polygons) != n:
            raise ValueError(f"{n} image names but {len(self.scores)} scores and {len(self.polygons)} polygons")

    def __len__(self) -> int:
        return len(self.image_names)


@dataclass
class SceneResult:
    """One scene's detections as its result file holds them (`write_scene_result`); `inference.writers` makes them.

    Attributes:
        polygons: (K, 8) float64 x1 y1 ... x4 y4 in scene pixels (the rboxes' corners in the convention's order).
        classes: K class names.
        scores: (K,) float64.
    """

    polygons: np.ndarray
    classes: list[str]
    scores: np.ndarray


def _float_text(value: float) -> str:  # the shortest positional text that reads back as `value`
    text = repr(value)
    if "e" in text or "n" in text:  # exponent, nan or inf
        return np.format_float_positional(value, unique=True, trim="-")
    return text


def format_numbers(values: np.ndarray) -> list[str]:
    """Shortest text that reads back to the same float64: integers as "12", others as "12.5", never exponents."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    integral = (values == np.round(values)) & (np.abs(values) < 2.0**53)
    out = np.empty(len(values), dtype=object)
    out[integral] = list(map(str, values[integral].astype(np.int64).tolist()))
    out[~integral] = list(map(_float_text, values[~integral].tolist()))
    return out.tolist()


def _read_lines(path: Path) -> list[str]:
    """The lines of a text file (UTF-8, BOM and CRLF tolerated); DotaFormatError for binary or non-UTF-8 data."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_no = data.count(b"\n", 0, error.start) + 1
        raise DotaFormatError(path, line_no, f"not UTF-8 text (byte 0x{data[error.start]:02x})") from None
    if "\0" in text:
        raise DotaFormatError(path, text.count("\n", 0, text.index("\0")) + 1, "binary data (a NUL byte), not text")
    return text.splitlines()


def _is_number(token: str) -> bool:  # whether float(token) succeeds
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_coordinates(path: Path, line_no: int, tokens: list[str], what: str) -> list[float]:
    """Floats of `tokens`; DotaFormatError naming the first one that is not a finite number."""
    try:
        values = list(map(float, tokens))
    except ValueError:
        bad = next(token for token in tokens if not _is_number(token))
        raise DotaFormatError(path, line_no, f"non-numeric {what} {bad!r}") from None
    bad = next((value for value in values if not abs(value) <= MAX_COORDINATE), None)  # also NaN and inf
    if bad is not None:
        problem = "non-finite" if bad != bad or abs(bad) == float("inf") else "out-of-range (beyond +-2^53)"
        raise DotaFormatError(path, line_no, f"{problem} {what} {tokens[values.index(bad)]!r}")
    return values


def _parse_header(path: Path, line_no: int, line: str, labels: dict) -> bool:
    """Stores an `imagesource:` / `gsd:` header line in `labels`; False when `line` is no header."""
    key, sep, value = line.partition(":")
    key, value = key.strip().lower(), value.strip()
    if not sep or key not in ("imagesource", "gsd") or " " in key:
        return False
    if key == "imagesource":
        labels["image_source"] = value or None
    elif value.lower() in ("", "null", "none"):
        labels["gsd"] = None
    else:
        labels["gsd"] = _parse_coordinates(path, line_no, [value], "gsd")[0]
    return True


def _parse_label_line(path: Path, line_no: int, tokens: list[str]) -> tuple[list[float], str, int]:
    """One object line `x1 y1 ... x4 y4 class [difficult]` -> (8 coordinates, class, difficult)."""
    if len(tokens) not in (9, 10):
        raise DotaFormatError(
            path, line_no, f"expected 9 or 10 fields (x1 y1 ... x4 y4 class [difficult]), got {len(tokens)}"
        )
    coords = _parse_coordinates(path, line_no, tokens[:8], "coordinate")
    difficult = 0
    if len(tokens) == 10:
        if tokens[9] not in ("0", "1", "2"):
            raise DotaFormatError(path, line_no, f"bad difficult flag {tokens[9]!r} (expected 0, 1 or 2)")
        difficult = int(tokens[9])
    return coords, tokens[8], difficult


def _warn_skipped(path: Path, bad: list[DotaFormatError]) -> None:
    """One warning per file: how many lines lenient reading skipped, and the first of them."""
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s); first: {bad[0]}", stacklevel=3)


_LABEL_ROW = np.dtype([("polygon", np.float64, (8,)), ("name", object), ("difficult", object)])
_TASK1_ROW = np.dtype([("image", object), ("score", np.float64), ("polygon", np.float64, (8,))])


def _bulk_rows(lines: list[str], row: np.dtype) -> np.ndarray | None:
    """(N,) rows (`_LABEL_ROW`, `_TASK1_ROW`: text fields as Python strings) of the non-blank `lines`, read in one pass
    by numpy's C reader; None when anything is unusual. It splits on `str.split`'s whitespace and refuses a line with
    another field count, so every line has exactly the row's fields; any failure (or a number beyond +-2^53, NaN,
    inf) sends the caller to the line-by-line parser, the authority on what is accepted, which names the culprit."""
    if not any(map(str.strip, lines)):
        return np.zeros(0, dtype=row)  # (the reader warns about empty input)
    try:
        rows = np.loadtxt(lines, dtype=row, comments=None, ndmin=1)
    except ValueError:
        return None
    numbers = [rows[name] for name in row.names if row[name].base == np.float64]
    return rows if all((np.abs(values) <= MAX_COORDINATE).all() for values in numbers) else None


def _fast_labels(path: Path, lines: list[str]) -> DotaLabels | None:
    """The official layout (headers on top, then 10-field lines) parsed in bulk; None for anything else."""
    header: dict = {"image_source": None, "gsd": None}
    top = 0
    while top < len(lines) and (not lines[top].strip() or _parse_header(path, top + 1, lines[top], header)):
        top += 1
    rows = _bulk_rows(lines[top:], _LABEL_ROW)
    if rows is None or not set(flags := rows["difficult"].tolist()) <= {"0", "1", "2"}:
        return None
    difficult = np.array(flags, dtype=str).astype(np.int64)
    return DotaLabels(np.ascontiguousarray(rows["polygon"]), rows["name"].tolist(), difficult, **header)


def read_dota_labels(path: str | os.PathLike, lenient: bool = False) -> DotaLabels:
    """Reads one DOTA label file (`labelTxt/{image}.txt`).

    Accepts optional `imagesource:` / `gsd:` header lines, 9 or 10 fields per object (difficult defaults to 0),
    CRLF line ends, blank lines and trailing spaces.

    Args:
        path: the label file.
        lenient: skip malformed lines with one warning for the file instead of raising.

    Returns:
        The image's objects in file order.

    Raises:
        DotaFormatError: a malformed line (file, line number and fault in the message), unless `lenient`.
    """
    path = Path(path)
    lines = _read_lines(path)
    fast = None if lenient else _fast_labels(path, lines)
    if fast is not None:
        return fast
    header: dict = {"image_source": None, "gsd": None}
    polygons, classes, difficult, bad = [], [], [], []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        try:
            if not tokens or (":" in tokens[0] and _parse_header(path, line_no, line, header)):
                continue
            coords, name, flag = _parse_label_line(path, line_no, tokens)
        except DotaFormatError as error:
            if not lenient:
                raise
            bad.append(error)
            continue
        polygons.append(coords)
        classes.append(name)
        difficult.append(flag)
    _warn_skipped(path, bad)
    return DotaLabels(np.array(polygons, dtype=np.float64).reshape(-1, 8), classes, np.array(difficult), **header)


def write_dota_labels(path: str | os.PathLike, labels: DotaLabels, header: bool = True) -> None:
    """Writes one DOTA label file atomically, numbers in their shortest lossless form ("12", "12.5").

    Args:
        path: the label file to (over)write; its folder is created when missing.
        labels: the objects to write.
        header: write the `imagesource:` / `gsd:` lines for those fields that are known.
    """
    lines = []
    if header and labels.image_source is not None:
        lines.append(f"imagesource:{labels.image_source}")
    if header and labels.gsd is not None:
        lines.append(f"gsd:{format_numbers(np.array([labels.gsd]))[0]}")
    coords = np.array(format_numbers(labels.polygons), dtype=object).reshape(-1, 8)
    for row, name, flag in zip(coords, labels.classes, labels.difficult.tolist(), strict=True):
        lines.append(f"{' '.join(row)} {name} {flag}")
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _task1_class(path: Path) -> str:
    """The class name of a `Task1_{class}.txt` file."""
    if not (path.name.startswith(_TASK1_PREFIX) and path.suffix == ".txt"):
        raise ValueError(f"{path}: not a Task1 submission file (expected Task1_{{class}}.txt)")
    return path.stem[len(_TASK1_PREFIX) :]


def _read_task1_file(path: Path) -> Task1Detections:
    """All detections of one `Task1_{class}.txt` file; DotaFormatError naming file and line when malformed."""
    lines = _read_lines(path)
    rows = _bulk_rows(lines, _TASK1_ROW)
    if rows is not None:
        return Task1Detections(rows["image"].tolist(), rows["score"], np.ascontiguousarray(rows["polygon"]))
    names, numbers = [], []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 10:
            raise DotaFormatError(path, line_no, f"expected 10 fields (image score x1 y1 ... x4 y4), got {len(tokens)}")
        numbers.append(_parse_coordinates(path, line_no, tokens[1:], "number"))
        names.append(tokens[0])
    values = np.array(numbers, dtype=np.float64).reshape(-1, 9)
    return Task1Detections(names, values[:, 0], values[:, 1:])


def read_task1(folder_or_files: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, Task1Detections]:
    """Reads a Task1 submission: every `Task1_{class}.txt` of a folder, or the given files.

    A class without a file simply has no entry (no detections).

    Args:
        folder_or_files: a folder holding `Task1_*.txt`, or an iterable of such files.

    Returns:
        {class name: its detections in file order}.

    Raises:
        FileNotFoundError: the folder or a named file does not exist.
        DotaFormatError: a malformed line (file and line number in the message).
    """
    if isinstance(folder_or_files, str | os.PathLike):
        folder = Path(folder_or_files)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of Task1 files")
        files = sorted(folder.glob(f"{_TASK1_PREFIX}*.txt"))
    else:
        files = [Path(f) for f in folder_or_files]
    result = {}
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such Task1 file")
        result[_task1_class(path)] = _read_task1_file(path)
    return result


def task1_text(detections: Task1Detections) -> str:
    """A `Task1_{class}.txt` file's text: lines `image score x1 y1 ... x4 y4`, numbers shortest lossless ("0.875")."""
    numbers = np.concatenate([detections.scores[:, None], detections.polygons], axis=1)
    rows = np.array(format_numbers(numbers), dtype=object).reshape(-1, 9)
    return "".join(f"{image} {' '.join(row)}\n" for image, row in zip(detections.image_names, rows, strict=True))


def write_task1(folder: str | os.PathLike, detections: Mapping[str, Task1Detections]) -> None:
    """Writes one `Task1_{class}.txt` (`task1_text`) per class of `detections`, atomically; empty for an empty class.

    Args:
        folder: the submission folder, created when missing.
        detections: {class name: its detections}; file order follows the given order.
    """
    for name, dets in detections.items():
        atomic_write_text(Path(folder) / f"{_TASK1_PREFIX}{name}.txt", task1_text(dets))


def write_scene_result(path: str | os.PathLike, result: SceneResult) -> None:
    """Writes a scene's DOTA-style result file: lines `x1 y1 ... x4 y4 class score` (the label layout with the score
    in place of the difficult flag), numbers lossless, by decreasing score."""
    numbers = np.array(format_numbers(np.concatenate([result.polygons, result.scores[:, None]], axis=1)), dtype=object)
    rows = numbers.reshape(-1, 9)
    text = "".join(f"{' '.join(r[:8])} {c} {r[8]}\n" for r, c in zip(rows, result.classes, strict=True))
    atomic_write_text(path, text)


def read_scene_result(path: str | os.PathLike) -> SceneResult:
    """Reads a file of `write_scene_result`. Raises DotaFormatError naming the file and line when malformed."""
    polygons, classes, scores = [], [], []
    for line_no, line in enumerate(_read_lines(Path(path)), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 10:
            raise DotaFormatError(path, line_no, f"expected 10 fields (x1 y1 ... x4 y4 class score), got {len(tokens)}")
        numbers = _parse_coordinates(Path(path), line_no, [*tokens[:8], tokens[9]], "number")
        polygons.append(numbers[:8])
        classes.append(tokens[8])
        scores.append(numbers[8])
    return SceneResult(np.array(polygons, dtype=np.float64).reshape(-1, 8), classes, np.array(scores, np.float64))
