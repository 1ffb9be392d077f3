"""Splits DOTA scenes into overlapping tiles, tile for tile and line for line as the official DOTA devkit.

In: a dataset root with `images/` (PNG/JPG/TIF) and `labelTxt/`. Out: `images/{name}.png` and `labelTxt/{name}.txt`
per tile, named `{image}__{rate}__{left}___{up}`: the training input of the detector. Replicates the devkit's
`ImgSplit_multi_process.splitbase` (default options), including its quirks:

- label coordinates are truncated to integers when read (`int(float(x))`), then multiplied by the rate;
- each image is resized by the rate with `cv2.resize(fx=rate, fy=rate, INTER_CUBIC)` (not at all for rate 1);
- windows step by `tile_size - gap` (`rotated_ddetr.tiles.tile_windows`, shared with tiled inference); the last one
  in each direction is snapped to the image edge, and an image smaller than a tile gives one window at (0, 0); the
  clipping rectangle of a window reaches `left + tile_size`, but only `width - 1` (`height - 1`) at the image's right
  (bottom) edge;
- an object entirely inside the window keeps its polygon, shifted and truncated toward zero (`int(x - left)`);
- a cut object becomes its shapely intersection with the window, oriented counter-clockwise; a 5-gon is reduced to
  4 points by merging the shortest edge into its midpoint (`GetPoly4FromPoly5`), triangles and 6+-gons are dropped;
  the points are rotated to best fit the original order (`choose_best_pointorder_fit_another`), shifted and
  truncated, then clamped to [1, tile_size]; it keeps its difficult flag when more than 70% of its area lies inside
  the window, otherwise it is marked difficult 2;
- a label file is written for every tile, even an empty one (unless `skip_empty`), and tiles are zero-padded to
  `tile_size` (the devkit's default `padding=True`).

Deliberate differences: an unreadable image (corrupt, truncated: see `rotated_ddetr.images`) is an error naming the
file, or with `skip_bad_images` left out and counted (the devkit skips it silently, and decodes a truncated JPEG as
grey); an image
without a label file is split with no objects (the devkit crashes); a cut that the devkit cannot handle (a
self-intersecting label polygon that GEOS rejects, or a cut leaving several pieces) is computed on the repaired
polygon, resp. dropped, instead of crashing; tiles already on disk (image and label) are not written again.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry.polygon import orient
from tqdm import tqdm

from rotated_ddetr.data.dataset import image_files
from rotated_ddetr.data.dota import DotaLabels, read_dota_labels, write_dota_labels
from rotated_ddetr.fileio import atomic_write_bytes
from rotated_ddetr.images import ImageError, check_images, read_image
from rotated_ddetr.tiles import check_tiling, tile_name, tile_windows

# The presets users know from mmrotate's DOTA configs: single scale and multi scale.
PRESETS: dict[str, dict] = {
    "ss": {"rates": (1.0,), "gap": 200},
    "ms": {"rates": (0.5, 1.0, 1.5), "gap": 500},
}


def check_split_options(
    tile_size: int,
    gap: int,
    rates: Sequence[float],
    thresh: float,
    workers: int = 1,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuses split options before any work: the tiling (`tiles.check_tiling`), thresh in [0, 1], workers >= 1.

    Args:
        tile_size, gap, rates, thresh: as `SplitOptions`.
        workers: as `split_dataset`.
        names: how messages name each option, by parameter name; a tool passes its flags ({"gap": "--gap", ...}).

    Raises:
        ValueError: one line naming the first bad option and its value.
    """
    name = {"thresh": "thresh", "workers": "workers", **(names or {})}
    check_tiling(tile_size, gap, rates, names)
    if not 0 <= thresh <= 1:
        raise ValueError(f"{name['thresh']} must be in [0, 1], got {thresh}")
    if not workers >= 1:
        raise ValueError(f"{name['workers']} must be >= 1, got {workers}")


