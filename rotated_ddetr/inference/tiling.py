"""Scene -> batches of tile pixels, read ahead in a background thread: the first stage of tiled inference.

In: a `SceneReader` (`scenes.py`) and its planned `Tile`s (`rotated_ddetr.tiles.plan_tiles`: the split tool's
windows and names). Out: `TileBatch`es of (h, w, 3) uint8 RGB pixels, read while the detector works on the previous
batch; the detector's tile predictions go on to `merge.py`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rotated_ddetr.inference.scenes import SceneReader
from rotated_ddetr.tiles import Tile


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
