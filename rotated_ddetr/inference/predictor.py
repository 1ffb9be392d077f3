"""Tiled inference over a scene: scene -> tiles -> detector -> postprocess -> merge tiles -> one scene's `Detections`.

`tiled_predict` runs the stages in that order for any detector given as a `predict_tiles` callable (uint8 tiles in,
per-tile `Detections` out); tiles are read by a background thread while the detector works on the previous batch.
`Predictor` is that callable for a trained checkpoint; `predict_scenes` runs many scenes and writes their files.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rotated_ddetr.checkpoint import load_model
from rotated_ddetr.config import Config
from rotated_ddetr.data.batching import pad_images
from rotated_ddetr.data.transforms import resize_image
from rotated_ddetr.fileio import FileLock, check_writable_folder, remove_stale_temporaries, try_lock
from rotated_ddetr.inference.merge import check_merge_options, merge_detections, tile_to_scene, touches_inner_edge
from rotated_ddetr.inference.postprocess import Detections, check_postprocess_options, postprocess
from rotated_ddetr.inference.scenes import SceneError, SceneReader, open_scene
from rotated_ddetr.inference.sources import SceneSource, scene_name, scene_source
from rotated_ddetr.inference.tiling import prefetch_batches
from rotated_ddetr.inference.writers import (
    OUTPUTS,
    check_formats,
    scene_result_path,
    to_scene_result,
    write_scene_outputs,
)
from rotated_ddetr.structures import autocast_dtype
from rotated_ddetr.tiles import check_tiling, plan_tiles

PredictTiles = Callable[[list[np.ndarray]], Sequence[Detections]]


def check_tiled_options(
    *,
    tile_size: int,
    gap: int,
    rates: Sequence[float],
    batch_size: int,
    nms_iou: float,
    score_threshold: float,
    max_detections: int | None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuses `tiled_predict` options before any work, with each stage's own check: the tiling
    (`tiles.check_tiling`), batch_size >= 1, score_threshold in [0, 1] (`check_postprocess_options`), nms_iou in
    [0, 1] and max_detections >= 1 or None (`merge.check_merge_options`: nms_iou is the merge's IoU threshold).

    Args:
        tile_size, gap, rates, batch_size, nms_iou, score_threshold, max_detections: as `tiled_predict`.
        names: how messages name each option, by `tiled_predict`'s parameter names; a tool passes its flags
            ({"max_detections": "--max-dets", ...}). Default: the parameter names.

    Raises:
        ValueError: one line naming the first bad option and its value.
    """
    name = {key: key for key in ("batch_size", "nms_iou", "score_threshold", "max_detections")} | dict(names or {})
    check_tiling(tile_size, gap, rates, names)
    if not batch_size >= 1:
        raise ValueError(f"{name['batch_size']} must be >= 1, got {batch_size}")
    check_postprocess_options(score_threshold=score_threshold, names=names)
    merge_names = {"iou_threshold": name["nms_iou"], "max_detections": name["max_detections"]}
    check_merge_options(nms_iou, max_detections, merge_names)