@dataclass(frozen=True)
class SplitOptions:
    """How to split. The defaults are the devkit's, except `gap` (the devkit's default is 512; ours is 200).

    Attributes:
        tile_size: side of the square tiles in pixels (the devkit's `subsize`).
        gap: overlap of neighbouring tiles in pixels; windows step by `tile_size - gap`.
        rates: scale factors applied to each image before splitting; each gives its own tiles.
        thresh: a cut object keeps its difficult flag when more than this fraction of its area is inside.
        pad: zero-pad edge tiles (and images smaller than a tile) to `tile_size` x `tile_size`.
        skip_empty: write neither image nor label file for a tile without objects.
        choose_best_point: rotate a cut polygon's points to best fit the original's (the devkit's default).

    Raises:
        ValueError: a value out of range (`check_split_options`).
    """

    tile_size: int = 1024
    gap: int = 200
    rates: tuple[float, ...] = field(default=(1.0,))
    thresh: float = 0.7
    pad: bool = True
    skip_empty: bool = False
    choose_best_point: bool = True

    def __post_init__(self) -> None:
        check_split_options(self.tile_size, self.gap, self.rates, self.thresh)


@dataclass
class SplitCounts:
    """What a split did: images read, tiles written, tiles found already on disk, empty tiles left out, and the
    images left out as unreadable (`skip_bad_images`)."""

    images: int = 0
    written: int = 0
    existing: int = 0
    empty_skipped: int = 0
    bad_images: list[str] = field(default_factory=list)

    def add(self, other: SplitCounts) -> None:
        """Accumulates `other` into this count."""
        self.images += other.images
        self.written += other.written
        self.existing += other.existing
        self.empty_skipped += other.empty_skipped
        self.bad_images += other.bad_images


def _line_length(p: tuple[float, float], q: tuple[float, float]) -> float:
    """The devkit's `cal_line_length` (same formula, so ties between edges break the same way)."""
    return math.sqrt(math.pow(p[0] - q[0], 2) + math.pow(p[1] - q[1], 2))


def poly5_to_poly4(poly: list[float]) -> list[float]:
    """The devkit's `GetPoly4FromPoly5`: merges the shortest edge of a 5-gon (10 numbers) into its midpoint.

    Edge i joins vertex i to vertex i + 1 (mod 5); the midpoint replaces vertex i, and vertex i + 1 is dropped.
    """
    points = [(poly[2 * i], poly[2 * i + 1]) for i in range(5)]
    distances = [_line_length(points[i], points[i + 1]) for i in range(4)] + [_line_length(points[0], points[4])]
    pos = int(np.array(distances).argsort()[0])
    out: list[float] = []
    for i in range(5):
        if i == pos:
            j = (i + 1) % 5
            out += [(points[i][0] + points[j][0]) / 2, (points[i][1] + points[j][1]) / 2]
        elif i != (pos + 1) % 5:
            out += list(points[i])
    return out


