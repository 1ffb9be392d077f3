"""Remote and virtual rasters, served by a range-capable HTTP server on 127.0.0.1 (no other network): names and GDAL
paths; an URL is read window by window (range requests, a fraction of the file) and gives exactly the local file's
pixels and detections; s3:// through a local endpoint; .vrt files; unreachable URLs; nothing cached between opens."""

import http.server
import re
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from rotated_ddetr.inference import RasterScene, SceneError, list_scenes, open_scene, plan_tiles
from rotated_ddetr.inference.predictor import predict_scenes, tiled_predict
from rotated_ddetr.inference.sources import gdal_path, is_remote, remote_options, scene_name
from rotated_ddetr.inference.writers import assemble_task1
from tests.stand_ins import brightest_pixel_detector

TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the server's `root` folder with byte ranges (`Range: bytes=a-b`, answered 206), as object stores and
    CDNs do: GDAL's /vsicurl/ needs them (http.server's SimpleHTTPRequestHandler ignores Range, and GDAL then fails
    with "Range downloading not supported by this server!" rather than downloading the whole file)."""

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        path = self.server.root / unquote(urlsplit(self.path).path).lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start, end, status = int(ranged[1]), min(int(ranged[2] or end), end), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end + 1 - start))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])
        self.server.log.append((self.command, self.path, self.headers.get("Range"), end + 1 - start if body else 0))

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, served folder, request log [(method, path, range, bytes sent)]) of a server on 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # curl would send even 127.0.0.1 requests through a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.root, httpd.log = tmp_path / "www", []
    httpd.root.mkdir()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", httpd.root, httpd.log
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _write_tif(path, seed=0, height=384, width=512):
    """A tiled (128 px blocks), uncompressed RGB GeoTIFF of random pixels; returns them (3, H, W)."""
    rgb = np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8)
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True, blockxsize=128,
                   blockysize=128, crs="EPSG:32633", transform=TRANSFORM)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb)
    return rgb


def test_names_gdal_paths_and_listing(tmp_path):
    signed = "https://host.example/data/scene_1.tif?X-Amz-Signature=ab%2Fc&X-Amz-Expires=60"
    assert [is_remote(s) for s in (signed, "s3://b/k.tif", "/vsicurl/http://h/a.tif", "a.tif", tmp_path)] == [
        True, True, True, False, False]  # fmt: skip
    assert [scene_name(s) for s in (signed, "s3://bucket/dir/b.tif", "/vsis3/bucket/c.vrt", "/vsicurl/http://h/d.tif?x",
                                    tmp_path / "e.tif", "https://host.example/")] == ["scene_1", "b", "c", "d", "e",
                                                                                     "host.example"]  # fmt: skip
    assert gdal_path(signed) == "/vsicurl/" + signed and gdal_path("s3://bucket/k.tif") == "/vsis3/bucket/k.tif"
    assert gdal_path("gs://b/k.tif") == "/vsigs/b/k.tif" and gdal_path("/vsis3/b/k.tif") == "/vsis3/b/k.tif"
    assert gdal_path(tmp_path / "a.tif") == tmp_path / "a.tif" and remote_options(tmp_path / "a.tif") == {}
    assert remote_options("s3://b/k.tif")["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    (tmp_path / "local.tif").write_bytes(b"")
    unreachable = "http://127.0.0.1:9/nothing/there.tif"  # passed through: neither globbed nor stat'ed
    assert list_scenes([unreachable, tmp_path / "local.tif", unreachable]) == [unreachable, tmp_path / "local.tif"]
    with pytest.raises(SceneError, match=r"share the names \['local'\]"):
        list_scenes([tmp_path / "local.tif", "https://host.example/x/local.tif?v=2"])


def test_url_is_read_window_by_window_as_the_local_file(tmp_path, server):
    base, root, log = server
    rgb = _write_tif(root / "scene.tif")
    size = (root / "scene.tif").stat().st_size
    with open_scene(f"{base}/scene.tif") as remote, open_scene(root / "scene.tif") as local:
        assert isinstance(remote, RasterScene) and remote.name == "scene" and remote.path == f"{base}/scene.tif"
        assert remote.image_size == (384, 512) and remote.crs == local.crs and remote.transform == TRANSFORM
        np.testing.assert_array_equal(remote.read((10, 20, 64, 48)), rgb[:, 20:68, 10:74].transpose(1, 2, 0))
        fetched = sum(n for *_, n in log)
        assert fetched < size / 4, f"{fetched} of {size} bytes for one window"  # ranges, not the whole file
        for tile in plan_tiles((384, 512), 160, 32, (1.0, 0.5)):
            np.testing.assert_array_equal(remote.read(tile), local.read(tile))
    assert all(method == "HEAD" or byte_range for method, _, byte_range, _ in log)  # no unranged download
    assert {path for _, path, _, _ in log} == {"/scene.tif"}  # no probing for side-car files (.ovr, .aux.xml)


def test_url_gives_the_local_detections(tmp_path, server):
    base, root, _ = server
    _write_tif(root / "scene.tif", seed=1)
    options = dict(tile_size=160, gap=32, rates=(1.0, 0.5), batch_size=3)
    remote = tiled_predict(f"{base}/scene.tif", brightest_pixel_detector, **options)
    local = tiled_predict(root / "scene.tif", brightest_pixel_detector, **options)
    assert len(local.scores) >= 10
    for field in ("rboxes", "scores", "labels"):  # exactly the same pixels, so exactly the same boxes
        torch.testing.assert_close(getattr(remote, field), getattr(local, field), atol=0, rtol=0)
    reports = [predict_scenes([scene], brightest_pixel_detector, tmp_path / name, ("a", "b"), progress=False, **options)
               for name, scene in (("remote", f"{base}/scene.tif"), ("local", root / "scene.tif"))]  # fmt: skip
    assert reports[0].done == [f"{base}/scene.tif"] and reports[1].done == [root / "scene.tif"]
    for name in ("remote", "local"):
        assert assemble_task1(tmp_path / name, ["scene"], ("a", "b")) == []
    for file in ("scenes/scene.txt", "Task1_a.txt", "Task1_b.txt"):
        assert (tmp_path / "remote" / file).read_text() == (tmp_path / "local" / file).read_text()
    assert (tmp_path / "local" / "scenes" / "scene.txt").read_text().count("\n") >= 10


def test_s3_url_through_a_local_endpoint(server, monkeypatch):
    base, root, log = server
    (root / "bucket").mkdir()
    rgb = _write_tif(root / "bucket" / "scene.tif", seed=2)
    for name, value in {"AWS_S3_ENDPOINT": base.removeprefix("http://"), "AWS_HTTPS": "NO",
                        "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)  # GDAL's own settings, as a user would set them
    with open_scene("s3://bucket/scene.tif") as reader:
        assert reader.name == "scene" and reader.image_size == (384, 512)
        np.testing.assert_array_equal(reader.read((100, 50, 30, 40)), rgb[:, 50:90, 100:130].transpose(1, 2, 0))
    assert {path for _, path, _, _ in log} == {"/bucket/scene.tif"}  # path-style S3 GETs of the object only


def _vrt(source, x0, y0, width, height):
    """A VRT of the window (x0, y0, width, height) of a 3-band uint8 raster `source` (relative to the VRT)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">{source}'
        f"</SourceFilename><SourceBand>{b}</SourceBand>"
        f'<SrcRect xOff="{x0}" yOff="{y0}" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    return f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{bands}</VRTDataset>'


