"""Tests of the synthetic aerial dataset: determinism, valid labels, class coverage, stripes, files and tools."""

import importlib.util
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
import torch

from rotated_ddetr.data.dota import read_dota_labels
from rotated_ddetr.data.split import SplitOptions, split_dataset
from rotated_ddetr.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticOptions,
    generate_image,
    plan_scene,
    render,
    render_stripes,
    training_samples,
    write_dataset,
    write_scene,
)
from rotated_ddetr.data.synthetic_paint import ValueNoise

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample_set() -> list:
    """12 images of 512 px from seed 0 (about 1.5 s)."""
    return [generate_image(0, index) for index in range(12)]


def _load_tool():
    """The subcommand module (`tools/*.py` are wrappers of its `main`)."""
    return importlib.import_module("rotated_ddetr.cli.synth")


def test_deterministic_by_seed_and_index():
    image, labels = generate_image(5, 3, 320)
    again, labels_again = generate_image(5, 3, 320)
    assert image.shape == (320, 320, 3) and image.dtype == np.uint8
    assert image.tobytes() == again.tobytes()
    np.testing.assert_array_equal(labels.polygons, labels_again.polygons)
    assert labels.classes == labels_again.classes and labels.difficult.tolist() == labels_again.difficult.tolist()
    other, other_labels = generate_image(6, 3, 320)
    assert np.abs(image.astype(int) - other).mean() > 10  # a different seed is a different scene
    assert len(labels) != len(other_labels) or not np.allclose(labels.polygons, other_labels.polygons)
    neighbour, _ = generate_image(5, 4, 320)
    assert np.abs(image.astype(int) - neighbour).mean() > 10


def test_labels_are_rectangles_on_the_image(sample_set):
    inside, total = 0, 0
    for image, labels in sample_set:
        size = image.shape[0]
        assert 5 <= len(labels) <= 41
        corners = labels.polygons.reshape(-1, 4, 2)
        edges = np.roll(corners, -1, axis=1) - corners  # (N, 4, 2)
        lengths = np.linalg.norm(edges, axis=-1)
        assert lengths.min() > 1.5
        # Right angles and equal opposite sides, up to the 0.01 px rounding of the written coordinates.
        cosines = np.abs((edges * np.roll(edges, -1, axis=1)).sum(-1)) / (lengths * np.roll(lengths, -1, axis=1))
        assert cosines.max() < 2e-3
        np.testing.assert_allclose(lengths[:, :2], lengths[:, 2:], atol=0.03)
        frame = shapely.box(0, 0, size, size)
        for polygon in shapely.polygons(corners):
            share = polygon.intersection(frame).area / polygon.area
            # A cut object is labelled by the bounding rectangle of its visible part; a convex set fills at least
            # half of any bounding rectangle, so at least half of the label lies on the image.
            assert share > 0.5 - 1e-6
            inside += share > 0.999
            total += 1
    assert inside > 0.9 * total


def test_every_class_sizes_and_difficulty(sample_set):
    classes = Counter(c for _, labels in sample_set for c in labels.classes)
    assert set(classes) == set(SYNTHETIC_CLASSES), classes
    rboxes = np.concatenate([labels.rboxes() for _, labels in sample_set])
    difficult = np.concatenate([labels.difficult for _, labels in sample_set])
    long_side = rboxes[:, 2][difficult == 0]
    assert np.percentile(long_side, 2) > 11 and np.percentile(long_side, 98) < 125  # about 12-120 px at 512 px
    assert 0.01 < (difficult > 0).mean() < 0.25  # some small, occluded or cut objects, not many
    assert set(np.unique(difficult)) <= {0, 1, 2}
    tanks = [
        polygon.reshape(4, 2)
        for _, labels in sample_set
        for polygon, name in zip(labels.polygons, labels.classes, strict=True)
        if name == "storage-tank" and 0 < polygon.min() and polygon.max() < 512  # not cut by the border
    ]
    assert len(tanks) > 5
    for corners in tanks:  # axis-aligned squares: two distinct x, two distinct y, equal sides
        assert len(np.unique(corners[:, 0])) == 2 and len(np.unique(corners[:, 1])) == 2
        sides = corners.max(0) - corners.min(0)
        assert sides[0] == pytest.approx(sides[1], abs=0.03)


