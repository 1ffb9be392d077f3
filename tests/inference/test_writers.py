"""Writers: GeoJSON in the raster's CRS for a known geotransform (by hand), DOTA result and Task1 files (round trip,
ready for evaluation), the picture, and predict_scenes: corrupt or truncated scenes fail alone, finished scenes are
skipped. RFC 7946 GeoJSON and GeoPackage: tests/inference/test_gis.py."""

import json
import math

import cv2
import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine

from rotated_ddetr.data.dota import SceneResult, read_scene_result, read_task1, write_scene_result
from rotated_ddetr.evaluation import eval_dota
from rotated_ddetr.inference import ArrayScene, Detections
from rotated_ddetr.inference.gis import geojson_crs_collection, write_geojson_crs
from rotated_ddetr.inference.predictor import predict_scenes
from rotated_ddetr.inference.writers import (
    assemble_task1,
    class_colour,
    scene_result_path,
    to_scene_result,
    write_picture,
    write_task1_results,
)

CLASSES = ("plane", "ship", "small-vehicle")


def _result():
    # An axis-aligned 20 x 20 square centred at (20, 30) and a 40 x 10 box at (100, 50) turned by 90 degrees.
    dets = Detections(torch.tensor([[20.0, 30.0, 20.0, 20.0, 0.0], [100.0, 50.0, 40.0, 10.0, -math.pi / 2]]),
                      torch.tensor([0.9, 0.25]), torch.tensor([1, 0]))  # fmt: skip
    return to_scene_result(dets, CLASSES)


def test_geojson_crs_coordinates_by_hand(tmp_path):
    transform = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)  # 0.5 m pixels, north up, corner at (1000, 2000)
    collection = geojson_crs_collection(_result(), "scene", CRS.from_epsg(32633), transform)
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    first = collection["features"][0]
    assert first["properties"]["class"] == "ship" and first["properties"]["score"] == pytest.approx(0.9)
    # Pixel corners (10, 20) (30, 20) (30, 40) (10, 40) -> x = 1000 + 0.5 px, y = 2000 - 0.5 py.
    ring = np.array(first["geometry"]["coordinates"][0])
    assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
    assert {tuple(p) for p in ring[:4]} == {(1005.0, 1990.0), (1015.0, 1990.0), (1015.0, 1980.0), (1005.0, 1980.0)}
    x, y = ring[:4, 0], ring[:4, 1]
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # counter-clockwise exterior ring (RFC 7946)
    assert {tuple(p) for p in first["properties"]["pixel_polygon"][:4]} == {(10, 20), (30, 20), (30, 40), (10, 40)}
    second = np.array(collection["features"][1]["geometry"]["coordinates"][0])
    # Corners (95, 30) .. (105, 70): x 1047.5 .. 1052.5, y 1985 .. 1965 (float32 angle: 1e-6 m tolerance).
    expected = [(1047.5, 1965.0), (1047.5, 1985.0), (1052.5, 1965.0), (1052.5, 1985.0)]
    np.testing.assert_allclose(sorted(map(tuple, np.round(second[:4], 6))), expected, atol=1e-6, rtol=0)
    write_geojson_crs(tmp_path / "s.geojson", _result(), "scene", CRS.from_epsg(32633), transform)
    assert json.loads((tmp_path / "s.geojson").read_text()) == json.loads(json.dumps(collection))


def test_geojson_crs_in_pixels_without_crs():
    collection = geojson_crs_collection(_result(), "plain")
    assert "crs" not in collection and collection["coordinates"] == "pixel"
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert {tuple(p) for p in ring} == {(10, 20), (30, 20), (30, 40), (10, 40)}
    assert "pixel_polygon" not in collection["features"][0]["properties"]


def test_scene_result_and_task1_files_round_trip(tmp_path):
    result = _result()
    write_scene_result(tmp_path / "a.txt", result)
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert lines[0] == "10 20 30 20 30 40 10 40 ship 0.9"  # polygons to 0.01 px, scores to 1e-6; shortest text
    back = read_scene_result(tmp_path / "a.txt")
    np.testing.assert_allclose(back.polygons, result.polygons, atol=1e-12)
    assert back.classes == ["ship", "plane"] and back.scores.tolist() == result.scores.tolist()
    write_task1_results(tmp_path / "sub", {"A": result, "B": back}, CLASSES)
    task1 = read_task1(tmp_path / "sub")
    assert sorted(task1) == sorted(CLASSES) and len(task1["small-vehicle"]) == 0
    assert task1["ship"].image_names == ["A", "B"] and task1["plane"].scores.tolist() == [0.25, 0.25]