def test_vrt_reads_the_pixels_it_wraps_locally_and_over_http(tmp_path, server):
    base, root, _ = server
    rgb = _write_tif(root / "scene.tif", seed=3)
    (root / "crop.vrt").write_text(_vrt("scene.tif", 100, 60, 300, 200))
    shutil.copy(root / "crop.vrt", tmp_path / "crop.vrt")
    shutil.copy(root / "scene.tif", tmp_path / "scene.tif")
    expected = rgb[:, 60:260, 100:400].transpose(1, 2, 0)
    for source in (tmp_path / "crop.vrt", f"{base}/crop.vrt"):  # the remote VRT's source is fetched beside it
        with open_scene(source) as reader:
            assert isinstance(reader, RasterScene) and reader.name == "crop" and reader.image_size == (200, 300)
            np.testing.assert_array_equal(reader.read((0, 0, 300, 200)), expected)
            np.testing.assert_array_equal(reader.read((250, 150, 50, 50)), expected[150:, 250:])


def test_unreachable_and_missing_urls_are_scene_errors_naming_them(tmp_path, server):
    base, root, _ = server
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/scene.tif"
    for url, reason in ((dead, "connect"), (f"{base}/missing.tif", "404")):
        with pytest.raises(SceneError, match=reason) as error:
            open_scene(url)
        assert str(error.value).startswith(f"{url}: cannot open as a raster")
    _write_tif(root / "good.tif")
    report = predict_scenes(
        [dead, f"{base}/good.tif"], brightest_pixel_detector, tmp_path / "out", ("a", "b"), progress=False
    )
    assert report.done == [f"{base}/good.tif"] and list(report.failed) == [dead] and dead in report.failed[dead]


def test_a_changed_remote_file_is_read_afresh(server):
    base, root, _ = server
    first = _write_tif(root / "scene.tif", seed=4)
    with open_scene(f"{base}/scene.tif") as reader:
        np.testing.assert_array_equal(reader.read((0, 0, 512, 384)), first.transpose(1, 2, 0))
    second = _write_tif(root / "scene.tif", seed=5)  # same size and layout, other pixels
    with open_scene(f"{base}/scene.tif") as reader:  # GDAL kept nothing of the first open
        np.testing.assert_array_equal(reader.read((0, 0, 512, 384)), second.transpose(1, 2, 0))


def test_local_paths_are_unchanged(tmp_path):
    rgb = _write_tif(tmp_path / "local.tif", seed=6)
    with open_scene(str(tmp_path / "local.tif")) as reader:
        assert reader.path == Path(tmp_path / "local.tif") and reader.name == "local"
        np.testing.assert_array_equal(reader.read((0, 0, 8, 8)), rgb[:, :8, :8].transpose(1, 2, 0))
