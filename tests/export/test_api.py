"""The Python API: `rotated_ddetr.load` -> `RotatedDETR.predict` -> `Results`, against the engine it wraps."""

import json

import cv2
import numpy as np
import pytest
import torch

import rotated_ddetr
from rotated_ddetr import api
from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.data.dota import read_scene_result
from rotated_ddetr.export import RawDetector
from rotated_ddetr.inference import Predictor, postprocess_raw, tiled_predict


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return rotated_ddetr.load(tiny_checkpoint)


def test_the_package_exposes_the_api():
    assert rotated_ddetr.load is api.load and rotated_ddetr.Results is api.Results
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        rotated_ddetr.lod  # noqa: B018


def test_predict_equals_the_predictor_on_whole_images(detector, tiny_checkpoint, synthetic_tiles, tmp_path):
    engine = Predictor.from_checkpoint(tiny_checkpoint, amp="none", score_threshold=0.0)
    path = tmp_path / "tile.png"
    assert cv2.imwrite(str(path), synthetic_tiles[1][..., ::-1])  # RGB -> BGR
    results = detector.predict([synthetic_tiles[0], path], score_thr=0.03)
    assert [r.name for r in results] == ["image", "tile"] and results[0].names == detector.names
    for r, tile in zip(results, synthetic_tiles[:2], strict=True):
        expected = engine.predict_tiles([tile])[0]
        keep = expected.scores >= 0.03
        assert 0 < len(r) < len(expected.scores)
        np.testing.assert_array_equal(r.rboxes, expected.rboxes[keep].numpy())
        np.testing.assert_array_equal(r.scores, expected.scores[keep].numpy())
        np.testing.assert_array_equal(r.labels, expected.labels[keep].numpy())
    np.testing.assert_array_equal(results[0].polygons, rboxes_to_polygons(results[0].rboxes).reshape(-1, 4, 2))
    assert results[0].polygons.shape == (len(results[0]), 4, 2)


def test_predict_with_tiles_equals_tiled_predict(detector, synthetic_tiles):
    scene = np.concatenate(list(synthetic_tiles), axis=1)  # 256 x 768
    (r,) = detector.predict(scene, score_thr=0.03, tile_size=256, gap=64)
    expected = tiled_predict(scene, detector.predictor.predict_tiles, tile_size=256, gap=64, score_threshold=0.03)
    assert len(r) > 0 and r.scores.min() >= 0.03
    np.testing.assert_array_equal(r.rboxes, expected.rboxes.numpy())
    np.testing.assert_array_equal(r.labels, expected.labels.numpy())


def test_results_plot_geojson_and_txt(detector, synthetic_tiles, tmp_path):
    (r,) = detector.predict(synthetic_tiles[0], score_thr=0.03)
    picture = r.plot()
    assert picture.shape == synthetic_tiles[0].shape and picture.dtype == np.uint8
    assert (picture != synthetic_tiles[0]).any(axis=-1).mean() > 0.01  # boxes and legend drawn
    collection = r.to_geojson()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(r)
    ring = np.array(collection["features"][0]["geometry"]["coordinates"][0][:-1])  # closed ring, pixels
    assert np.abs(np.sort(ring, axis=0) - np.sort(r.polygons[0], axis=0)).max() <= 0.01
    assert json.dumps(collection)
    r.save_txt(tmp_path / "tile.txt")
    written = read_scene_result(tmp_path / "tile.txt")
    assert written.classes == [r.names[i] for i in r.labels]
    np.testing.assert_allclose(written.polygons, r.polygons.reshape(-1, 8), atol=0.005)
    np.testing.assert_allclose(written.scores, r.scores, atol=5e-7)


def test_forward_raw_is_the_exported_graph_and_postprocess_raw_gives_predict(detector, synthetic_tiles, tile_batch):
    logits, rboxes = detector.forward_raw(tile_batch)
    with torch.no_grad():
        expected = RawDetector(detector.predictor.model)(tile_batch)
    assert torch.equal(logits, expected[0]) and torch.equal(rboxes, expected[1])
    assert logits.shape == (3, 300, len(detector.names)) and rboxes.shape == (3, 300, 5)
    p = detector.predictor  # its top_k and NMS (the config's eval settings)
    dets = postprocess_raw(logits, rboxes, torch.tensor([[256, 256]] * 3), p.top_k, 0.03, p.nms_iou)
    results = detector.predict(list(synthetic_tiles), score_thr=0.03)
    for d, r in zip(dets, results, strict=True):
        np.testing.assert_allclose(d.rboxes.numpy(), r.rboxes, atol=1e-3)
        np.testing.assert_array_equal(d.labels.numpy(), r.labels)


def test_load_reads_release_weights_and_checks_amp(detector, tiny_checkpoint, synthetic_tiles, tmp_path):
    path = detector.export("safetensors", tmp_path / "tiny.safetensors")
    again = rotated_ddetr.load(path)
    (a,), (b,) = detector.predict(synthetic_tiles[0]), again.predict(synthetic_tiles[0])
    np.testing.assert_array_equal(a.rboxes, b.rboxes)
    (c,) = rotated_ddetr.load(tiny_checkpoint, amp="bf16").predict(synthetic_tiles[0], score_thr=0.03)
    assert len(c) > 0
    with pytest.raises(ValueError, match="amp"):
        rotated_ddetr.load(tiny_checkpoint, amp="int8")
    with pytest.raises(ValueError, match="score_thr must be in"):
        detector.predict(synthetic_tiles[0], score_thr=1.5)
