"""Tests of DOTA splitting: windows, hand-computed cuts, round trips, rates, re-runs, errors, and the devkit itself."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotated_ddetr.data.dota import DotaLabels, read_dota_labels, write_dota_labels
from rotated_ddetr.data.split import (
    SplitOptions,
    clip_labels,
    poly5_to_poly4,
    read_scene_labels,
    split_dataset,
    split_image,
)
from rotated_ddetr.tiles import parse_tile_name, resized_size, tile_name, tile_windows

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    """The subcommand module (`tools/*.py` are wrappers of its `main`)."""
    return importlib.import_module("rotated_ddetr.cli.split")


def _scene(root: Path, name: str, size_wh: tuple[int, int], labels: DotaLabels | None, suffix: str = ".png") -> Path:
    """A dataset root with one noise image (and its labels unless None); returns the image path."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    path = root / "images" / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    if labels is not None:
        write_dota_labels(root / "labelTxt" / f"{name}.txt", labels)
    return path


def _rect(x0, y0, x1, y1) -> list[float]:
    """An axis-aligned rectangle as a DOTA polygon, clockwise on screen from the top-left corner."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _tiles(dst: Path) -> dict[str, DotaLabels]:
    return {p.stem: read_dota_labels(p) for p in sorted((dst / "labelTxt").glob("*.txt"))}


def test_windows_of_p0706_and_small_images():
    # P0706 is 1111 x 1182: steps of 824 px, the last window snapped back to the edge (1111 - 1024 = 87, 158).
    assert tile_windows((1182, 1111), 1024, 200) == [(0, 0), (0, 158), (87, 0), (87, 158)]
    assert tile_windows((300, 500), 1024, 200) == [(0, 0)]  # smaller than a tile: one window
    assert tile_windows((1024, 1024), 1024, 200) == [(0, 0)]
    assert tile_windows((1025, 2000), 1024, 200) == [(0, 0), (0, 1), (824, 0), (824, 1), (976, 0), (976, 1)]
    assert tile_name("P0706", 1.0, 824, 0) == "P0706__1.0__824___0"
    assert tile_name("P0706", 1, 0, 0) == "P0706__1.0__0___0"
    assert parse_tile_name("P0706__1.5__87___158") == ("P0706", 1.5, 87, 158)
    with pytest.raises(ValueError, match="not a tile name"):
        parse_tile_name("P0706")
    with pytest.raises(ValueError):
        SplitOptions(tile_size=512, gap=512)


def test_split_p0706_tile_names(dota_samples: Path, tmp_path: Path):
    counts = split_image(
        dota_samples / "images" / "P0706.png", dota_samples / "labelTxt" / "P0706.txt", tmp_path, SplitOptions()
    )
    names = sorted(p.stem for p in (tmp_path / "images").glob("*.png"))
    assert names == sorted(["P0706__1.0__0___0", "P0706__1.0__87___0", "P0706__1.0__0___158", "P0706__1.0__87___158"])
    assert sorted(p.stem for p in (tmp_path / "labelTxt").glob("*.txt")) == names
    assert (counts.written, counts.existing) == (4, 0)
    tile = cv2.imread(str(tmp_path / "images" / "P0706__1.0__87___158.png"))
    scene = cv2.imread(str(dota_samples / "images" / "P0706.png"))
    assert tile.shape == (1024, 1024, 3)
    np.testing.assert_array_equal(tile, scene[158:, 87:])


def test_cut_objects_by_hand():
    # Scene 1000 x 600, tiles 600 / gap 100: windows (0, 0) and (400, 0). Window (0, 0) clips to x <= 600 and,
    # at the image's bottom edge, y <= 599 (the devkit's height - 1); window (400, 0) clips to x in [400, 999].
    polygons = [
        _rect(560, 100, 660, 200),  # 40% inside window 0 -> difficult 2
        _rect(520, 300, 620, 400),  # 80% inside window 0 -> keeps difficult 1
        [570, 400, 630, 440, 590, 500, 530, 460],  # square cut into a 5-gon by x = 600
        _rect(100, 560, 200, 600),  # cut at y = 599 only (39 of 40 rows inside)
        _rect(380, 50, 480, 90),  # 80% inside window 400, clamped to x >= 1
        [390, 500, 410, 520, 390, 540, 370, 520],  # a corner in window 400: a triangle, dropped there
    ]
    labels = DotaLabels(np.array(polygons, dtype=np.float64), list("abcdef"), [0, 1, 0, 0, 0, 0])
    options = SplitOptions(tile_size=600, gap=100)
    assert tile_windows((600, 1000), 600, 100) == [(0, 0), (400, 0)]
    first = clip_labels(labels, 0, 0, 600, 599, options)
    assert first.classes == list("abcdef")
    # The 5-gon (570,400) (600,420) (600,485) (590,500) (530,460): its shortest edge (600,485)-(590,500) becomes
    # the midpoint (595, 492.5), truncated to 492; the square loses the triangle 0.5*65*30 = 975 of 5200 (81%).
    expected = [
        _rect(560, 100, 600, 200),
        _rect(520, 300, 600, 400),
        [570, 400, 600, 420, 595, 492, 530, 460],
        _rect(100, 560, 200, 599),
        _rect(380, 50, 480, 90),
        polygons[5],
    ]
    np.testing.assert_array_equal(first.polygons, np.array(expected, dtype=np.float64))
    np.testing.assert_array_equal(first.difficult, [2, 1, 0, 0, 0, 0])
    second = clip_labels(labels, 400, 0, 999, 599, options)
    assert second.classes == list("abce")  # d lies left of the window
    shift = np.tile([400.0, 0.0], 4)
    expected = [np.array(p) - shift for p in polygons[:3]] + [_rect(1, 50, 80, 90)]
    np.testing.assert_array_equal(second.polygons, np.array(expected))
    np.testing.assert_array_equal(second.difficult, [0, 1, 0, 0])


def test_poly5_to_poly4_merges_the_shortest_edge():
    poly = [570, 400, 600, 420, 600, 485, 590, 500, 530, 460]
    assert poly5_to_poly4(poly) == [570, 400, 600, 420, 595.0, 492.5, 530, 460]
    # Shortest edge between the last and the first vertex: the midpoint comes last, vertex 0 is dropped.
    assert poly5_to_poly4([0, 0, 10, -1, 20, 10, 10, 20, 0, 2]) == [10, -1, 20, 10, 10, 20, 0.0, 1.0]


def test_uncut_objects_round_trip_exactly(dota_samples: Path, tmp_path: Path):
    image, labels = dota_samples / "images" / "P0706.png", dota_samples / "labelTxt" / "P0706.txt"
    split_image(image, labels, tmp_path, SplitOptions())
    scene = read_dota_labels(dota_samples / "labelTxt" / "P0706.txt")
    width, height = 1111, 1182
    checked = 0
    for name, tile in _tiles(tmp_path).items():
        _, _, left, up = parse_tile_name(name)
        right, down = min(left + 1024, width - 1), min(up + 1024, height - 1)
        xs, ys = scene.polygons[:, 0::2], scene.polygons[:, 1::2]
        inside = (xs.min(1) >= left) & (xs.max(1) <= right) & (ys.min(1) >= up) & (ys.max(1) <= down)
        back = tile.polygons + np.tile([left, up], 4)
        found = {(tuple(p), c, d) for p, c, d in zip(back.tolist(), tile.classes, tile.difficult.tolist(), strict=True)}
        for i in np.flatnonzero(inside):
            assert (tuple(scene.polygons[i].tolist()), scene.classes[i], int(scene.difficult[i])) in found
            checked += 1
    assert checked > 4 * 400  # most of the 536 ships lie wholly in each of the 4 heavily overlapping tiles


def test_rates_scale_images_and_coordinates(dota_samples: Path, tmp_path: Path):
    image = cv2.imread(str(dota_samples / "images" / "P1888.png"))
    scene = read_scene_labels(dota_samples / "labelTxt" / "P1888.txt")
    options = SplitOptions(rates=(0.5, 1.5))
    split_image(dota_samples / "images" / "P1888.png", dota_samples / "labelTxt" / "P1888.txt", tmp_path, options)
    tiles = _tiles(tmp_path)
    # 712 x 557 -> 356 x 278 (278.5 rounds to even) and 1068 x 836 (835.5 rounds to even): 1 and 2 windows.
    assert resized_size((557, 712), 0.5) == (278, 356) and resized_size((557, 712), 1.5) == (836, 1068)
    assert sorted(tiles) == ["P1888__0.5__0___0", "P1888__1.5__0___0", "P1888__1.5__44___0"]
    half = tiles["P1888__0.5__0___0"]
    np.testing.assert_array_equal(half.polygons, np.trunc(scene.polygons * 0.5))  # all inside the only tile
    big = {tuple(p) for p in tiles["P1888__1.5__44___0"].polygons.tolist()}
    whole = np.flatnonzero(scene.polygons[:, 0::2].min(1) * 1.5 >= 44)  # wholly inside window (44, 0)
    assert len(whole) > 40
    for poly in np.trunc(scene.polygons[whole] * 1.5 - np.tile([44.0, 0.0], 4)).tolist():
        assert tuple(poly) in big
    resized = cv2.resize(image, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    assert resized.shape[:2] == (836, 1068)
    tile = cv2.imread(str(tmp_path / "images" / "P1888__1.5__44___0.png"))
    np.testing.assert_array_equal(tile[:836, :1024], resized[:, 44:])
    assert not tile[836:].any()  # zero padding to 1024 x 1024
    for width in (555, 556, 557, 1111):
        for rate in (0.5, 1.5, 0.7):
            shape = cv2.resize(np.zeros((3, width), np.uint8), None, fx=rate, fy=rate).shape
            assert resized_size((3, width), rate) == shape


def test_rerun_skips_existing_tiles(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _scene(src, "A", (1500, 700), DotaLabels(np.array([_rect(10, 10, 50, 30)]), ["plane"], [0]))
    options = SplitOptions(tile_size=512, gap=100)
    first = split_dataset(src, dst, options, progress=False)
    assert (first.written, first.existing) == (8, 0)
    marker = dst / "labelTxt" / "A__1.0__0___0.txt"
    marker.write_text("kept\n")
    (dst / "images" / "A__1.0__412___0.png").unlink()
    second = split_dataset(src, dst, options, progress=False)
    assert (second.written, second.existing) == (1, 7)
    assert marker.read_text() == "kept\n"


def test_unlabelled_jpg_and_skip_empty(tmp_path: Path):
    src = tmp_path / "src"
    _scene(src, "B", (700, 500), None, suffix=".jpg")
    _scene(src, "C", (700, 500), DotaLabels(np.array([_rect(10, 10, 50, 30)]), ["ship"], [0]), suffix=".tif")
    counts = split_dataset(src, tmp_path / "all", SplitOptions(tile_size=400, gap=100), progress=False)
    tiles = _tiles(tmp_path / "all")
    assert counts.written == 8 and sum(len(t) for t in tiles.values()) == 1 and len(tiles["C__1.0__0___0"]) == 1
    skip = SplitOptions(tile_size=400, gap=100, skip_empty=True)
    counts = split_dataset(src, tmp_path / "some", skip, progress=False)  # by keyword: the 4th positional is workers
    assert (counts.written, counts.empty_skipped) == (1, 7)
    assert [p.name for p in (tmp_path / "some" / "images").iterdir()] == ["C__1.0__0___0.png"]


def test_padding_of_images_smaller_than_a_tile(tmp_path: Path):
    _scene(tmp_path / "src", "D", (700, 500), None)
    for pad, shape in ((True, (1024, 1024, 3)), (False, (500, 700, 3))):
        split_dataset(tmp_path / "src", tmp_path / str(pad), SplitOptions(pad=pad), progress=False)
        assert cv2.imread(str(tmp_path / str(pad) / "images" / "D__1.0__0___0.png")).shape == shape


def test_errors_and_tool_exit_codes(tmp_path: Path, capsys):
    tool = _load_tool()
    assert tool.main(["--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "out")]) == 1
    assert "no such source folder" in capsys.readouterr().err
    bad = tmp_path / "bad" / "images" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        split_dataset(tmp_path / "bad", tmp_path / "out", SplitOptions(), progress=False)
    assert tool.main(["--src", str(tmp_path / "bad"), "--dst", str(tmp_path / "out"), "--quiet"]) == 1
    assert "broken.png" in capsys.readouterr().err
    ms = tool.build_options(tool.parse_args(["--src", "s", "--dst", "d", "--preset", "ms"]))
    assert (ms.rates, ms.gap, ms.tile_size, ms.pad) == ((0.5, 1.0, 1.5), 500, 1024, True)
    own = tool.build_options(tool.parse_args(["--src", "s", "--dst", "d", "--preset", "ms", "--gap", "300"]))
    assert (own.rates, own.gap) == ((0.5, 1.0, 1.5), 300)
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--help"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"thresh": 1.5}, r"thresh must be in \[0, 1\], got 1.5"),
        ({"thresh": float("nan")}, r"thresh must be in \[0, 1\], got nan"),
        ({"tile_size": 0}, "tile_size must be >= 1, got 0"),
        ({"gap": 1024}, r"gap must be in \[0, tile_size\), got 1024"),
        ({"rates": (1.0, -0.5)}, "rates must be finite numbers > 0, got -0.5"),
    ],
)
def test_split_options_refuse_bad_values(options, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        SplitOptions(**options)


def test_split_dataset_refuses_bad_workers_before_any_work(tmp_path: Path):
    _scene(tmp_path / "src", "H", (300, 200), None)
    with pytest.raises(ValueError, match="^workers must be >= 1, got 0$"):
        split_dataset(tmp_path / "src", tmp_path / "dst", SplitOptions(), workers=0, progress=False)
    assert not (tmp_path / "dst").exists()


def test_tool_with_workers(tmp_path: Path, capsys):
    src = tmp_path / "src"
    for name in ("E", "F", "G"):
        _scene(src, name, (600, 450), DotaLabels(np.array([_rect(300, 10, 420, 60)]), ["ship"], [0]))
    argv = ["--src", str(src), "--dst", str(tmp_path / "dst"), "--tile-size", "400", "--gap", "100"]
    assert _load_tool().main([*argv, "--workers", "2", "--quiet"]) == 0
    assert "12 tiles written" in capsys.readouterr().out
    cut = read_dota_labels(tmp_path / "dst" / "labelTxt" / "F__1.0__0___0.txt")
    np.testing.assert_array_equal(cut.polygons, [_rect(300, 10, 400, 60)])  # 83% inside: difficult kept
    np.testing.assert_array_equal(cut.difficult, [0])


@pytest.mark.parametrize(("tile_size", "gap", "rate"), [(1024, 200, 1.0), (1024, 200, 0.5), (512, 100, 1.5)])
def test_matches_the_devkit(dota_samples: Path, tmp_path: Path, tile_size: int, gap: int, rate: float):
    """Same tile names, the same label lines (numbers, classes, difficult flags in order) and the same pixels."""
    pytest.importorskip("dotadevkit")
    from dotadevkit.ops import DataSplitter

    devkit, ours = tmp_path / "devkit", tmp_path / "ours"
    DataSplitter(str(dota_samples), str(devkit), gap=gap, subsize=tile_size, num_process=1).splitdata(rate)
    split_dataset(dota_samples, ours, SplitOptions(tile_size=tile_size, gap=gap, rates=(rate,)), progress=False)
    names = sorted(p.name for p in (devkit / "labelTxt").iterdir())
    assert names == sorted(p.name for p in (ours / "labelTxt").iterdir())
    assert sorted(p.name for p in (devkit / "images").iterdir()) == sorted(p.name for p in (ours / "images").iterdir())
    lines = 0
    for name in names:
        theirs, mine = read_dota_labels(devkit / "labelTxt" / name), read_dota_labels(ours / "labelTxt" / name)
        np.testing.assert_array_equal(mine.polygons, theirs.polygons, err_msg=name)
        assert mine.classes == theirs.classes and mine.difficult.tolist() == theirs.difficult.tolist(), name
        lines += len(mine)
        image = Path(name).with_suffix(".png")
        a = cv2.imread(str(devkit / "images" / image), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(ours / "images" / image), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b, err_msg=str(image))
    assert lines > 500
