"""Tile geometry: an image size (height, width), a tile size, gap and rates -> the windows, names and sizes of tiles.

Pure arithmetic (no pixels), shared by the split tool (`data/split.py`, which writes training tiles) and tiled
inference (`inference/`, which reads the same windows from a scene), so both place and name tiles identically.
Image sizes are (height, width) everywhere; positions are (left, up) = (x, y) of a top-left corner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_RESAMPLE_MARGIN = 3  # source pixels read around a window at rates != 1: bicubic needs 2 neighbours each side


def resized_size(image_size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(height, width) of an image of `image_size` (height, width) resized by `factor`, at least 1 pixel each.

    Each side is `round(side * factor)`, half to even: what `cv2.resize(fx=factor, fy=factor)` (the split tool) and
    every torchvision resize of the training data produce.
    """
    height, width = image_size
    return max(1, round(height * factor)), max(1, round(width * factor))


def tile_name(image: str, rate: float, left: int, up: int) -> str:
    """The devkit's tile name `{image}__{rate}__{left}___{up}`, rate as `str(float)`: "P0706__1.0__824___0"."""
    return f"{image}__{float(rate)}__{left}___{up}"


def parse_tile_name(name: str) -> tuple[str, float, int, int]:
    """Inverse of `tile_name`: "P0706__1.0__824___0" -> ("P0706", 1.0, 824, 0); ValueError for other names."""
    try:
        head, up = name.rsplit("___", 1)
        image, rate, left = head.rsplit("__", 2)
        return image, float(rate), int(left), int(up)
    except ValueError:
        raise ValueError(f"{name!r} is not a tile name {{image}}__{{rate}}__{{left}}___{{up}}") from None


def check_tiling(tile_size: int, gap: int, rates: Sequence[float], names: Mapping[str, str] | None = None) -> None:
    """Refuses a tiling before any work: ValueError unless tile_size >= 1, 0 <= gap < tile_size and `rates` holds at
    least one number, each finite and > 0.

    The one check of these options, for `plan_tiles` (tiled inference) and `data.split.SplitOptions` (the split tool)
    alike. A tile of one pixel is geometrically valid; below that, or with a gap of a whole tile, windows never step.

    Args:
        tile_size, gap, rates: as `plan_tiles`.
        names: how messages name each option, by parameter name; a tool passes its flags
            ({"tile_size": "--tile-size", ...}). Default: the parameter names.

    Raises:
        ValueError: one line naming the first bad option and its value.
    """
    name = {"tile_size": "tile_size", "gap": "gap", "rates": "rates", **(names or {})}
    if not tile_size >= 1:
        raise ValueError(f"{name['tile_size']} must be >= 1, got {tile_size}")
    if not 0 <= gap < tile_size:
        raise ValueError(f"{name['gap']} must be in [0, {name['tile_size']}), got {gap}")
    bad = [rate for rate in rates if not (math.isfinite(rate) and rate > 0)]
    if bad or not len(rates):
        raise ValueError(f"{name['rates']} must be finite numbers > 0, got {' '.join(map(str, bad)) or 'none'}")


def tile_windows(image_size: tuple[int, int], tile_size: int, gap: int) -> list[tuple[int, int]]:
    """Top-left corners (left, up) of the devkit's windows over an image of `image_size` (height, width).

    Columns outer. Windows step by `tile_size - gap`; the last window of a row or column is moved back to end at the
    image edge, and never before 0 (an image smaller than a tile has the single window (0, 0)).
    """
    height, width = image_size
    slide = tile_size - gap
    if slide <= 0:
        raise ValueError(f"gap {gap} must be smaller than tile_size {tile_size}")
    windows = []
    left = 0
    while left < width:
        left = max(width - tile_size, 0) if left + tile_size >= width else left
        up = 0
        while up < height:
            up = max(height - tile_size, 0) if up + tile_size >= height else up
            windows.append((left, up))
            if up + tile_size >= height:
                break
            up += slide
        if left + tile_size >= width:
            break
        left += slide
    return windows


@dataclass(frozen=True)
class Tile:
    """One window of a scene resized by `rate`, in the resized scene's pixels (what the split tool would write).

    Attributes:
        rate: scale factor applied to the scene (0.5 halves it).
        left, up: top-left corner in resized pixels.
        width, height: size in resized pixels (edge tiles of scenes not a multiple of the step are smaller).
        inner_edges: (left, top, right, bottom) True where that edge lies inside the scene, so an object touching
            it may be cut by the tile; False where it is the scene border.
    """

    rate: float
    left: int
    up: int
    width: int
    height: int
    inner_edges: tuple[bool, bool, bool, bool]

    @classmethod
    def at(cls, rate: float, left: int, up: int, size: tuple[int, int], scaled_size: tuple[int, int]) -> Tile:
        """The tile of `size` (height, width) at (left, up) in a scene resized by `rate` to `scaled_size` (h, w)."""
        (height, width), (scaled_h, scaled_w) = size, scaled_size
        edges = (left > 0, up > 0, left + width < scaled_w, up + height < scaled_h)
        return cls(float(rate), left, up, width, height, edges)

    def name(self, image: str) -> str:
        """The split tool's tile name `{image}__{rate}__{left}___{up}`."""
        return tile_name(image, self.rate, self.left, self.up)


def plan_tiles(
    image_size: tuple[int, int], tile_size: int = 1024, gap: int = 200, rates: Sequence[float] = (1.0,)
) -> list[Tile]:
    """The tiles over a scene of `image_size` (height, width): per rate (in the given order), the split tool's windows.

    The scene is (virtually) resized by each rate to `resized_size`; windows step by `tile_size - gap`, the last of
    each row and column is snapped to the edge (`tile_windows`, columns outer).

    Returns:
        The tiles, rate by rate.

    Raises:
        ValueError: options out of range (`check_tiling`).
    """
    check_tiling(tile_size, gap, rates)
    tiles = []
    for rate in rates:
        scaled_h, scaled_w = scaled = resized_size(image_size, float(rate))
        for left, up in tile_windows(scaled, tile_size, gap):
            size = (min(tile_size, scaled_h - up), min(tile_size, scaled_w - left))
            tiles.append(Tile.at(rate, left, up, size, scaled))
    return tiles


def source_window(tile: Tile, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the scene pixels a tile's pixels are interpolated from, clipped to the scene's `image_size`
    (height, width).

    At rate 1 this is the tile itself; otherwise resized pixel (i, j) samples the scene at
    ((left + j + 0.5) / rate - 0.5, (up + i + 0.5) / rate - 0.5) (cv2.resize's mapping), plus a bicubic margin.
    """
    if tile.rate == 1:
        return tile.left, tile.up, tile.left + tile.width, tile.up + tile.height
    height, width = image_size
    r, m = tile.rate, _RESAMPLE_MARGIN
    x0 = max(math.floor((tile.left + 0.5) / r - 0.5) - m, 0)
    y0 = max(math.floor((tile.up + 0.5) / r - 0.5) - m, 0)
    x1 = min(math.ceil((tile.left + tile.width - 0.5) / r - 0.5) + m + 1, width)
    y1 = min(math.ceil((tile.up + tile.height - 0.5) / r - 0.5) + m + 1, height)
    return x0, y0, x1, y1
