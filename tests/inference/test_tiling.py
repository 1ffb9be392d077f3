"""Tiling: tile reads equal the scene's pixels (resized ones the whole scene resized); the background reader keeps
order, stops early and re-raises read errors. (The windows themselves: tests/test_tiles.py.)"""

import contextlib
import threading

import cv2
import numpy as np
import pytest

from rotated_ddetr.inference import ArrayScene, SceneError, plan_tiles, prefetch_batches
from rotated_ddetr.tiles import source_window


def _smooth_scene(width=900, height=700, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def test_rate_one_tiles_are_exactly_the_scene_pixels():
    image = _smooth_scene()
    scene = ArrayScene(image)
    for tile in plan_tiles((700, 900), 256, 50):
        pixels = scene.read(tile)
        np.testing.assert_array_equal(
            pixels, image[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width]
        )
    np.testing.assert_array_equal(scene.read((100, 50, 30, 20)), image[50:70, 100:130])
    with pytest.raises(ValueError, match="not inside"):
        scene.read((890, 0, 20, 20))


@pytest.mark.parametrize("rate", [0.5, 1.5, 0.37])
def test_resized_tiles_match_resizing_the_whole_scene(rate):
    # The split tool resizes the whole scene with cv2.resize(INTER_CUBIC); a tile read from its source window only
    # must give the same pixels, up to OpenCV's fixed-point rounding (observed max 1 grey level; allowed 2).
    image = _smooth_scene(seed=1)
    full = cv2.resize(image, None, fx=rate, fy=rate, interpolation=cv2.INTER_CUBIC)
    scene = ArrayScene(image)
    for tile in plan_tiles((700, 900), 200, 40, (rate,)):
        x0, y0, x1, y1 = source_window(tile, (700, 900))
        assert (x1 - x0) <= tile.width / rate + 8 and (y1 - y0) <= tile.height / rate + 8  # only the tile's source
        crop = full[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width].astype(int)
        diff = np.abs(scene.read(tile).astype(int) - crop)
        assert diff.max() <= 2 and diff.mean() < 0.1


def test_array_scene_rejects_other_arrays():
    with pytest.raises(SceneError, match=r"\(H, W, 3\) uint8"):
        ArrayScene(np.zeros((10, 10), np.uint8))
    with pytest.raises(SceneError, match=r"\(H, W, 3\) uint8"):
        ArrayScene(np.zeros((10, 10, 3), np.float32))


def test_prefetch_keeps_order_batches_and_counts():
    image = _smooth_scene()
    tiles = plan_tiles((700, 900), 256, 50)
    batches = list(prefetch_batches(ArrayScene(image), tiles, batch_size=4))
    assert [len(b.tiles) for b in batches] == [4] * (len(tiles) // 4) + ([len(tiles) % 4] if len(tiles) % 4 else [])
    assert [t for b in batches for t in b.tiles] == tiles
    assert sum(b.consumed for b in batches) == len(tiles)
    for batch in batches:
        for tile, pixels in zip(batch.tiles, batch.pixels, strict=True):
            assert pixels.shape == (tile.height, tile.width, 3)


class _CountingScene(ArrayScene):
    def __init__(self, image, fail_at=None):
        super().__init__(image)
        self.reads, self.fail_at, self.threads = 0, fail_at, set()

    def _read_source(self, x0, y0, x1, y1):
        self.reads += 1
        self.threads.add(threading.current_thread().name)
        if self.reads == self.fail_at:
            raise SceneError(f"{self.name}: cannot read window x {x0}..{x1}")
        return super()._read_source(x0, y0, x1, y1)


def test_prefetch_reads_ahead_boundedly_and_stops_early():
    scene = _CountingScene(_smooth_scene(2000, 2000))
    tiles = plan_tiles((2000, 2000), 128, 0)  # 256 tiles
    with contextlib.closing(prefetch_batches(scene, tiles, batch_size=2, depth=2)) as batches:
        first = next(batches)
        assert len(first.tiles) == 2
    # Consumer took 1 batch; the reader holds at most `depth` batches plus the one it was building.
    assert scene.reads <= 2 * (1 + 2 + 1)
    assert scene.threads == {"read-scene"}  # reads happen in the background thread only


def test_prefetch_reraises_read_errors_in_the_consumer():
    scene = _CountingScene(_smooth_scene(), fail_at=3)
    with pytest.raises(SceneError, match="cannot read window"):
        list(prefetch_batches(scene, plan_tiles((700, 900), 256, 50), batch_size=2))