def test_files_round_trip_and_workers_do_not_matter(tmp_path: Path):
    counts = write_dataset(tmp_path / "one", 4, size=256, seed=9, progress=False)
    write_dataset(tmp_path / "two", 4, size=256, seed=9, workers=2, progress=False)
    names = sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    assert names == [f"synth_{i:05d}.png" for i in range(4)]
    for sub in ("images", "labelTxt"):
        for path in sorted((tmp_path / "one" / sub).iterdir()):
            assert path.read_bytes() == (tmp_path / "two" / sub / path.name).read_bytes(), path.name
    total = 0
    for index in range(4):
        image, labels = generate_image(9, index, 256)
        stored = read_dota_labels(tmp_path / "one" / "labelTxt" / f"synth_{index:05d}.txt")
        np.testing.assert_array_equal(stored.polygons, labels.polygons)
        assert stored.classes == labels.classes and stored.difficult.tolist() == labels.difficult.tolist()
        assert stored.image_source == "synthetic" and 0.2 < stored.gsd < 0.4
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "one" / "images" / f"synth_{index:05d}.png")), image)
        total += len(labels)
    assert sum(counts.values()) == total


def test_noise_and_stripes_join_without_seams():
    noise = ValueNoise(np.random.default_rng(0), 300, 200, 16.0, channels=2)
    whole = noise(0, 0, 300, 200)
    np.testing.assert_array_equal(noise(37, 50, 100, 80), whole[:, 50:130, 37:137])
    plan = plan_scene(384, 300, 1, 2, SyntheticOptions())
    whole = render(plan, 0, 0, 384, 300).astype(np.int16)
    striped = np.concatenate([pixels for _, pixels in render_stripes(plan, 64)]).astype(np.int16)
    difference = np.abs(whole - striped)  # only the sensor grain (seeded per stripe) differs
    assert difference.mean() < 3.5 and np.percentile(difference, 99.9) < 20


def test_scene_as_geotiff_equals_png(tmp_path: Path):
    rasterio = pytest.importorskip("rasterio")
    options = SyntheticOptions(stripe=256)
    labels = write_scene(tmp_path / "images" / "s.tif", tmp_path / "labelTxt" / "s.txt", (700, 900), 4, 0, options)
    write_scene(tmp_path / "images" / "s.png", None, (700, 900), 4, 0, options)
    with rasterio.open(tmp_path / "images" / "s.tif") as geotiff:
        assert (geotiff.width, geotiff.height, geotiff.count) == (900, 700, 3)
        assert geotiff.crs is not None and geotiff.transform.a == pytest.approx(-geotiff.transform.e)
        assert geotiff.profile["tiled"] and geotiff.block_shapes[0] == (512, 512)
        rgb = geotiff.read()
    png = cv2.imread(str(tmp_path / "images" / "s.png"))
    np.testing.assert_array_equal(rgb.transpose(1, 2, 0)[..., ::-1], png)
    stored = read_dota_labels(tmp_path / "labelTxt" / "s.txt")
    np.testing.assert_array_equal(stored.polygons, labels.polygons)
    assert len(labels) > 20  # densities are per 512 x 512 pixels: a 900 x 700 scene holds more
    with pytest.raises(ValueError, match=".png or .tif"):
        write_scene(tmp_path / "s.jpg", None, 256)