def tiled_predict(
    image: np.ndarray | str | os.PathLike | SceneReader,
    predict_tiles: PredictTiles,
    *,
    tile_size: int = 1024,
    gap: int = 200,
    rates: Sequence[float] = (1.0,),
    batch_size: int = 8,
    nms_iou: float = 0.1,
    score_threshold: float = 0.0,
    prefer_whole: bool = True,
    edge_margin: float = 4.0,
    max_detections: int | None = 10000,
    progress: bool = False,
) -> Detections:
    """Detects objects in a scene of any size by tiling it the way the split tool tiles training scenes.

    Args:
        image: (H, W, 3) uint8 array (RGB), an image path (PNG/JPG decoded whole; GeoTIFF/BigTIFF/VRT read window
            by window, see `scenes.RasterScene`), a remote raster (an URL string or GDAL /vsi path, read window by
            window: `sources.py`) or an open `SceneReader` (left open).
        predict_tiles: list of (h, w, 3) uint8 RGB tiles -> one `Detections` per tile in that tile's pixels. Edge
            tiles can be smaller than `tile_size`; at rate 1 a tile is exactly the scene's pixels.
        tile_size: tile side in pixels of the resized scene, >= 1.
        gap: overlap of neighbouring tiles in pixels, in [0, tile_size); tiles step by `tile_size - gap`.
        rates: scales at which the scene is tiled (0.5 halves it), finite and > 0; detections of all rates are merged.
        batch_size: tiles per `predict_tiles` call, >= 1.
        nms_iou: class-wise rotated NMS IoU threshold of the merge, in [0, 1] (0.1 as the DOTA toolkits; 0 drops
            every box overlapping a better one of its class at all, 1 none).
        score_threshold: tile detections scoring below this are dropped before merging, in [0, 1].
        prefer_whole: prefer a tile where an object is not cut by a tile edge (see `merge_detections`).
        edge_margin: distance in tile pixels within which a box counts as touching an inner tile edge.
        max_detections: cap on the scene's detections (highest scores kept), >= 1; None: no cap.
        progress: show a tqdm progress bar over the scene's tiles.

    Returns:
        The scene's `Detections`: rboxes (K, 5) float32 canonical scene pixels, scores (K,) decreasing, labels (K,).

    Raises:
        SceneError: the scene cannot be opened or a window cannot be read (message names the file).
        ValueError: an option out of range (`check_tiled_options`, before the scene opens); wrong result counts.
    """
    check_tiled_options(tile_size=tile_size, gap=gap, rates=rates, batch_size=batch_size, nms_iou=nms_iou,
                        score_threshold=score_threshold, max_detections=max_detections)  # fmt: skip
    with contextlib.ExitStack() as stack:
        reader = image if isinstance(image, SceneReader) else stack.enter_context(open_scene(image))
        tiles = plan_tiles(reader.image_size, tile_size, gap, rates)
        batches = stack.enter_context(contextlib.closing(prefetch_batches(reader, tiles, batch_size)))
        bar = stack.enter_context(tqdm(total=len(tiles), desc=reader.name, unit="tile", disable=not progress))
        scene_dets, cut = [], []
        for batch in batches:
            results = list(predict_tiles(batch.pixels)) if batch.tiles else []
            if len(results) != len(batch.tiles):
                raise ValueError(f"predict_tiles returned {len(results)} results for {len(batch.tiles)} tiles")
            for tile, dets in zip(batch.tiles, results, strict=True):
                keep = dets.scores >= score_threshold
                dets = Detections(dets.rboxes[keep], dets.scores[keep], dets.labels[keep])
                cut.append(touches_inner_edge(dets.rboxes.detach().cpu(), tile, edge_margin))
                scene_dets.append(tile_to_scene(dets, tile))
            bar.update(batch.consumed)
    return merge_detections(scene_dets, cut, nms_iou, prefer_whole, max_detections=max_detections)


@dataclass
class ScenesReport:
    """What `predict_scenes` did: scenes (`sources.scene_source`: local `Path`s, remote URL strings) predicted,
    skipped as done (before, or meanwhile by another worker), and failed (scene -> message)."""

    done: list[SceneSource] = field(default_factory=list)
    skipped: list[SceneSource] = field(default_factory=list)
    failed: dict[SceneSource, str] = field(default_factory=dict)