def test_picture_has_boxes_in_class_colours_and_a_legend(tmp_path):
    scene = ArrayScene(np.full((1000, 2000, 3), 60, np.uint8))
    result = SceneResult(np.array([[1000.0, 500, 1400, 500, 1400, 800, 1000, 800]]), ["ship"], np.array([0.5]))
    write_picture(tmp_path / "p.png", scene, result, CLASSES, max_side=500)
    picture = cv2.imread(str(tmp_path / "p.png"))[..., ::-1]
    assert picture.shape == (250, 500, 3)  # downscaled by 4
    edge = picture[125, 250 + 10].astype(int)  # the top edge of the box at 1/4 scale, anti-aliased
    assert np.abs(edge - class_colour(1)).max() <= 24 and np.abs(edge - class_colour(0)).max() > 100
    assert picture[160, 300].tolist() == [60, 60, 60]  # inside the box: the scene
    assert (picture[2:8, 40:60] == 255).all(axis=-1).any()  # the legend's white panel, top left


def _detector(tiles):
    """A stand-in detector: one 'plane' box in the middle of each tile."""
    boxes = [torch.tensor([[t.shape[1] / 2, t.shape[0] / 2, 20.0, 10.0, 0.0]]) for t in tiles]
    return [Detections(b, torch.tensor([0.8]), torch.tensor([0])) for b in boxes]


def test_predict_scenes_survives_corrupt_inputs_and_resumes(tmp_path, dota_samples):
    png = dota_samples / "images" / "P1888.png"
    good = tmp_path / "in" / "good.png"
    good.parent.mkdir()
    good.write_bytes(png.read_bytes())
    cut = tmp_path / "in" / "cut.png"
    cut.write_bytes(png.read_bytes()[:5000])
    rgb = cv2.imread(str(png))[..., ::-1].transpose(2, 0, 1)
    profile = dict(driver="GTiff", width=712, height=557, count=3, dtype="uint8", crs="EPSG:4326",
                   transform=Affine(1e-5, 0, 10, 0, -1e-5, 50))  # fmt: skip
    with rasterio.open(tmp_path / "in" / "geo.tif", "w", **profile) as dst:
        dst.write(rgb)
    paths = [good, cut, tmp_path / "in" / "geo.tif"]
    out = tmp_path / "out"
    report = predict_scenes(
        paths, _detector, out, CLASSES, formats=("geojson-crs", "png"), progress=False, tile_size=512, gap=100
    )
    assert report.done == [good, paths[2]] and list(report.failed) == [cut]
    assert "truncated PNG" in report.failed[cut]
    assert sorted(p.name for p in (out / "scenes").iterdir()) == ["geo.txt", "good.txt"]
    assert (out / "pictures" / "geo.png").is_file() and (out / "geojson-crs" / "good.geojson").is_file()
    geo = json.loads((out / "geojson-crs" / "geo.geojson").read_text())
    assert geo["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326" and len(geo["features"]) == 4
    missing = assemble_task1(out, ["good", "cut", "geo"], CLASSES)
    assert missing == ["cut"] and read_task1(out)["plane"].image_names == ["good"] * 4 + ["geo"] * 4
    again = predict_scenes(paths, _detector, out, CLASSES, progress=False, tile_size=512, gap=100)
    assert again.skipped == [good, paths[2]] and list(again.failed) == [cut] and not again.done
    scene_result_path(out, "good").unlink()
    assert predict_scenes([good], _detector, out, CLASSES, progress=False).done == [good]


def test_task1_of_ground_truth_scores_one(tmp_path, dota_samples):
    from rotated_ddetr.data.dota import read_dota_labels

    labels = read_dota_labels(dota_samples / "labelTxt" / "P1888.txt")
    result = SceneResult(labels.polygons, labels.classes, np.linspace(1, 0.5, len(labels)))
    write_task1_results(tmp_path, {"P1888": result}, sorted(set(labels.classes)))
    assert eval_dota(tmp_path, {"P1888": labels})["mAP"] == pytest.approx(1.0, abs=1e-12)