def test_the_splitter_reads_it(tmp_path: Path):
    write_dataset(tmp_path / "syn", 2, size=700, seed=3, progress=False)
    counts = split_dataset(tmp_path / "syn", tmp_path / "tiles", SplitOptions(tile_size=512, gap=100), progress=False)
    assert (counts.images, counts.written) == (2, 8)
    scene = read_dota_labels(tmp_path / "syn" / "labelTxt" / "synth_00000.txt")
    tile = read_dota_labels(tmp_path / "tiles" / "labelTxt" / "synth_00000__1.0__0___0.txt")
    assert len(tile) > 0 and set(tile.classes) <= set(scene.classes)


def test_options_and_tool(tmp_path: Path, capsys):
    planes_only = SyntheticOptions(classes=("plane",), objects=(3, 6))
    _, labels = generate_image(0, 0, 512, planes_only)
    assert set(labels.classes) == {"plane"} and len(labels) <= 7
    for index in range(3):
        _, labels = generate_image(1, index, 512, SyntheticOptions(classes=("large-vehicle",)))
        assert set(labels.classes) <= {"large-vehicle"} and len(labels) > 0
    with pytest.raises(ValueError):
        SyntheticOptions(classes=("helicopter",))
    tool = _load_tool()
    assert tool.main(["--out", str(tmp_path / "d"), "--images", "2", "--size", "128", "--quiet"]) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "labelTxt").glob("*.txt"))) == 2
    assert tool.main(["--out", str(tmp_path / "e"), "--images", "2", "--size", "8"]) == 1
    assert "image side" in capsys.readouterr().err
    assert tool.main(["--out", str(tmp_path / "f"), "--objects", "9", "3", "--quiet"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--help"])
    assert exit_info.value.code == 0


@pytest.mark.slow
def test_colour_alone_does_not_tell_the_classes_apart():
    """A colour-only classifier (15-NN on the mean colour inside each box) stays near chance (1/6 balanced)."""
    colours, classes = [], []
    for index in range(40):
        image, labels = generate_image(3, index)
        for polygon, name, flag in zip(labels.polygons, labels.classes, labels.difficult, strict=True):
            mask = np.zeros(image.shape[:2], np.uint8)
            cv2.fillPoly(mask, [polygon.reshape(4, 2).round().astype(np.int32)], 1)
            if flag == 0 and mask.sum() >= 5:
                colours.append(image[mask.astype(bool)].mean(0))
                classes.append(SYNTHETIC_CLASSES.index(name))
    colours, classes = np.array(colours), np.array(classes)
    order = np.random.default_rng(0).permutation(len(classes))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    distances = ((colours[test, None] - colours[None, train]) ** 2).sum(-1)
    votes = classes[train][np.argsort(distances, axis=1)[:, :15]]
    predicted = np.array([np.bincount(v, minlength=6).argmax() for v in votes])
    recalls = [(predicted[classes[test] == k] == k).mean() for k in range(6) if (classes[test] == k).any()]
    assert np.mean(recalls) < 0.4


def test_training_samples_are_the_generated_images_as_dataset_samples():
    classes = ("harbor", *reversed(SYNTHETIC_CLASSES))  # label index = position in the model's classes
    samples = training_samples(seed=3, count=2, size=320, classes=classes)
    assert len(samples) == 2
    for index, (image, target) in enumerate(samples):
        bgr, labels = generate_image(3, index, 320)
        assert image.shape == (3, 320, 320) and image.dtype == torch.float32
        # RGB in [0, 1]: channel c is the BGR image's channel 2 - c over 255, to float32 rounding.
        expected = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-7)
        assert target.image_size == (320, 320)
        assert target.labels.tolist() == [classes.index(name) for name in labels.classes]
        pixels = torch.from_numpy(labels.rboxes()).float()
        torch.testing.assert_close(target.rboxes[:, :4] * 320, pixels[:, :4], rtol=0, atol=1e-4)
        torch.testing.assert_close(target.rboxes[:, 4], pixels[:, 4], rtol=0, atol=0)
        assert len(labels.classes) > 0
    with pytest.raises(ValueError, match="synthetic class .* is not among the classes"):
        training_samples(seed=3, count=1, size=320, classes=("plane",))
