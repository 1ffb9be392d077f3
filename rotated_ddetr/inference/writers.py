"""Writers of tiled-inference results: a scene's merged `Detections` -> files, the last stage before evaluation.

Per scene: a DOTA-style result file (`scenes/{name}.txt`, format in `rotated_ddetr.data.dota`; it also marks the
scene done), a GeoJSON FeatureCollection (pixel or CRS coordinates) and a picture with the boxes in class colours;
over all scenes: DOTA Task1 submission files (`Task1_{class}.txt`, through `rotated_ddetr.data.dota.write_task1`).
Every file is written atomically (`rotated_ddetr.fileio`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.data.dota import SceneResult, Task1Detections, read_scene_result, write_scene_result, write_task1
from rotated_ddetr.fileio import atomic_write_bytes, atomic_write_text
from rotated_ddetr.inference.postprocess import Detections
from rotated_ddetr.inference.scenes import SceneReader

FORMATS = ("dota", "geojson", "png")
# Distinct colours (RGB) for class indices, cycled: the tab20 palette's strong half, then its light half.
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
            (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141),
            (158, 218, 229), (199, 199, 199))  # fmt: skip


def to_scene_result(detections: Detections, class_names: Sequence[str]) -> SceneResult:
    """A scene's `Detections` as written to files: polygons from the rboxes, rounded to 0.01 px; scores rounded to
    1e-6 (float32 detections carry no more; the files stay short); names from the labels (indices into
    `class_names`)."""
    polygons = rboxes_to_polygons(detections.rboxes.detach().cpu().double().numpy()).reshape(-1, 8)
    labels = detections.labels.detach().cpu().tolist()
    if labels and not 0 <= min(labels) <= max(labels) < len(class_names):
        raise ValueError(f"labels {min(labels)}..{max(labels)} do not index {len(class_names)} class names")
    scores = np.round(detections.scores.detach().cpu().double().numpy(), 6)
    return SceneResult(np.round(polygons, 2), [class_names[i] for i in labels], scores)


def scene_result_path(out: str | os.PathLike, name: str) -> Path:
    """`out/scenes/{name}.txt`: the scene's result file, written last, so its presence means the scene is done."""
    return Path(out) / "scenes" / f"{name}.txt"


def write_task1_results(folder: str | os.PathLike, results: Mapping[str, SceneResult], classes: Sequence[str]) -> None:
    """Writes `Task1_{class}.txt` for every class of `classes` (empty files included) over all scenes.

    Lines `image score x1 y1 ... x4 y4`, scenes in the given order, each by decreasing score: ready for the DOTA
    evaluation server and `tools/evaluate.py`.
    """
    per_class: dict[str, Task1Detections] = {}
    for name in classes:
        rows = [(image, r, np.array([c == name for c in r.classes], bool)) for image, r in results.items()]
        images = [image for image, _, mask in rows for _ in range(int(mask.sum()))]
        scores = np.concatenate([r.scores[mask] for _, r, mask in rows]) if rows else np.zeros(0)
        polygons = np.concatenate([r.polygons[mask] for _, r, mask in rows]) if rows else np.zeros((0, 8))
        per_class[name] = Task1Detections(images, scores, polygons)
    write_task1(folder, per_class)


def _ring(points: np.ndarray) -> list[list[float]]:
    """A closed, counter-clockwise GeoJSON ring (RFC 7946) from (4, 2) points."""
    x, y = points[:, 0], points[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # shoelace: negative = clockwise
        points = points[::-1]
    return [[float(px), float(py)] for px, py in (*points, points[0])]


def geojson_collection(result: SceneResult, name: str, crs=None, transform=None) -> dict:
    """A GeoJSON FeatureCollection of a scene's boxes, one Polygon feature each.

    Args:
        result: the scene's detections.
        name: the scene's name (a top-level "name" member).
        crs: a `rasterio.crs.CRS`; with it, geometries are in its coordinates through `transform` and the CRS is
            recorded ("crs" member, as GDAL writes it); without it, geometries are in pixel coordinates.
        transform: the raster's `affine.Affine` pixel -> CRS transform (pixel (0, 0) = top-left pixel corner).
            CRS coordinates are rounded to about 0.01 pixel (the precision of the pixel polygons).

    Returns:
        The collection; properties per feature: "class", "score" and, when georeferenced, "pixel_polygon".
    """
    geographic = crs is not None and transform is not None
    if geographic:  # CRS coordinates to about 0.01 pixel, as the pixel polygons
        pixel = max(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
        decimals = max(0, math.ceil(-math.log10(pixel / 100))) if pixel > 0 else 9
    features = []
    for polygon, cls, score in zip(result.polygons, result.classes, result.scores.tolist(), strict=True):
        pixels = polygon.reshape(4, 2)
        properties: dict = {"class": cls, "score": score}
        points = pixels
        if geographic:
            a, b, c, d, e, f = transform[:6]
            points = np.stack((a * pixels[:, 0] + b * pixels[:, 1] + c, d * pixels[:, 0] + e * pixels[:, 1] + f), 1)
            points = np.round(points, decimals)
            properties["pixel_polygon"] = _ring(pixels)
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_ring(points)]},
                         "properties": properties})  # fmt: skip
    collection: dict = {"type": "FeatureCollection", "name": name, "coordinates": "crs" if geographic else "pixel"}
    if geographic:
        epsg = crs.to_epsg()
        crs_name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": crs_name}}
    collection["features"] = features
    return collection


