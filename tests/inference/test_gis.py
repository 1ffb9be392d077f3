"""GIS outputs: RFC 7946 GeoJSON reprojects back to the pixel polygons (0.01 px) with counter-clockwise rings and no
"crs" member; GeoPackages read back with pyogrio equal the scene result and Task1 files (1e-6 CRS units); pixel
coordinates without a CRS; a missing pyogrio is one line before any work."""

import json
import math
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from rasterio import warp
from rasterio.crs import CRS
from rasterio.transform import Affine

from rotated_ddetr.data.dota import SceneResult, read_scene_result, read_task1
from rotated_ddetr.inference import Detections, SceneError
from rotated_ddetr.inference.gis import geojson_collection, write_geojson, write_gpkg
from rotated_ddetr.inference.predictor import predict_scenes
from rotated_ddetr.inference.writers import assemble_task1, check_formats, to_scene_result
from tests.stand_ins import brightest_pixel_detector

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("plane", "ship")
UTM = Affine(0.3, 0.0, 5e5, 0.0, -0.3, 4.6e6)  # 0.3 m pixels, north up; x = 500000 m is zone 33's 15 deg E meridian


def _shoelace(ring):
    """Twice the signed area of a closed ring: > 0 when counter-clockwise in axes with y pointing up."""
    x, y = np.asarray(ring, float)[:-1].T
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _assert_same_ring(ring, corners, atol):
    """The closed ring runs through the 4 corners, in their order or the reverse, from any start, within atol."""
    ring = np.asarray(ring, float)
    assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
    candidates = [np.roll(order, -k, axis=0) for order in (corners, corners[::-1]) for k in range(4)]
    assert min(np.abs(ring[:4] - c).max() for c in candidates) <= atol


def _random_result(count=20, seed=0):
    rng = np.random.default_rng(seed)
    rboxes = np.column_stack((rng.uniform(50, 650, count), rng.uniform(50, 500, count), rng.uniform(10, 80, count),
                              rng.uniform(5, 30, count), rng.uniform(-math.pi / 2, math.pi / 2, count)))  # fmt: skip
    dets = Detections(torch.tensor(rboxes, dtype=torch.float32), torch.tensor(rng.uniform(0.1, 1, count)),
                      torch.tensor(rng.integers(0, 2, count)))  # fmt: skip
    return to_scene_result(dets, CLASSES)


ROTATED = Affine.translation(3.5e5, 5.1e6) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)
CASES = [("EPSG:32633", UTM), ("EPSG:32617", ROTATED), ("EPSG:4326", Affine(1e-5, 0, 10, 0, -1e-5, 50))]


@pytest.mark.parametrize("crs, transform", CASES, ids=["utm-north-up", "utm-rotated", "lonlat-raster"])
def test_rfc7946_reprojects_back_to_the_pixel_polygons(tmp_path, crs, transform):
    result = _random_result()
    write_geojson(tmp_path / "s.geojson", result, "s", CRS.from_string(crs), transform)
    collection = json.loads((tmp_path / "s.geojson").read_text())
    assert "crs" not in collection and collection["coordinates"] == "lonlat" and len(collection["features"]) == 20
    geometries = [f["geometry"] for f in collection["features"]]
    assert all(g["type"] == "Polygon" and _shoelace(g["coordinates"][0]) > 0 for g in geometries)  # RFC 3.1.6
    back = warp.transform_geom("EPSG:4326", crs, geometries)
    inverse = ~transform
    for geometry, polygon, feature in zip(back, result.polygons, collection["features"], strict=True):
        ring = np.array([inverse @ point for point in geometry["coordinates"][0]])
        _assert_same_ring(ring, polygon.reshape(4, 2), atol=0.01)
        _assert_same_ring(feature["properties"]["pixel_polygon"], polygon.reshape(4, 2), atol=1e-9)
    first = collection["features"][0]["properties"]
    assert first["class"] == result.classes[0] and first["score"] == pytest.approx(result.scores[0], abs=1e-12)


def test_rfc7946_orientation_by_hand():
    # The square with pixel corners (10, 20) (30, 20) (30, 40) (10, 40): top-left, top-right, bottom-right,
    # bottom-left, clockwise on the screen (y down). In lon/lat its ring must run counter-clockwise (RFC 7946
    # 3.1.6), which over a north-up scene is counter-clockwise on the screen too: top-left -> bottom-left ->
    # bottom-right -> top-right. Pixel x = 0 is easting 500000 m: longitude 15 exactly.
    square = np.array([[10.0, 20, 30, 20, 30, 40, 10, 40], [0.0, 0, 10, 0, 10, 10, 0, 10]])
    result = SceneResult(square, ["ship", "plane"], np.array([0.9, 0.5]))
    collection = geojson_collection(result, "s", CRS.from_epsg(32633), UTM)
    lonlat = np.array(collection["features"][0]["geometry"]["coordinates"][0])
    pixels = np.array([~UTM @ p for p in warp.transform_geom("EPSG:4326", "EPSG:32633", {"type": "Polygon",
                       "coordinates": [lonlat.tolist()]})["coordinates"][0]])  # fmt: skip
    k = int(np.argmin(np.abs(pixels[:4] - [10, 20]).sum(axis=1)))  # start at the top-left corner
    expected = [[10, 20], [10, 40], [30, 40], [30, 20]]
    np.testing.assert_allclose(np.roll(pixels[:4], -k, axis=0), expected, atol=0.01, rtol=0)
    assert _shoelace(lonlat) > 0 and _shoelace(pixels) < 0  # ccw in lon/lat; ccw on the y-down screen
    corner = np.array(collection["features"][1]["geometry"]["coordinates"][0])
    assert np.abs(corner[:, 0] - 15).min() < 1e-9 and 41.5 < corner[0, 1] < 41.6  # (0, 0): 15 E, 4600 km north


