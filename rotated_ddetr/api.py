"""The Python API: `load` a trained detector, `predict` images -> `Results` (boxes, polygons, class names, a
picture, GeoJSON, DOTA result lines).

    import rotated_ddetr
    detector = rotated_ddetr.load("work_dirs/synthetic_tiny/checkpoint_last.pth")
    results = detector.predict("scene.tif", tile_size=1024)
    r = results[0]; r.rboxes, r.scores, r.labels, r.names, r.polygons, r.plot(), r.to_geojson(), r.save_txt(path)

`Predictor` (whole images) and `tiled_predict` (scenes of any size) do the work; this module only chooses between
them and wraps what they return.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rotated_ddetr.boxes import rboxes_to_polygons
from rotated_ddetr.checkpoint import load_model
from rotated_ddetr.config import Config
from rotated_ddetr.data.dota import SceneResult, write_scene_result
from rotated_ddetr.export import RawDetector, export_model
from rotated_ddetr.inference import Detections, Predictor, open_scene, tiled_predict
from rotated_ddetr.inference.gis import geojson_collection
from rotated_ddetr.inference.writers import draw_detections, to_scene_result

ImageInput = str | os.PathLike | np.ndarray


@dataclass
class Results:
    """One image's detections, in its pixels.

    Attributes:
        rboxes: (N, 5) float32 canonical rboxes (cx, cy, w, h, angle in radians), pixels.
        scores: (N,) float32, decreasing.
        labels: (N,) int64 class indices into `names`.
        names: the detector's class names in label order.
        source: the image as given (path or (H, W, 3) uint8 RGB array), read again by `plot`.
        name: the image's name (its file stem; "image" for arrays), used by `to_geojson`.
        crs, transform: the georeferencing of a raster source, else None (`to_geojson` then writes pixels).
    """

    rboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: ImageInput
    name: str
    crs: object = None
    transform: object = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def polygons(self) -> np.ndarray:
        """(N, 4, 2) float32 corners (x, y) in pixels, in the box convention's order (DESIGN.md)."""
        return rboxes_to_polygons(self.rboxes).reshape(-1, 4, 2)

    def scene_result(self) -> SceneResult:
        """The detections as the result files hold them (polygons rounded to 0.01 px, class names)."""
        detections = Detections(*(torch.from_numpy(a) for a in (self.rboxes, self.scores, self.labels)))
        return to_scene_result(detections, self.names)

    def plot(self, max_side: int = 4096) -> np.ndarray:
        """The image (downscaled to a longer side of at most `max_side`) with the boxes in class colours and a
        legend: (h, w, 3) uint8 RGB."""
        with open_scene(self.source) as reader:
            image = np.ascontiguousarray(reader.overview(max_side))
            scale = image.shape[1] / reader.image_size[1]
        return draw_detections(image, self.scene_result(), self.names, scale)

    def to_geojson(self) -> dict:
        """A GeoJSON FeatureCollection of the boxes: RFC 7946 longitude/latitude for a georeferenced raster, pixel
        coordinates otherwise (`inference.gis.geojson_collection`)."""
        return geojson_collection(self.scene_result(), self.name, self.crs, self.transform)

    def save_txt(self, path: str | os.PathLike) -> None:
        """Writes the DOTA result lines (`x1 y1 ... x4 y4 class score`, `data.dota.write_scene_result`) atomically."""
        write_scene_result(path, self.scene_result())


class RotatedDETR:
    """A trained detector behind one call: `predict` images, `forward_raw` tensors, `export` files.

    Made by `load`. Args as `load`'s; `predictor` is the engine (`inference.Predictor`), `cfg` its config.
    """

    def __init__(self, predictor: Predictor, cfg: Config) -> None:
        self.predictor, self.cfg = predictor, cfg

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in label order."""
        return self.predictor.classes

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        score_thr: float = 0.05,
        tile_size: int | None = None,
        gap: int = 200,
        **tiled_options,
    ) -> list[Results]:
        """Detects objects in each image.

        Args:
            images: one image or a list: paths (PNG/JPG/BMP/TIFF, GeoTIFF and other rasters, URLs; see
                `inference.open_scene`) or (H, W, 3) uint8 RGB arrays.
            score_thr: detections scoring below this are dropped, in [0, 1].
            tile_size: None: each image goes through the model whole (resized by the model's input scale);
                a side in pixels: the image is tiled with `gap` overlap and the tiles' detections merged with
                rotated NMS (`tiled_predict`), for images larger than the model or the memory.
            gap: tile overlap in pixels (with `tile_size`).
            tiled_options: further `tiled_predict` options with `tile_size` (nms_iou, rates, batch_size,
                max_detections, progress).

        Returns:
            One `Results` per image, in order.

        Raises:
            SceneError: an image cannot be read (the message names it).
            ValueError: an option out of range.
        """
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        results = []
        for image in [images] if single else list(images):
            with open_scene(image) as reader:
                if tile_size is None:
                    if not 0 <= score_thr <= 1:
                        raise ValueError(f"score_thr must be in [0, 1], got {score_thr}")
                    pixels = reader.read((0, 0, reader.image_size[1], reader.image_size[0]))
                    detections = self.predictor.predict_tiles([pixels])[0]
                    keep = detections.scores >= score_thr
                    detections = Detections(detections.rboxes[keep], detections.scores[keep], detections.labels[keep])
                else:
                    detections = tiled_predict(reader, self.predictor.predict_tiles, tile_size=tile_size, gap=gap,
                                               score_threshold=score_thr, **tiled_options)  # fmt: skip
                name = reader.name if not isinstance(image, np.ndarray) else "image"
                arrays = (t.detach().cpu().numpy() for t in (detections.rboxes, detections.scores, detections.labels))
                results.append(Results(*arrays, self.names, image, name, reader.crs, reader.transform))
        return results

    @torch.no_grad()
    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's last decoder layer on unpadded images: what the exported graphs compute.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1], already at the model's input scale.

        Returns:
            logits (B, Q, C) and normalised rboxes (B, Q, 5), float32, on the detector's device
            (`inference.postprocess_raw` makes detections of them).
        """
        p = self.predictor
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.amp_dtype is not None):
            logits, rboxes = RawDetector(p.model)(images.to(p.device))
        return logits.float(), rboxes.float()

    def export(self, fmt: str, out: str | os.PathLike, **options) -> os.PathLike:
        """Writes the model as `fmt` ("onnx", "pt2", "safetensors") to `out`: `export.export_model` (options:
        image_size, opset; ExportError for what cannot be exported)."""
        return export_model(self.predictor.model, self.cfg, self.names, fmt, out, **options)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", amp: str | None = None) -> RotatedDETR:
    """A trained detector from a training checkpoint (`.pth`) or release weights (`.safetensors` with its `.json`).

    Args:
        path: the file.
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        amp: autocast of the forward pass: None (float32), "bf16", "fp16", or "auto" (bf16 where the device
            computes it natively).

    Raises:
        FileNotFoundError, CheckpointError: the file is missing or not a rotated_ddetr file.
        ValueError: an unknown `amp`.
    """
    model, cfg, classes = load_model(path, device)
    predictor = Predictor.from_config(model, cfg, classes=classes, amp="none" if amp is None else amp,
                                      score_threshold=0.0)  # fmt: skip
    return RotatedDETR(predictor, cfg)
