"""Scene -> tiles: the windows over a (large) scene and their pixels, read ahead in a background thread.

In: a scene's size (and a `SceneReader` from `scenes.py` for the pixels), a tile size, gap and rates. Out: `Tile`s
(windows of the scene resized by a rate, placed and named as the split tool places and names training tiles) and
batches of their pixels, (h, w, 3) uint8 RGB. The first stage of tiled inference; the detector's tile predictions
go on to `merge.py`.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from rotated_ddetr.data.split import resized_shape, tile_name, tile_windows

if TYPE_CHECKING:
    from rotated_ddetr.inference.scenes import SceneReader

_RESAMPLE_MARGIN = 3  # source pixels read around a window at rates != 1: bicubic needs 2 neighbours each side


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

    def name(self, image: str) -> str:
        """The split tool's tile name `{image}__{rate}__{left}___{up}`."""
        return tile_name(image, self.rate, self.left, self.up)


def plan_tiles(
    width: int, height: int, tile_size: int = 1024, gap: int = 200, rates: Sequence[float] = (1.0,)
) -> list[Tile]:
    """The tiles over a width x height scene: per rate (in the given order), the split tool's windows.

    The scene is (virtually) resized by each rate to `resized_shape`; windows step by `tile_size - gap`, the last of
    each row and column is snapped to the edge (`rotated_ddetr.data.split.tile_windows`, columns outer).

    Returns:
        The tiles, rate by rate.
    """
    if tile_size <= 0 or not 0 <= gap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= gap < tile_size, got {tile_size} and {gap}")
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
        raise ValueError(f"rates must be positive numbers, got {tuple(rates)}")
    tiles = []
    for rate in rates:
        scaled_w, scaled_h = resized_shape(width, height, float(rate))
        for left, up in tile_windows(scaled_w, scaled_h, tile_size, gap):
            w, h = min(tile_size, scaled_w - left), min(tile_size, scaled_h - up)
            edges = (left > 0, up > 0, left + w < scaled_w, up + h < scaled_h)
            tiles.append(Tile(float(rate), left, up, w, h, edges))
    return tiles


def source_window(tile: Tile, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the scene pixels a tile's pixels are interpolated from, clipped to the width x height scene.

    At rate 1 this is the tile itself; otherwise resized pixel (i, j) samples the scene at
    ((left + j + 0.5) / rate - 0.5, (up + i + 0.5) / rate - 0.5) (cv2.resize's mapping), plus a bicubic margin.
    """
    if tile.rate == 1:
        return tile.left, tile.up, tile.left + tile.width, tile.up + tile.height
    r, m = tile.rate, _RESAMPLE_MARGIN
    x0 = max(math.floor((tile.left + 0.5) / r - 0.5) - m, 0)
    y0 = max(math.floor((tile.up + 0.5) / r - 0.5) - m, 0)
    x1 = min(math.ceil((tile.left + tile.width - 0.5) / r - 0.5) + m + 1, width)
    y1 = min(math.ceil((tile.up + tile.height - 0.5) / r - 0.5) + m + 1, height)
    return x0, y0, x1, y1


def resample(pixels: np.ndarray, tile: Tile, x0: int, y0: int) -> np.ndarray:
    """The tile's (height, width, 3) pixels from its source window `pixels` (top-left at scene pixel (x0, y0)).

    Bicubic, as the split tool's `cv2.resize(fx=rate, fy=rate, INTER_CUBIC)` of the whole scene, border pixels
    replicated as cv2.resize does (within a few grey levels of it: OpenCV's fixed-point weights differ slightly).
    """
    if tile.rate == 1:
        return pixels
    r = tile.rate
    matrix = np.array([[1 / r, 0, (tile.left + 0.5) / r - 0.5 - x0], [0, 1 / r, (tile.up + 0.5) / r - 0.5 - y0]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(pixels, matrix, (tile.width, tile.height), flags=flags, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class TileBatch:
    """Tiles read together.

    Attributes:
        tiles: the tiles holding valid pixels, in plan order.
        pixels: their (height, width, 3) uint8 RGB pixels.
        consumed: planned tiles this batch accounts for, including those skipped as nodata (for progress bars).
    """

    tiles: list[Tile]
    pixels: list[np.ndarray]
    consumed: int


def _batches(reader: SceneReader, tiles: Sequence[Tile], batch_size: int, skip_nodata: bool) -> Iterator[TileBatch]:
    """Reads the tiles in order and groups those with valid pixels into batches of `batch_size`."""
    batch = TileBatch([], [], 0)
    for tile in tiles:
        pixels = reader.read_tile(tile, skip_nodata)
        batch.consumed += 1
        if pixels is not None:
            batch.tiles.append(tile)
            batch.pixels.append(pixels)
        if len(batch.tiles) == batch_size:
            yield batch
            batch = TileBatch([], [], 0)
    if batch.consumed:
        yield batch


def prefetch_batches(
    reader: SceneReader, tiles: Sequence[Tile], batch_size: int = 8, depth: int = 2, skip_nodata: bool = True
) -> Iterator[TileBatch]:
    """Batches of tile pixels, read by a background thread while the caller computes on the previous batch.

    At most `depth` batches wait in a bounded queue (plus the one being read), so memory does not grow with the
    scene. Only the background thread touches `reader` until the iterator ends. Close the iterator
    (`contextlib.closing`) when leaving early: that stops and joins the thread. A read error is re-raised here.

    Args:
        reader: the scene.
        tiles: the tiles to read, in order (e.g. `plan_tiles`).
        batch_size: tiles per batch; the last batch may be smaller, and one made only of nodata tiles is empty.
        depth: batches read ahead.
        skip_nodata: leave out tiles whose source window holds no valid pixel (nodata or alpha 0).

    Yields:
        `TileBatch`es; their `consumed` counts add up to len(tiles).
    """
    if batch_size < 1 or depth < 1:
        raise ValueError(f"batch_size and depth must be >= 1, got {batch_size} and {depth}")
    done = object()
    pending: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for batch in _batches(reader, tiles, batch_size, skip_nodata):
                if stop.is_set():
                    return
                put(batch)
            put(done)
        except BaseException as error:  # handed to the consumer, which re-raises it in its own thread
            put(error)

    thread = threading.Thread(target=work, name=f"read-{getattr(reader, 'name', 'scene')}", daemon=True)
    thread.start()
    try:
        while (item := pending.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