def test_rfc7946_without_crs_is_in_pixels_and_unknown_crs_is_refused():
    result = _random_result(3)
    collection = geojson_collection(result, "plain")
    assert "crs" not in collection and collection["coordinates"] == "pixel"
    for feature, polygon in zip(collection["features"], result.polygons, strict=True):
        _assert_same_ring(feature["geometry"]["coordinates"][0], polygon.reshape(4, 2), atol=1e-12)
    local = CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1]]')
    with pytest.raises(SceneError, match="plain: cannot reproject .* geojson-crs"):
        geojson_collection(result, "plain", local, UTM)


def _features(path):
    """(crs, layer metadata, rings (n, 5, 2), fields {name: values}) of a GeoPackage read back with pyogrio."""
    meta, _, geometry, values = pyogrio.raw.read(path)
    rings = np.array([shapely.get_coordinates(g.exterior) for g in shapely.from_wkb(geometry)]).reshape(-1, 5, 2)
    layer = pyogrio.read_info(path)["layer_metadata"]
    return meta["crs"], layer, rings, dict(zip(meta["fields"], values, strict=True))


def test_gpkg_reads_back_as_the_scene_result_and_task1_files(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (3, 400, 500), dtype=np.uint8)
    profile = dict(driver="GTiff", width=500, height=400, count=3, dtype="uint8", crs="EPSG:32633", transform=UTM)
    with rasterio.open(tmp_path / "geo.tif", "w", **profile) as dst:
        dst.write(rgb)
    cv2.imwrite(str(tmp_path / "plain.png"), rgb.transpose(1, 2, 0))
    out, scenes = tmp_path / "out", [tmp_path / "geo.tif", tmp_path / "plain.png"]
    formats = ("gpkg", "geojson", "geojson-crs")
    report = predict_scenes(
        scenes, brightest_pixel_detector, out, CLASSES, formats=formats, progress=False, tile_size=128, gap=16
    )
    assert report.done == scenes and sorted(p.name for p in (out / "gpkg").iterdir()) == ["geo.gpkg", "plain.gpkg"]
    assert assemble_task1(out, ["geo", "plain"], CLASSES) == []
    task1 = read_task1(out)
    for name, transform in (("geo", UTM), ("plain", None)):
        crs, layer, rings, fields = _features(out / "gpkg" / f"{name}.gpkg")
        result = read_scene_result(out / "scenes" / f"{name}.txt")
        assert len(rings) == len(result.classes) >= 12  # 16 tiles, a box each; the merge drops a few doubles
        assert crs == ("EPSG:32633" if transform else None)
        assert layer == {"coordinates": "crs" if transform else "pixel"}
        assert list(fields["class"]) == result.classes and set(fields["scene"]) == {name}
        np.testing.assert_allclose(fields["score"], result.scores, atol=1e-12, rtol=0)
        for ring, polygon in zip(rings, result.polygons, strict=True):
            corners = polygon.reshape(4, 2)
            expected = np.array([transform @ p for p in corners]) if transform else corners
            _assert_same_ring(ring, expected, atol=1e-6)  # CRS units (metres) or pixels
            assert _shoelace(ring) > 0
        for cls in CLASSES:  # the Task1 files hold the same features, by decreasing score
            dets, mine = task1[cls], np.array(fields["class"]) == cls
            rows = [i for i, image in enumerate(dets.image_names) if image == name]
            order = np.argsort(-fields["score"][mine], kind="stable")
            np.testing.assert_allclose(dets.scores[rows], fields["score"][mine][order], atol=1e-12, rtol=0)
            for ring, polygon in zip(rings[mine][order], dets.polygons[rows], strict=True):
                corners = polygon.reshape(4, 2)
                _assert_same_ring(ring, np.array([transform @ p for p in corners]) if transform else corners, 1e-6)
    rfc = json.loads((out / "geojson" / "geo.geojson").read_text())
    native = json.loads((out / "geojson-crs" / "geo.geojson").read_text())
    assert "crs" not in rfc and native["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert 15 < rfc["features"][0]["geometry"]["coordinates"][0][0][0] < 15.01  # longitude, just east of 15 E


def test_empty_gpkg_has_the_layer_and_its_crs(tmp_path):
    write_gpkg(tmp_path / "e.gpkg", SceneResult(np.zeros((0, 8)), [], np.zeros(0)), "e", CRS.from_epsg(32633), UTM)
    info = pyogrio.read_info(tmp_path / "e.gpkg")
    assert info["features"] == 0 and info["crs"] == "EPSG:32633" and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class", "score", "scene"] and list(tmp_path.iterdir()) == [tmp_path / "e.gpkg"]


def test_missing_pyogrio_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyogrio", None)
    monkeypatch.setitem(sys.modules, "pyogrio.raw", None)
    message = "the gpkg format needs pyogrio, which is not installed: pip install pyogrio"
    with pytest.raises(ValueError, match=message):
        check_formats(["dota", "gpkg"])
    check_formats(["dota", "geojson", "geojson-crs", "png"])  # the others need no pyogrio
    with pytest.raises(ValueError, match=message):
        predict_scenes([tmp_path / "none.tif"], brightest_pixel_detector, tmp_path / "out", CLASSES, formats=("gpkg",))
    infer = runpy.run_path(str(ROOT / "tools" / "infer.py"))["main"]
    args = [str(tmp_path / "none.pth"), str(tmp_path / "none.tif"), "--out", str(tmp_path / "out")]
    assert infer([*args, "--formats", "dota,gpkg"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"infer: error: {message} (or rotated_ddetr[geo])"]
    assert not (tmp_path / "out").exists()
