"""Writers of tiled-inference results: a scene's merged `Detections` -> files, the last stage before evaluation.

Per scene: a DOTA-style result file (`scenes/{name}.txt`, format in `rotated_ddetr.data.dota`; it also marks the
scene done), GIS files (`gis.py`: RFC 7946 GeoJSON in WGS84, GeoJSON in the raster's CRS, a GeoPackage) and a picture
with the boxes in class colours; over all scenes: DOTA Task1 submission files (`Task1_{class}.txt`, through
`rotated_ddetr.data.dota.write_task1`). Every file is written atomically (`rotated_ddetr.fileio`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.data.dota import SceneResult, Task1Detections, read_scene_result, write_scene_result, write_task1
from rotated_ddetr.fileio import atomic_write_bytes
from rotated_ddetr.inference.gis import GPKG_MISSING, check_gpkg_support, write_geojson, write_geojson_crs, write_gpkg
from rotated_ddetr.inference.postprocess import Detections
from rotated_ddetr.inference.scenes import SceneReader

# Per-scene outputs besides the result file: format -> (folder under the output folder, file suffix).
OUTPUTS = {"geojson": ("geojson", ".geojson"), "geojson-crs": ("geojson-crs", ".geojson"), "gpkg": ("gpkg", ".gpkg"),
           "png": ("pictures", ".png")}  # fmt: skip
FORMATS = ("dota", *OUTPUTS)
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


def scene_output_path(out: str | os.PathLike, fmt: str, name: str) -> Path:
    """The file of output format `fmt` (a key of `OUTPUTS`) for scene `name`: `out/{folder}/{name}{suffix}`."""
    folder, suffix = OUTPUTS[fmt]
    return Path(out) / folder / f"{name}{suffix}"


def check_formats(formats: Sequence[str]) -> None:
    """Refuses output formats before any work: an unknown one, or "gpkg" without pyogrio installed.

    Raises:
        ValueError: one line naming the problem (and, for gpkg, what to install).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown output formats {sorted(unknown)}; expected some of {FORMATS}")
    if "gpkg" in formats:
        try:
            check_gpkg_support()
        except ImportError:
            raise ValueError(GPKG_MISSING) from None


def write_task1_results(folder: str | os.PathLike, results: Mapping[str, SceneResult], classes: Sequence[str]) -> None:
    """Writes `Task1_{class}.txt` for every class of `classes` (empty files included) over all scenes.

    Lines `image score x1 y1 ... x4 y4`, scenes in the given order, each by decreasing score: ready for the DOTA
    evaluation server and `rotated-ddetr evaluate`.
    """
    per_class: dict[str, Task1Detections] = {}
    for name in classes:
        rows = [(image, r, np.array([c == name for c in r.classes], bool)) for image, r in results.items()]
        images = [image for image, _, mask in rows for _ in range(int(mask.sum()))]
        scores = np.concatenate([r.scores[mask] for _, r, mask in rows]) if rows else np.zeros(0)
        polygons = np.concatenate([r.polygons[mask] for _, r, mask in rows]) if rows else np.zeros((0, 8))
        per_class[name] = Task1Detections(images, scores, polygons)
    write_task1(folder, per_class)


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
    """Writes a scene's files under `out` as `formats` asks (`check_formats`; paths from `scene_output_path`):
    `geojson/{name}.geojson` (RFC 7946: WGS84 lon/lat), `geojson-crs/{name}.geojson` (the raster's CRS),
    `gpkg/{name}.gpkg` (a GeoPackage layer in the raster's CRS), `pictures/{name}.png`; then `scenes/{name}.txt`
    (always, last: it marks the scene done). Scenes without a CRS get pixel coordinates (see `gis.py`)."""
    check_formats(formats)
    name, georeferencing = reader.name, (reader.crs, reader.transform)
    if "geojson" in formats:
        write_geojson(scene_output_path(out, "geojson", name), result, name, *georeferencing)
    if "geojson-crs" in formats:
        write_geojson_crs(scene_output_path(out, "geojson-crs", name), result, name, *georeferencing)
    if "gpkg" in formats:
        write_gpkg(scene_output_path(out, "gpkg", name), result, name, *georeferencing)
    if "png" in formats:
        write_picture(scene_output_path(out, "png", name), reader, result, classes)
    write_scene_result(scene_result_path(out, name), result)


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
