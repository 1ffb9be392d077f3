"""A procedural synthetic aerial dataset in DOTA layout: the project's embedded default data (no downloads).

(seed, image index, size, options) in; a BGR image and its DotaLabels out, or files `images/*.png` +
`labelTxt/*.txt` that the split, training and evaluation tools read like DOTA. Six DOTA classes (plane, ship,
small-vehicle, large-vehicle, storage-tank, tennis-court) on textured ground with crop fields, water, roads,
buildings, trees and shadows. Each image is seeded by (seed, index) alone, so the output does not depend on the
number of workers; large scenes are rendered in stripes (and written as PNG or as a tiled GeoTIFF).

Label conventions: each object is its oriented bounding rectangle (4 corners, clockwise on screen from the
object's rear left). A storage tank is an axis-aligned square. An object cut by the image border is labelled by the
rectangle of its visible part in the object's own orientation (near a corner it can poke a little outside the
image) and is difficult 2 when less than `cut_keep` of it is visible, like the splitter's cut objects. Difficult 1
marks very small objects (short side below `difficult_below`) and objects 35-85% hidden by trees (more hidden ones
are not labelled).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import shapely
import torch
from tqdm import tqdm

from rotated_ddetr import boxes
from rotated_ddetr.data import synthetic_terrain as terrain
from rotated_ddetr.data.dota import DotaLabels, write_dota_labels
from rotated_ddetr.data.synthetic_layout import ScenePlan, SyntheticOptions, plan_scene
from rotated_ddetr.data.synthetic_objects import SYNTHETIC_CLASSES
from rotated_ddetr.data.synthetic_paint import Canvas
from rotated_ddetr.fileio import atomic_write_bytes
from rotated_ddetr.structures import Target

__all__ = [
    "SYNTHETIC_CLASSES",
    "ScenePlan",
    "SyntheticOptions",
    "generate_image",
    "image_name",
    "plan_scene",
    "render",
    "render_stripes",
    "scene_labels",
    "training_samples",
    "write_dataset",
    "write_scene",
]

_MARGIN = 3  # extra pixels rendered around a window so that the blur joins stripes seamlessly
_NOMINAL_GSD = 0.3  # metres per pixel at scale 1 (written as the label files' gsd header)


def render(plan: ScenePlan, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Paints the window (x0, y0, width, height) of a planned scene.

    Returns:
        (height, width, 3) uint8 BGR pixels.
    """
    ox, oy, w, h = x0 - _MARGIN, y0 - _MARGIN, width + 2 * _MARGIN, height + 2 * _MARGIN
    image = terrain.render_ground(plan.ground, ox, oy, w, h)
    terrain.render_fields(image, plan.fields, ox, oy)
    image = np.clip(image, 0, 255).astype(np.uint8)
    canvas = Canvas(image, ox, oy)
    for thing in plan.things:
        if thing.layer == 0:
            canvas.draw(thing)
    terrain.render_water(image, plan.water, plan.ripple(ox, oy, w, h)[0], ox, oy)
    mask = Canvas(np.zeros((h, w), np.uint8), ox, oy)
    for thing in plan.things:
        if thing.layer == 1:
            canvas.draw(thing)
        elif thing.layer >= 2:
            mask.shadow(thing, (plan.sun[0] * thing.height, plan.sun[1] * thing.height))
    shadow = 1 - plan.shadow_strength / 255 * mask.image.astype(np.float32)
    image = (image * shadow[..., None]).astype(np.uint8)
    canvas = Canvas(image, ox, oy)
    for thing in plan.things:
        if thing.layer >= 2:
            canvas.draw(thing)
    image = cv2.GaussianBlur(image, (0, 0), 0.55)[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN]
    grain = np.random.default_rng([*plan.seeds, x0, y0]).standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + 2.0 * grain, 0, 255).astype(np.uint8)