def write_geojson(path: str | os.PathLike, result: SceneResult, name: str, crs=None, transform=None) -> None:
    """Writes `geojson_collection(result, name, crs, transform)` to `path` as compact JSON."""
    atomic_write_text(path, json.dumps(geojson_collection(result, name, crs, transform)) + "\n")


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB drawing colour of class `index`."""
    return _PALETTE[index % len(_PALETTE)]


def draw_detections(image: np.ndarray, result: SceneResult, classes: Sequence[str], scale: float) -> np.ndarray:
    """Draws the boxes (scene pixels times `scale`) in class colours and a legend (class, count) on an RGB image."""
    thickness = max(1, round(max(image.shape[:2]) / 1500))
    index = {name: i for i, name in enumerate(classes)}
    for name in dict.fromkeys(result.classes):
        mask = np.array([c == name for c in result.classes])
        points = np.round(result.polygons[mask].reshape(-1, 4, 2) * scale).astype(np.int32)
        cv2.polylines(image, list(points), True, class_colour(index.get(name, len(classes))), thickness, cv2.LINE_AA)
    font_scale = max(0.4, max(image.shape[:2]) / 2500)
    line = round(28 * font_scale)
    shown = [name for name in classes if name in result.classes] or ["(no detections)"]
    width = max(cv2.getTextSize(f"{n} 00000", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] for n in shown)
    cv2.rectangle(image, (0, 0), (width + 2 * line, line * len(shown) + line // 2), (255, 255, 255), cv2.FILLED)
    for row, name in enumerate(shown):
        y = line * (row + 1)
        if name in index:
            cv2.rectangle(image, (line // 4, y - line * 3 // 4), (line, y), class_colour(index[name]), cv2.FILLED)
        label = f"{name} {result.classes.count(name)}" if name in index else name
        cv2.putText(image, label, (line + line // 4, y - line // 8), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), max(1, thickness // 2), cv2.LINE_AA)  # fmt: skip
    return image


def write_picture(
    path: str | os.PathLike, reader: SceneReader, result: SceneResult, classes: Sequence[str], max_side: int = 4096
) -> None:
    """Writes the scene (downscaled to a longer side of at most `max_side`, read as an overview: bounded memory)
    with its boxes and a legend, as PNG or JPEG by the suffix of `path`."""
    image = np.ascontiguousarray(reader.overview(max_side))
    scale = image.shape[1] / reader.image_size[1]
    image = draw_detections(image, result, classes, scale)
    ok, encoded = cv2.imencode(Path(path).suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: cannot encode a picture of this type")
    atomic_write_bytes(path, encoded.tobytes())


def write_scene_outputs(
    out: str | os.PathLike, reader: SceneReader, result: SceneResult, classes: Sequence[str], formats: Sequence[str]
) -> None:
    """Writes a scene's files under `out`: `geojson/{name}.geojson`, `pictures/{name}.png` as `formats` asks, then
    `scenes/{name}.txt` (always, last: it marks the scene done)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown output formats {sorted(unknown)}; expected some of {FORMATS}")
    out = Path(out)
    if "geojson" in formats:
        write_geojson(out / "geojson" / f"{reader.name}.geojson", result, reader.name, reader.crs, reader.transform)
    if "png" in formats:
        write_picture(out / "pictures" / f"{reader.name}.png", reader, result, classes)
    write_scene_result(scene_result_path(out, reader.name), result)


def assemble_task1(out: str | os.PathLike, names: Sequence[str], classes: Sequence[str]) -> list[str]:
    """Writes `out/Task1_{class}.txt` from the per-scene result files of `names` (in that order).

    Returns:
        The names without a result file (not done, or failed); they are left out of the Task1 files.
    """
    results, missing = {}, []
    for name in names:
        path = scene_result_path(out, name)
        if path.is_file():
            results[name] = read_scene_result(path)
        else:
            missing.append(name)
    write_task1_results(out, results, classes)
    return missing