def predict_scenes(
    paths: Sequence[str | os.PathLike],
    predict_tiles: PredictTiles,
    out: str | os.PathLike,
    classes: Sequence[str],
    *,
    formats: Sequence[str] = ("dota",),
    progress: bool = True,
    raster_options: dict | None = None,
    **options,
) -> ScenesReport:
    """Runs `tiled_predict` on each scene and writes its files (`writers.write_scene_outputs`) under `out`.

    A scene whose result file `out/scenes/{name}.txt` exists is skipped (runs resume). Each scene is claimed first
    (a `fileio.FileLock` `out/scenes/.{name}.lock`), so that workers sharing `out` (concurrent runs, machines over a
    shared folder) share the scenes: a scene another worker holds is left for last, then waited for, and done here
    only if that worker ended without its result. Temporaries a killed worker left for a scene go when it is
    claimed. A scene that cannot be read (missing, corrupt, truncated) is reported on stderr and in the report's
    `failed`; the others still run.

    Args:
        paths: scenes: local files, remote or virtual rasters (URL strings, /vsi paths), as `scenes.list_scenes`
            gives them; each is named by `sources.scene_name`.
        predict_tiles: the detector (see `tiled_predict`).
        out: output folder.
        classes: class names indexed by the detector's labels.
        formats: per-scene outputs besides the result file: "geojson" (RFC 7946), "geojson-crs", "gpkg", "png"
            ("dota" is always written); checked before any scene (`writers.check_formats`).
        progress: a progress bar per scene.
        raster_options: `RasterScene` options (bands, percentiles, cache_mb).
        options: `tiled_predict` options (tile_size, gap, rates, batch_size, nms_iou, score_threshold, ...).

    Raises:
        ValueError: an unknown format, or gpkg without pyogrio (before any scene).
    """
    check_formats(formats)
    report, held_elsewhere = ScenesReport(), []
    claims = check_writable_folder(Path(out) / "scenes")
    for path in map(scene_source, paths):
        if scene_result_path(out, scene_name(path)).is_file():
            report.skipped.append(path)
            continue
        claim = try_lock(claims / f".{scene_name(path)}.lock")
        if claim is None:
            held_elsewhere.append(path)
            continue
        with claim:
            _predict_claimed(path, predict_tiles, out, classes, formats, progress, raster_options, options, report)
    for path in held_elsewhere:  # wait for the other worker; take the scene over if it ended without a result
        with FileLock(claims / f".{scene_name(path)}.lock", blocking=True):
            _predict_claimed(path, predict_tiles, out, classes, formats, progress, raster_options, options, report)
    return report


def _predict_claimed(
    path: SceneSource,
    predict_tiles: PredictTiles,
    out: str | os.PathLike,
    classes: Sequence[str],
    formats: Sequence[str],
    progress: bool,
    raster_options: dict | None,
    options: dict,
    report: ScenesReport,
) -> None:
    """One claimed scene of `predict_scenes` (same arguments): skipped when done meanwhile, else predicted and
    written; the outcome goes into `report`."""
    name = scene_name(path)
    if scene_result_path(out, name).is_file():
        report.skipped.append(path)
        return
    for folder, suffix in (("scenes", ".txt"), *OUTPUTS.values()):
        if (Path(out) / folder).is_dir():
            remove_stale_temporaries(Path(out) / folder, f".{glob.escape(name + suffix)}.*.tmp")
    try:
        with open_scene(path, **(raster_options or {})) as reader:
            detections = tiled_predict(reader, predict_tiles, progress=progress, **options)
            result = to_scene_result(detections, classes)
            write_scene_outputs(out, reader, result, classes, formats)
    except (SceneError, OSError) as error:
        report.failed[path] = str(error)
        print(f"error: {error}", file=sys.stderr)
        return
    report.done.append(path)


