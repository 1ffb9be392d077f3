"""Scene readers: GeoTIFFs read window by window equal the full read (uint8 RGB, uint16 multispectral with a
percentile stretch and nodata, alpha), nodata tiles are skipped, band choice, image files, corrupt/truncated files."""

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from rotated_ddetr.inference import (
    ImageFileScene,
    RasterScene,
    SceneError,
    list_scenes,
    open_scene,
    plan_tiles,
    prefetch_batches,
    tiled_predict,
)
from rotated_ddetr.inference.merge import empty_detections

TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)


def _write_tif(path, bands, nodata=None, colorinterp=None, crs="EPSG:32633", block=64):
    """bands: (count, H, W) array written as a tiled, deflate-compressed GeoTIFF."""
    count, height, width = bands.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=bands.dtype.name, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", crs=crs, transform=TRANSFORM,
                   nodata=nodata)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def _assemble(reader, tile_size=96, gap=16):
    """The scene rebuilt from its rate-1 tiles read one window at a time."""
    out = np.full((*reader.image_size, 3), 7, np.uint8)
    for tile in plan_tiles(reader.image_size, tile_size, gap):
        out[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width] = reader.read(tile)
    return out


def test_uint8_rgb_geotiff_windows_equal_the_full_read(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (3, 250, 330), dtype=np.uint8)
    path = _write_tif(tmp_path / "rgb.tif", rgb)
    with open_scene(path) as reader:
        assert isinstance(reader, RasterScene) and reader.image_size == (250, 330) and reader.bands == (1, 2, 3)
        assert reader.crs.to_epsg() == 32633 and reader.transform == TRANSFORM
        np.testing.assert_array_equal(_assemble(reader), rgb.transpose(1, 2, 0))
        np.testing.assert_array_equal(reader.read((0, 0, 330, 250)), rgb.transpose(1, 2, 0))
        np.testing.assert_array_equal(reader.read((10, 20, 5, 3)), rgb[:, 20:23, 10:15].transpose(1, 2, 0))


def _multispectral(tmp_path):
    """4 uint16 bands (blue, green, red, nir) with nodata 0 in the top-left 200 x 200 corner (H 300, W 400)."""
    rng = np.random.default_rng(1)
    bands = rng.integers(200, 4000, (4, 300, 400)).astype(np.uint16)
    bands[:, :200, :200] = 0
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    return _write_tif(tmp_path / "ms.tif", bands, nodata=0, colorinterp=interp), bands


def test_uint16_multispectral_stretch_nodata_and_windows(tmp_path):
    path, bands = _multispectral(tmp_path)
    with open_scene(path, stats_side=400) as reader:  # a full-resolution "overview": exact percentiles
        assert reader.bands == (3, 2, 1)  # red, green, blue by colour interpretation
        valid = bands[0] != 0
        full = np.zeros((300, 400, 3), np.uint8)
        for channel, band in enumerate((3, 2, 1)):
            values = bands[band - 1].astype(np.float64)
            low, high = np.percentile(values[valid], (2, 98))
            full[..., channel] = np.clip((values - low) * 255 / (high - low) + 0.5, 0, 255).astype(np.uint8)
        full[~valid] = 0
        by_window = _assemble(reader)
        assert np.abs(by_window.astype(int) - full).max() <= 1  # float32 vs float64 rounding at .5
        assert (by_window != full).mean() < 1e-3
        np.testing.assert_array_equal(by_window, reader.read((0, 0, 400, 300)))
    with open_scene(path, stats_side=100) as reader:  # decimated estimate: close to the exact stretch
        assert np.abs(_assemble(reader).astype(int) - full).mean() < 3


def test_nodata_tiles_are_skipped(tmp_path):
    path, _ = _multispectral(tmp_path)
    seen = []

    def predict_tiles(tiles):
        seen.extend(tile.shape for tile in tiles)
        return [empty_detections() for _ in tiles]

    with open_scene(path) as reader:
        tiles = plan_tiles((300, 400), 100, 0)  # 12 tiles, 4 of them inside the nodata corner
        batches = list(prefetch_batches(reader, tiles, batch_size=5))
        assert sum(len(b.tiles) for b in batches) == 8 and sum(b.consumed for b in batches) == 12
        assert all(t.left >= 200 or t.up >= 200 for b in batches for t in b.tiles)
        tiled_predict(reader, predict_tiles, tile_size=100, gap=0, batch_size=5)
    assert len(seen) == 8


def test_alpha_zero_is_nodata_and_single_band_is_grey(tmp_path):
    rgba = np.full((4, 128, 128), 90, np.uint8)
    rgba[3] = 255
    rgba[3, :, :64] = 0
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with open_scene(_write_tif(tmp_path / "rgba.tif", rgba, colorinterp=interp)) as reader:
        assert reader.read((0, 0, 128, 128))[:, :64].max() == 0 and reader.read((64, 0, 64, 128)).min() == 90
        assert [t.left for t in plan_tiles((128, 128), 64, 0) if reader.read_tile(t) is not None] == [64, 64]
    grey = np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64)
    with open_scene(_write_tif(tmp_path / "grey.tif", grey, crs=None)) as reader:
        assert reader.bands == (1, 1, 1) and reader.crs is None and reader.transform is None
        np.testing.assert_array_equal(reader.read((0, 0, 64, 64)), np.repeat(grey[0, :, :, None], 3, axis=2))
    with pytest.raises(SceneError, match="bands"):
        RasterScene(tmp_path / "grey.tif", bands=(1, 2, 3))