def best_point_order(poly: list[float] | np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The devkit's `choose_best_pointorder_fit_another`: the cyclic rotation of `poly`'s 4 points closest to
    `reference` (sum of squared coordinate differences; the first of equals wins). Both are 8 numbers."""
    points = np.asarray(poly, dtype=np.float64).reshape(4, 2)
    candidates = [np.roll(points, -k, axis=0).reshape(8) for k in range(4)]
    distances = np.array([np.sum((c - np.asarray(reference)) ** 2) for c in candidates])
    return candidates[int(distances.argsort()[0])]


def _intersect(gts: np.ndarray, window: shapely.Polygon) -> np.ndarray:
    """shapely intersections of label polygons with the window; a polygon GEOS rejects is repaired first."""
    try:
        return shapely.intersection(gts, window)
    except GEOSException:
        out = np.empty(len(gts), dtype=object)
        for i, gt in enumerate(gts):
            try:
                out[i] = shapely.intersection(gt, window)
            except GEOSException:
                out[i] = shapely.intersection(shapely.make_valid(gt), window)
        return out


def _cut_polygon(inter: shapely.Geometry, original: np.ndarray, options: SplitOptions) -> np.ndarray | None:
    """A cut object's polygon in scene coordinates as the devkit makes it, or None where the devkit drops it."""
    if not isinstance(inter, shapely.Polygon):
        return None  # several pieces (only from concave labels): the devkit would crash on `.exterior`
    coords = list(orient(inter, sign=1).exterior.coords)[:-1]
    if len(coords) < 4 or len(coords) > 5:
        return None
    poly = [v for point in coords for v in point]
    if len(coords) == 5:
        poly = poly5_to_poly4(poly)
    return best_point_order(poly, original) if options.choose_best_point else np.asarray(poly, dtype=np.float64)


def clip_labels(labels: DotaLabels, left: int, up: int, right: int, down: int, options: SplitOptions) -> DotaLabels:
    """The labels of one window, in tile coordinates, as the devkit writes them.

    Args:
        labels: the scene's objects, already truncated and scaled by the rate, in scene pixels.
        left, up: the window's top-left corner; right, down: its clipping edges (`min(left + tile_size, W - 1)`).
        options: thresh, tile_size and choose_best_point are used.

    Returns:
        The window's objects in file order, coordinates relative to (left, up).
    """
    polys = labels.polygons
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    gts = shapely.polygons(polys.reshape(-1, 4, 2))
    # Objects whose extent does not overlap the window's have no area inside it: the devkit skips them too.
    overlaps = (xs.max(1) > left) & (xs.min(1) < right) & (ys.max(1) > up) & (ys.min(1) < down)
    candidates = np.flatnonzero((shapely.area(gts) > 0) & overlaps)
    window = shapely.polygons([[left, up], [right, up], [right, down], [left, down]])
    inters = _intersect(gts[candidates], window)
    ratios = shapely.area(inters) / shapely.area(gts[candidates])
    offset = np.tile([left, up], 4).astype(np.float64)
    out_polys, out_classes, out_difficult = [], [], []
    for i, inter, ratio in zip(candidates.tolist(), inters, ratios.tolist(), strict=True):
        difficult = int(labels.difficult[i])
        if ratio == 1:
            poly = np.trunc(polys[i] - offset)
        elif ratio > 0:
            cut = _cut_polygon(inter, polys[i], options)
            if cut is None:
                continue
            poly = np.clip(np.trunc(cut - offset), 1, options.tile_size)
            difficult = difficult if ratio > options.thresh else 2
        else:
            continue
        out_polys.append(poly)
        out_classes.append(labels.classes[i])
        out_difficult.append(difficult)
    return DotaLabels(np.array(out_polys).reshape(-1, 8), out_classes, np.array(out_difficult, dtype=np.int64))


def read_scene_labels(label_path: str | os.PathLike) -> DotaLabels:
    """A scene's labels as the devkit parses them (coordinates truncated toward zero); none when the file is absent."""
    if not Path(label_path).is_file():
        return DotaLabels(np.zeros((0, 8)), [], np.zeros(0, dtype=np.int64))
    labels = read_dota_labels(label_path, lenient=True)
    return DotaLabels(np.trunc(labels.polygons), labels.classes, labels.difficult)


def _write_tile(
    image: np.ndarray, left: int, up: int, dst: Path, name: str, labels: DotaLabels, options: SplitOptions
) -> None:
    """Writes the tile `name`: `dst/labelTxt/{name}.txt` and `dst/images/{name}.png` (padded when `options.pad`)."""
    size = options.tile_size
    tile = image[up : up + size, left : left + size]
    if options.pad and tile.shape[:2] != (size, size):
        padded = np.zeros((size, size, 3), dtype=image.dtype)
        padded[: tile.shape[0], : tile.shape[1]] = tile
        tile = padded
    ok, encoded = cv2.imencode(".png", tile)
    if not ok:
        raise RuntimeError(f"could not encode tile {name}")
    write_dota_labels(dst / "labelTxt" / f"{name}.txt", labels, header=False)
    atomic_write_bytes(dst / "images" / f"{name}.png", encoded.tobytes())


def split_image(
    image_path: str | os.PathLike, label_path: str | os.PathLike, dst: str | os.PathLike, options: SplitOptions
) -> SplitCounts:
    """Splits one scene at every rate of `options` into `dst/images` and `dst/labelTxt`.

    Args:
        image_path: the scene image (any format cv2 reads).
        label_path: its DOTA label file; a missing file means no objects.
        dst: the output dataset root.
        options: how to split.

    Returns:
        Counts of tiles written, found already present (both files) and left out as empty.
    """
    image = read_image(image_path, "bgr")  # BGR, as the devkit's cv2.imread
    scene = read_scene_labels(label_path)
    name = Path(image_path).stem
    counts = SplitCounts(images=1)
    dst = Path(dst)
    for rate in options.rates:
        scaled = image if rate == 1 else cv2.resize(image, None, fx=rate, fy=rate, interpolation=cv2.INTER_CUBIC)
        labels = DotaLabels(scene.polygons * rate, scene.classes, scene.difficult)
        height, width = scaled.shape[:2]
        for left, up in tile_windows((height, width), options.tile_size, options.gap):
            tile = tile_name(name, rate, left, up)
            if (dst / "images" / f"{tile}.png").is_file() and (dst / "labelTxt" / f"{tile}.txt").is_file():
                counts.existing += 1
                continue
            right, down = min(left + options.tile_size, width - 1), min(up + options.tile_size, height - 1)
            tile_labels = clip_labels(labels, left, up, right, down, options)
            if options.skip_empty and len(tile_labels) == 0:
                counts.empty_skipped += 1
                continue
            _write_tile(scaled, left, up, dst, tile, tile_labels, options)
            counts.written += 1
    return counts


def _split_one(image_path: Path, src: Path, dst: Path, options: SplitOptions, skip_bad: bool) -> SplitCounts:
    """Pool worker: one scene with its label file from `src/labelTxt`; with `skip_bad`, an image that does not decode
    is counted instead of raised."""
    try:
        return split_image(image_path, src / "labelTxt" / f"{image_path.stem}.txt", dst, options)
    except ImageError:
        if not skip_bad:
            raise
        return SplitCounts(bad_images=[str(image_path)])


def split_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    options: SplitOptions,
    workers: int = 1,
    progress: bool = True,
    skip_bad_images: bool = False,
) -> SplitCounts:
    """Splits every image of the dataset root `src` into `dst` (images/ and labelTxt/), one process per image.

    Args:
        src: dataset root holding `images/` and (optionally) `labelTxt/`.
        dst: output root; created when missing. Tiles already there (image and label) are kept as they are.
        options: how to split.
        workers: processes (1 splits in this process); >= 1.
        progress: show a tqdm progress bar over images.
        skip_bad_images: leave out (and count in `bad_images`) the images that `images.check_images` refuses before
            the split starts, and those that then fail to decode, instead of stopping at the first.

    Returns:
        The summed counts.

    Raises:
        ValueError: workers < 1 (before anything is read or created) or a bad layout.
        ImageError: a bad image (unless `skip_bad_images`); every image is probed before any tile is written.
    """
    check_split_options(options.tile_size, options.gap, options.rates, options.thresh, workers)
    src, dst = Path(src), Path(dst)
    paths, bad, _ = check_images(image_files(src), skip_bad_images)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labelTxt").mkdir(parents=True, exist_ok=True)
    job = partial(_split_one, src=src, dst=dst, options=options, skip_bad=skip_bad_images)
    total = SplitCounts(bad_images=[str(path) for path in bad])
    with contextlib.ExitStack() as stack:
        results = map(job, paths)
        if workers > 1:
            results = stack.enter_context(multiprocessing.Pool(workers)).imap_unordered(job, paths)
        for counts in tqdm(results, total=len(paths), desc="split", unit="image", disable=not progress):
            total.add(counts)
    return total