class Predictor:
    """A trained detector as a `predict_tiles` callable: uint8 RGB tiles -> per-tile `Detections` in tile pixels.

    Each tile is resized by the model's input `scale` when its config resizes inputs, on the CPU with the uint8
    kernel the training data goes through (`resize_image`: bilinear, antialiased; torchvision's float path, which
    CUDA tensors take, puts about 1 pixel in 7 one grey level apart from it), sent to the device as uint8 (a quarter
    of the bytes), made a float image in [0, 1], padded into one batch (`pad_images`, to the model's size divisor)
    and run through the model and `postprocess`; the boxes are mapped back to the tile's pixels. A whole image is
    one tile: `folder.predict_folder` runs a DOTA-layout folder this way.

    Args:
        model: the detector, on `device`; set to eval mode here.
        classes: class names in label order.
        scale: the model's input scale (`cfg.data.scale`).
        device: where the model runs.
        amp: "auto" (bf16 where the device computes it natively, else float32), "none", "bf16" or "fp16" autocast.
        top_k: candidates kept per tile by `postprocess`.
        score_threshold: minimum score kept per tile.
        nms_iou: class-wise rotated NMS IoU per tile in `postprocess` (0 = none).

    Raises:
        ValueError: an unknown `amp` mode, or top_k, score_threshold or nms_iou out of range
            (`postprocess.check_postprocess_options`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        classes: Sequence[str],
        *,
        scale: float = 1.0,
        device: str | torch.device = "cpu",
        amp: str = "auto",
        top_k: int = 300,
        score_threshold: float = 0.0,
        nms_iou: float = 0.0,
    ) -> None:
        self.model, self.classes, self.scale = model.eval(), tuple(classes), float(scale)
        self.device, self.amp = torch.device(device), amp
        self.amp_dtype = autocast_dtype(amp, self.device)  # ValueError for an unknown mode
        check_postprocess_options(top_k, score_threshold, nms_iou)
        self.top_k, self.score_threshold, self.nms_iou = top_k, score_threshold, nms_iou

    @classmethod
    def from_config(
        cls,
        model: torch.nn.Module,
        cfg: Config,
        *,
        classes: Sequence[str] | None = None,
        amp: str | None = None,
        **options,
    ) -> Predictor:
        """The predictor of a live `model` built from `cfg`, on the model's device: the one place that reads the
        config's input scale (`data.scale`) and evaluation settings (`eval.top_k`, `eval.score_threshold`,
        `eval.nms_iou`), for the training loop's periodic evaluation and `from_checkpoint`.

        Args:
            model: the detector (set to eval mode; a caller that trains it sets train mode back).
            cfg: its resolved config.
            classes: class names in label order; default `cfg.data.classes`.
            amp: autocast; default `cfg.train.amp`, so that the periodic evaluation scores the model at the
                precision (and speed) it trains in.
            options: top_k, score_threshold, nms_iou in place of the config's.
        """
        e = cfg.eval
        options = {"top_k": e.top_k, "score_threshold": e.score_threshold, "nms_iou": e.nms_iou, **options}
        device = next(model.parameters()).device
        classes = cfg.data.classes if classes is None else classes
        amp = cfg.train.amp if amp is None else amp
        return cls(model, classes, scale=cfg.data.scale, device=device, amp=amp, **options)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", amp: str = "auto", **options
    ) -> Predictor:
        """The predictor of a training checkpoint (`rotated_ddetr.checkpoint.load_model`) on `device`: its weights,
        classes and input scale; `options` (top_k, score_threshold, nms_iou) default to the config's evaluation
        settings (`from_config`). Autocast is `amp` (default "auto": bf16 where the device computes it natively,
        whatever the training used; "none": float32)."""
        model, cfg, classes = load_model(path, device)
        return cls.from_config(model, cfg, classes=classes, amp=amp, **options)

    def _to_images(self, tiles: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """(h, w, 3) uint8 tiles -> (3, h', w') float [0, 1] images on the device, resized by the input scale on the
        CPU as the training data is (`resize_image` on the uint8 pixels), then sent as uint8."""
        images = []
        for tile in tiles:
            image = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)  # (3, h, w) view, channels last
            images.append(resize_image(image, self.scale).to(self.device).float().div_(255.0))
        return images

    @torch.no_grad()
    def predict_tiles(self, tiles: Sequence[np.ndarray]) -> list[Detections]:
        """Detections of each (h, w, 3) uint8 RGB tile, in its pixels (canonical rboxes, scores decreasing)."""
        if not tiles:
            return []
        batch, masks = pad_images(self._to_images(tiles), self.model.size_divisor)
        dtype = self.amp_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            outputs = self.model(batch, masks)
        sizes = torch.tensor([tile.shape[:2] for tile in tiles], device=self.device)  # boxes back in tile pixels
        return postprocess(outputs, sizes, self.top_k, self.score_threshold, self.nms_iou)

    __call__ = predict_tiles

    def predict(self, image: np.ndarray | str | os.PathLike | SceneReader, **options) -> Detections:
        """`tiled_predict(image, self.predict_tiles, **options)`."""
        return tiled_predict(image, self.predict_tiles, **options)