def render_stripes(plan: ScenePlan, stripe: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (first row, pixels) of consecutive full-width stripes of `stripe` rows covering the scene."""
    for y0 in range(0, plan.height, stripe):
        yield y0, render(plan, 0, y0, plan.width, min(stripe, plan.height - y0))


def _assemble(plan: ScenePlan, stripe: int) -> np.ndarray:
    """The whole scene, (height, width, 3) uint8 BGR, rendered stripe by stripe."""
    image = np.empty((plan.height, plan.width, 3), np.uint8)
    for y0, pixels in render_stripes(plan, stripe):
        image[y0 : y0 + len(pixels)] = pixels
    return image


def _visible_part(rbox: np.ndarray, corners: np.ndarray, width: int, height: int):
    """(rbox of the part of a rectangle inside the image, in its own orientation; visible share) or (None, 0)."""
    visible = shapely.Polygon(corners).intersection(shapely.box(0, 0, width, height))
    share = visible.area / max(rbox[2] * rbox[3], 1e-9)
    if visible.is_empty or share <= 0:
        return None, 0.0
    cos, sin = math.cos(rbox[4]), math.sin(rbox[4])
    local = (np.asarray(visible.exterior.coords) - rbox[:2]) @ np.array([[cos, -sin], [sin, cos]])  # (K, 2) own frame
    low, high = local.min(0), local.max(0)
    if (high - low).min() < 2:
        return None, 0.0
    cx, cy = (low + high) / 2
    centre = rbox[:2] + [cx * cos - cy * sin, cx * sin + cy * cos]
    return np.array([*centre, *(high - low), rbox[4]]), share


def scene_labels(plan: ScenePlan, options: SyntheticOptions) -> DotaLabels:
    """The DOTA labels of a planned scene (see the module docstring for the conventions)."""
    rboxes, classes, difficult = [], [], []
    for thing in plan.things:
        if thing.name is None:
            continue
        rbox, flag = thing.rbox, thing.difficult
        corners = boxes.rboxes_to_corners(rbox)
        if corners.min() < 0 or corners[:, 0].max() > plan.width or corners[:, 1].max() > plan.height:
            rbox, share = _visible_part(rbox, corners, plan.width, plan.height)
            if rbox is None:
                continue
            flag = 2 if share < options.cut_keep else flag
        if flag == 0 and min(rbox[2], rbox[3]) < options.difficult_below:
            flag = 1
        rboxes.append(rbox)
        classes.append(thing.name)
        difficult.append(flag)
    polygons = np.round(boxes.rboxes_to_polygons(np.array(rboxes, dtype=np.float64).reshape(-1, 5)), 2)
    gsd = round(_NOMINAL_GSD / plan.scale, 4)
    return DotaLabels(polygons, classes, np.array(difficult, dtype=np.int64), image_source="synthetic", gsd=gsd)


def generate_image(
    seed: int, index: int, size: int | tuple[int, int] = 512, options: SyntheticOptions | None = None
) -> tuple[np.ndarray, DotaLabels]:
    """Image `index` of the synthetic dataset `seed`.

    Args:
        seed: dataset seed.
        index: image number; (seed, index) alone determines the result.
        size: side in pixels, or (height, width).
        options: what the scenes hold (defaults when None).

    Returns:
        (height, width, 3) uint8 BGR image and its labels (pixels).
    """
    options = options or SyntheticOptions()
    height, width = (size, size) if isinstance(size, int) else size
    plan = plan_scene(width, height, seed, index, options)
    return _assemble(plan, options.stripe), scene_labels(plan, options)


def training_samples(
    seed: int, count: int, size: int, classes: Sequence[str], options: SyntheticOptions | None = None
) -> list[tuple[torch.Tensor, Target]]:
    """Synthetic images 0..count-1 of dataset `seed` as in-memory training samples, without files or augmentation.

    For benchmarks and tests that need realistic tiles (e.g. 1024 px for the DOTA configs) without a dataset folder.

    Args:
        seed: dataset seed (as `generate_image`).
        count: number of samples.
        size: image side in pixels.
        classes: the model's class names; label index = position. Every generated class must be among them.
        options: what the scenes hold (defaults when None).

    Returns:
        `count` pairs of (3, size, size) float32 RGB in [0, 1] and its `Target` (normalised canonical rboxes, int64
        labels into `classes`, image_size (size, size)), as `DotaDataset` yields them.

    Raises:
        ValueError: a generated class is not in `classes`.
    """
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for i in range(count):
        image, labels = generate_image(seed, i, size, options)
        unknown = sorted(set(labels.classes) - set(index))
        if unknown:
            raise ValueError(f"synthetic class {unknown[0]!r} is not among the classes {tuple(classes)}")
        pixels = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1).float().div_(255.0)
        rboxes = torch.from_numpy(labels.rboxes()).float()
        target = Target(
            labels=torch.tensor([index[c] for c in labels.classes], dtype=torch.int64),
            rboxes=boxes.normalize_rboxes(rboxes, (size, size)).float(),
            image_size=(size, size),
        )
        samples.append((pixels, target))
    return samples


def image_name(index: int, prefix: str = "synth") -> str:
    """File stem of image `index`: "synth_00042" (no "__", so tile names stay unambiguous)."""
    return f"{prefix}_{index:05d}"


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())


def _make_one(index: int, out: Path, size: int, seed: int, options: SyntheticOptions) -> Counter:
    """Pool worker: writes image `index` and its label file; returns its object count per class."""
    image, labels = generate_image(seed, index, size, options)
    name = image_name(index)
    _write_png(out / "images" / f"{name}.png", image)
    write_dota_labels(out / "labelTxt" / f"{name}.txt", labels)
    return Counter(labels.classes)


def write_dataset(
    out: str | os.PathLike,
    images: int,
    *,
    size: int = 512,
    seed: int = 0,
    options: SyntheticOptions | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Counter:
    """Writes `out/images/synth_{i:05d}.png` and `out/labelTxt/synth_{i:05d}.txt` for i < `images`.

    Args:
        out: dataset root (created when missing); existing files of the same names are replaced atomically.
        images: number of images.
        size: image side in pixels.
        seed: dataset seed; image i is determined by (seed, i) alone, whatever `workers`.
        options: what the scenes hold.
        workers: processes.
        progress: show a tqdm progress bar.

    Returns:
        Objects written per class.
    """
    out, options = Path(out), options or SyntheticOptions()
    job = partial(_make_one, out=out, size=size, seed=seed, options=options)
    total: Counter = Counter()
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        results = pool.imap_unordered(job, range(images)) if pool else map(job, range(images))
        for counts in tqdm(results, total=images, desc="synthetic", unit="image", disable=not progress):
            total.update(counts)
    finally:
        if pool:
            pool.terminate()
    return total


def _write_geotiff(path: Path, plan: ScenePlan, stripe: int) -> None:
    """Writes the scene as a tiled, deflate-compressed RGB GeoTIFF (UTM 33N, square pixels of the nominal gsd)."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine
    from rasterio.windows import Window

    gsd = _NOMINAL_GSD / plan.scale
    profile = dict(driver="GTiff", width=plan.width, height=plan.height, count=3, dtype="uint8", tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", photometric="RGB", crs="EPSG:32633",
                   transform=Affine(gsd, 0.0, 500000.0, 0.0, -gsd, 4650000.0))  # fmt: skip
    with rasterio.Env(), MemoryFile() as memory:  # compressed in memory, then written atomically
        with memory.open(**profile) as dst:
            for y0, pixels in render_stripes(plan, stripe):
                dst.write(pixels[..., ::-1].transpose(2, 0, 1), window=Window(0, y0, plan.width, len(pixels)))
        atomic_write_bytes(path, memory.getbuffer())


def write_scene(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None,
    size: int | tuple[int, int],
    seed: int = 0,
    index: int = 0,
    options: SyntheticOptions | None = None,
) -> DotaLabels:
    """Renders one (large) scene in stripes of `options.stripe` rows and writes it with its labels.

    Args:
        image_path: `.png` (the pixels are assembled in memory, 3 bytes per pixel) or `.tif`/`.tiff` (a tiled
            GeoTIFF written stripe by stripe; only the compressed file is held in memory).
        label_path: where to write the DOTA label file, or None.
        size: side in pixels, or (height, width).
        seed, index: as for `generate_image` (the same (seed, index, size) gives the same scene).
        options: what the scene holds; densities are per 512 x 512 pixels.

    Returns:
        The scene's labels.
    """
    options = options or SyntheticOptions()
    image_path = Path(image_path)
    height, width = (size, size) if isinstance(size, int) else size
    plan = plan_scene(width, height, seed, index, options)
    if image_path.suffix.lower() in (".tif", ".tiff"):
        _write_geotiff(image_path, plan, options.stripe)
    elif image_path.suffix.lower() == ".png":
        _write_png(image_path, _assemble(plan, options.stripe))
    else:
        raise ValueError(f"{image_path}: scene images are written as .png or .tif")
    labels = scene_labels(plan, options)
    if label_path is not None:
        write_dota_labels(label_path, labels)
    return labels
