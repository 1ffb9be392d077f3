"""Image files -> checked pixels: the one image reader of training, testing, splitting and inference.

Files are checked by content, not by suffix: the signature names the format (PNG, JPEG, BMP or TIFF), the header gives
the size, and a file whose data stops early is refused (a JPEG or PNG without its end marker, a BMP or TIFF whose pixel
data lies past the end of the file). OpenCV would decode a truncated JPEG into grey-filled pixels, with only a
libjpeg message on stderr that names no file. `probe_image` runs these checks on a file's header and tail; `read_image`
runs them on the bytes it decodes; `check_images` probes many files up front. `list_images` lists a folder's image
files.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_TAIL = 1024  # a JPEG's end marker or a PNG's IEND chunk must lie within the file's last bytes
_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (0xC4/C8/CC are other segments)


class ImageError(ValueError):
    """An image file that is missing, empty, of an unknown format, truncated or corrupt; the message names the file."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says: `format` ("PNG", "JPEG", "BMP" or "TIFF") and `image_size` (height, width)."""

    format: str
    image_size: tuple[int, int]


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(height, width) from the first start-of-frame segment, walking the segments from the SOI marker."""
    f.seek(2)
    while True:
        head = f.read(2)
        while len(head) == 2 and head[0] == 0xFF and head[1] == 0xFF:  # fill bytes before a marker
            head = head[1:] + f.read(1)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        if head[1] == 0x01 or 0xD0 <= head[1] <= 0xD8:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        if head[1] in _JPEG_SOF:
            frame = f.read(5)
            return struct.unpack(">HH", frame[1:5]) if len(frame) == 5 else None
        f.seek(struct.unpack(">H", length)[0] - 2, io.SEEK_CUR)


def _tiff_size(f: BinaryIO, file_size: int) -> tuple[int, int] | None:
    """(height, width) from the first IFD of a classic or Big TIFF; None also when its strips or tiles end past the
    end of the file (truncated)."""
    f.seek(0)
    head = f.read(16)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    offset = struct.unpack(order + offset_format, head[8:16] if big else head[4:8])[0]
    f.seek(offset)
    raw = f.read(struct.calcsize(count_format))
    if offset >= file_size or len(raw) < struct.calcsize(count_format):
        return None
    count = struct.unpack(order + count_format, raw)[0]
    entries = f.read(count * entry_size)
    if len(entries) < count * entry_size:
        return None
    value_formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    slot = struct.calcsize(offset_format)  # an entry's last field: its values when they fit, else their offset
    tags: dict[int, tuple[int, ...]] = {}
    for start in range(0, len(entries) - entry_size + 1, entry_size):
        tag, kind, n = struct.unpack(order + "HH" + offset_format, entries[start : start + entry_size - slot])
        if kind not in value_formats:
            continue
        values_format = f"{order}{n}{value_formats[kind]}"
        values = entries[start + entry_size - slot : start + entry_size]
        if struct.calcsize(values_format) > slot:
            f.seek(struct.unpack(order + offset_format, values)[0])
            values = f.read(struct.calcsize(values_format))
        if len(values) < struct.calcsize(values_format):
            return None
        tags[tag] = struct.unpack(values_format, values[: struct.calcsize(values_format)])
    if 256 not in tags or 257 not in tags:
        return None
    for offsets, counts in ((273, 279), (324, 325)):  # strips, tiles: (offsets, byte counts)
        ends = [o + c for o, c in zip(tags.get(offsets, ()), tags.get(counts, ()), strict=False)]
        if max(ends, default=0) > file_size:
            return None
    return tags[257][0], tags[256][0]


def _check(f: BinaryIO, file_size: int, path: Path) -> ImageInfo:
    """The format and size of an image file open as `f`; ImageError when it is unknown, damaged or truncated."""
    f.seek(0)
    head = f.read(64)
    f.seek(max(0, file_size - _TAIL))
    tail = f.read()
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
        if head[12:16] == b"IHDR":
            size = struct.unpack(">II", head[16:24])[::-1]
        truncated = b"IEND\xaeB`\x82" not in tail  # the IEND chunk with its (constant) CRC
    elif head.startswith(b"\xff\xd8\xff"):
        kind, size, truncated = "JPEG", _jpeg_size(f), b"\xff\xd9" not in tail
    elif head.startswith(b"BM") and len(head) >= 34:
        kind = "BMP"
        data_offset, width, height, bits, compression = struct.unpack("<I4xii2xHI", head[10:34])
        size = abs(height), width
        row = (width * bits + 31) // 32 * 4
        truncated = compression == 0 and data_offset + row * abs(height) > file_size
    elif head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        kind = "TIFF"
        size = _tiff_size(f, file_size)
        truncated = size is None
    else:
        raise ImageError(f"{path}: not a PNG, JPEG, BMP or TIFF image (it starts with bytes {head[:8].hex(' ')})")
    if truncated:
        raise ImageError(f"{path}: truncated {kind} file (its data ends early)")
    if size is None or min(size) <= 0:
        raise ImageError(f"{path}: corrupt {kind} header (no valid image size)")
    return ImageInfo(kind, (int(size[0]), int(size[1])))


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Checks an image file from its header and tail, without decoding it (a few KiB read).

    Raises:
        ImageError: missing, unreadable, empty, of an unknown format (by content: a PNG named .jpg is a PNG),
            with a damaged header, or truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size == 0:
                raise ImageError(f"{path}: empty file (0 bytes)")
            return _check(f, file_size, path)
    except OSError as error:
        raise ImageError(f"{path}: cannot read the file ({error.strerror or error})") from None
    except struct.error:
        raise ImageError(f"{path}: corrupt image header") from None


def read_image(path: str | os.PathLike, channels: str = "rgb") -> np.ndarray:
    """An image file's pixels, checked as `probe_image` checks and decoded by OpenCV as `cv2.imread(path,
    IMREAD_COLOR)` decodes it (grey and 4-channel images become 3 channels, 16-bit ones 8 bits).

    Args:
        path: the image file (PNG, JPEG, BMP or TIFF, whatever its suffix).
        channels: "rgb" (what the models take) or "bgr" (OpenCV's and the DOTA devkit's order).

    Returns:
        (H, W, 3) uint8, C-contiguous.

    Raises:
        ImageError: see `probe_image`; also pixel data OpenCV cannot decode, or a size other than the header's.
    """
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        info = _check(io.BytesIO(data), len(data), path)
    except struct.error:
        raise ImageError(f"{path}: corrupt image header") from None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    # An EXIF orientation turns a JPEG's pixels as cv2.imread does; the header's size is then transposed.
    if image is None or image.shape[:2] not in (info.image_size, info.image_size[::-1]):
        raise ImageError(f"{path}: corrupt {info.format} data (it does not decode)")
    return np.ascontiguousarray(image[..., ::-1]) if channels == "rgb" else image


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of `folder` (suffixes `IMAGE_SUFFIXES`, any case; not recursive), sorted by name.

    Raises:
        FileNotFoundError: `folder` is not a folder.
        ValueError: two images share a name stem (their outputs, named by stem, would collide).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems = [p.stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"{folder}: several images share the names {duplicates[:5]} (outputs are named by stem)")
    return paths


def check_images(
    paths: Sequence[str | os.PathLike], skip_bad: bool = False
) -> tuple[list[Path], list[Path], list[ImageInfo]]:
    """Probes every file (`probe_image`) before any work is done on them.

    Args:
        paths: image files.
        skip_bad: leave out the files the probe refuses, with one warning naming them, instead of raising.

    Returns:
        (usable files, refused files, the usable files' `ImageInfo`s), in the given order.

    Raises:
        ImageError: the first refused file, when not `skip_bad`.
    """
    good, bad, infos = [], [], []
    for path in map(Path, paths):
        try:
            infos.append(probe_image(path))
            good.append(path)
        except ImageError:
            if not skip_bad:
                raise
            bad.append(path)
    if bad:
        shown = ", ".join(str(p) for p in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"skipped {len(bad)} unreadable image(s): {shown}", stacklevel=2)
    return good, bad, infos


def plain_message(error: BaseException) -> str:
    """An error's message without the worker traceback that a DataLoader puts before an error it re-raises from a
    worker process ("Caught ImageError in DataLoader worker process 0. Original Traceback ...")."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1:
        return re.sub(r"^[\w.]+: ", "", lines[-1])  # the last line is "module.ErrorName: message"
    return lines[0] if lines else type(error).__name__