def test_geotiff_rate_reads_and_overview(tmp_path):
    small = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rgb = cv2.resize(small, (500, 400), interpolation=cv2.INTER_LINEAR)
    with open_scene(_write_tif(tmp_path / "rgb.tif", rgb.transpose(2, 0, 1).copy())) as reader:
        full = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        for tile in plan_tiles((400, 500), 96, 16, (0.5,)):
            crop = full[tile.up : tile.up + tile.height, tile.left : tile.left + tile.width]
            assert np.abs(reader.read(tile).astype(int) - crop).max() <= 2
        overview = reader.overview(100)
        assert overview.shape == (80, 100, 3)
        assert np.abs(overview.astype(int) - cv2.resize(rgb, (100, 80), interpolation=cv2.INTER_AREA)).mean() < 1.5


def test_image_files_and_errors(tmp_path, dota_samples):
    png = dota_samples / "images" / "P1888.png"
    with open_scene(png) as reader:
        assert isinstance(reader, ImageFileScene) and reader.image_size == (557, 712) and reader.name == "P1888"
        np.testing.assert_array_equal(reader.read((5, 6, 7, 8)), cv2.imread(str(png))[6:14, 5:12, ::-1])
    data = png.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00 junk")
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(png)))
    (tmp_path / "cut.jpg").write_bytes(jpeg.tobytes()[:-5000])
    for name, message in [("cut.png", "truncated PNG"), ("cut.jpg", "truncated JPEG"), ("noise.jpg", "not a PNG, JPEG"),
                          ("junk.tif", "cannot open as a raster"), ("missing.png", "no such file")]:  # fmt: skip
        with pytest.raises(SceneError, match=message) as error:
            open_scene(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)


def test_truncated_geotiff_fails_at_the_window_that_is_gone(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (3, 256, 256), dtype=np.uint8)
    data = _write_tif(tmp_path / "full.tif", rgb).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SceneError, match=r"cut\.tif: cannot read window .*TIFFReadEncodedTile"):
        with open_scene(tmp_path / "cut.tif") as reader:
            for tile in plan_tiles((256, 256), 64, 0):
                reader.read(tile)


def test_list_scenes(tmp_path):
    for name in ("a.png", "b.tif", "c.txt", "sub/a.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_scenes([tmp_path]) == [tmp_path / "a.png", tmp_path / "b.tif"]
    assert list_scenes([str(tmp_path / "*.tif"), tmp_path / "b.tif"]) == [tmp_path / "b.tif"]
    with pytest.raises(SceneError, match="share the names"):
        list_scenes([tmp_path, tmp_path / "sub"])
    with pytest.raises(SceneError, match="no scene files found"):
        list_scenes([str(tmp_path / "*.jp2")])


_MEASURE = """
import sys
from pathlib import Path
from rotated_ddetr.inference import Detections, RasterScene, tiled_predict
import torch

def kib(field):
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))

def predict_tiles(tiles):
    boxes = [torch.tensor([[t.shape[1] / 2, t.shape[0] / 2, 8.0, 4.0, 0.0]]) for t in tiles]
    return [Detections(b, torch.tensor([0.5]), torch.zeros(1, dtype=torch.int64)) for b in boxes]

baseline = kib("VmRSS")
with RasterScene(sys.argv[1], cache_mb=64) as reader:
    dets = tiled_predict(reader, predict_tiles, tile_size=1024, gap=200, batch_size=8)
print(len(dets.scores), (kib("VmHWM") - baseline) / 1024)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_scene(tmp_path):
    # A 12000 x 12000 RGB GeoTIFF (412 MiB decoded) written stripe by stripe, then predicted window by window in a
    # fresh process: the peak resident memory grows by GDAL's capped block cache (64 MiB here) plus the tiles in
    # flight (3 batches of 8 x 3 MiB), not by the scene.
    import subprocess
    import sys

    from rasterio.windows import Window

    size, path = 12000, tmp_path / "big.tif"
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", zlevel=1, crs="EPSG:32633", transform=TRANSFORM)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 1000):
            stripe = np.add.outer(np.arange(y0, y0 + 1000) // 7, np.arange(size) // 5).astype(np.uint8)
            dst.write(np.repeat(stripe[None], 3, axis=0), window=Window(0, y0, size, 1000))
    child = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    detections, growth_mib = child.stdout.split()
    assert int(detections) == 15 * 15  # one per tile; none merged (they are 824 px apart)
    assert float(growth_mib) < 250, f"peak RSS grew by {growth_mib} MiB for a 412 MiB scene"
    print(f"peak RSS growth {float(growth_mib):.0f} MiB")
