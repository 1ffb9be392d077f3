"""Tile geometry: windows cover every scene at every rate with the split tool's rule, names round-trip, resized
sizes round half to even (as cv2.resize) and never reach 0, source windows hold what bicubic resampling reads."""

import numpy as np
import pytest

from rotated_ddetr.tiles import (
    Tile,
    check_tiling,
    parse_tile_name,
    plan_tiles,
    resized_size,
    source_window,
    tile_windows,
)

SIZES = [(1111, 1182), (3000, 700), (700, 3000), (1024, 1024), (1025, 2049), (300, 200), (4096, 4096)]
RATES = [0.5, 1.0, 1.5, 0.3]


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("rate", RATES)
def test_windows_cover_scene_with_split_rule(width, height, rate):
    tile_size, gap = 512, 128
    tiles = plan_tiles((height, width), tile_size, gap, (rate,))
    scaled_h, scaled_w = resized_size((height, width), rate)
    covered = np.zeros((scaled_h, scaled_w), bool)
    for tile in tiles:
        assert 0 <= tile.left and tile.left + tile.width <= scaled_w  # inside the resized scene
        assert 0 <= tile.up and tile.up + tile.height <= scaled_h
        assert tile.width == min(tile_size, scaled_w) and tile.height == min(tile_size, scaled_h)
        covered[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width] = True
        assert tile.inner_edges == (tile.left > 0, tile.up > 0, tile.left + tile.width < scaled_w,
                                    tile.up + tile.height < scaled_h)  # fmt: skip
        assert parse_tile_name(tile.name("P0706")) == ("P0706", rate, tile.left, tile.up)
    assert covered.all()  # every pixel is in some window
    # The split tool's windows, in its order (columns outer); steps of tile_size - gap, the last snapped to the edge.
    assert [(t.left, t.up) for t in tiles] == tile_windows((scaled_h, scaled_w), tile_size, gap)
    for starts, extent in (({t.left for t in tiles}, scaled_w), ({t.up for t in tiles}, scaled_h)):
        starts = sorted(starts)
        assert starts[0] == 0 and starts[-1] == max(extent - tile_size, 0)  # the last one snapped to the edge
        steps = np.diff(starts)
        assert (steps[:-1] == tile_size - gap).all() and (steps[-1:] <= tile_size - gap).all() and (steps > 0).all()


def test_multi_rate_plan_is_rate_by_rate():
    tiles = plan_tiles((1500, 2000), 1024, 200, (1.0, 0.5))
    assert [t.rate for t in tiles] == [1.0] * 6 + [0.5]
    assert (tiles[-1].width, tiles[-1].height, tiles[-1].inner_edges) == (1000, 750, (False,) * 4)
    with pytest.raises(ValueError, match="gap"):
        plan_tiles((100, 100), 512, 512)
    with pytest.raises(ValueError, match="rates"):
        plan_tiles((100, 100), 512, 100, (0.0,))


@pytest.mark.parametrize(
    "tile_size, gap, rates, message",
    [
        (0, 0, (1.0,), "tile_size must be >= 1, got 0"),
        (512, 512, (1.0,), r"gap must be in \[0, tile_size\), got 512"),
        (512, -1, (1.0,), r"gap must be in \[0, tile_size\), got -1"),
        (512, 100, (1.0, 0.0, -2.0), "rates must be finite numbers > 0, got 0.0 -2.0"),
        (512, 100, (float("nan"),), "rates must be finite numbers > 0, got nan"),
        (512, 100, (float("inf"),), "rates must be finite numbers > 0, got inf"),
        (512, 100, (), "rates must be finite numbers > 0, got none"),
    ],
)
def test_check_tiling_names_the_option(tile_size, gap, rates, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        plan_tiles((100, 100), tile_size, gap, rates)
    flags = {"tile_size": "--tile-size", "gap": "--gap", "rates": "--rates"}
    with pytest.raises(ValueError, match=message.replace("tile_size", "--tile-size").replace("gap", "--gap")):
        check_tiling(tile_size, gap, rates, flags)
    check_tiling(1, 0, (1e-3, 4.0))  # the smallest tiling accepted


def test_resized_size_rounds_half_to_even_and_keeps_a_pixel():
    assert resized_size((557, 712), 0.5) == (278, 356)  # 278.5 rounds to even
    assert resized_size((5, 3), 0.5) == (2, 2)  # 2.5 and 1.5 both round to 2
    assert resized_size((1182, 1111), 1.0) == (1182, 1111)
    assert resized_size((1, 1000), 0.1) == (1, 100)  # 0.1 would round to 0 rows: at least 1 pixel


def test_tile_at_marks_the_edges_inside_the_scene():
    tile = Tile.at(0.5, 0, 10, (20, 30), (40, 30))  # 20 x 30 (h x w) at (0, 10) in a 40 x 30 resized scene
    assert tile == Tile(0.5, 0, 10, 30, 20, (False, True, False, True))
    assert tile.name("P0706") == "P0706__0.5__0___10"


@pytest.mark.parametrize("rate", [0.5, 1.0, 1.5, 0.37])
def test_source_window_holds_the_bicubic_support_inside_the_scene(rate):
    image_size = (700, 900)
    for tile in plan_tiles(image_size, 200, 40, (rate,)):
        x0, y0, x1, y1 = source_window(tile, image_size)
        assert 0 <= x0 < x1 <= 900 and 0 <= y0 < y1 <= 700
        if rate == 1:
            assert (x0, y0, x1, y1) == (tile.left, tile.up, tile.left + tile.width, tile.up + tile.height)
            continue
        # Resized pixel j samples the scene at (left + j + 0.5) / rate - 0.5; bicubic reads floor(x) - 1 .. + 2.
        xs = np.floor((np.array([tile.left, tile.left + tile.width - 1]) + 0.5) / rate - 0.5)
        ys = np.floor((np.array([tile.up, tile.up + tile.height - 1]) + 0.5) / rate - 0.5)
        assert x0 <= max(xs[0] - 1, 0) and x1 >= min(xs[1] + 3, 900)
        assert y0 <= max(ys[0] - 1, 0) and y1 >= min(ys[1] + 3, 700)
