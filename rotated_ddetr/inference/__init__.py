"""Inference: scene (scenes.py) -> tiles (`rotated_ddetr.tiles`, tiling.py) -> detector -> postprocess -> merge tiles
-> writers.

`tiled_predict` runs a detector over a scene of any size; `predict_folder` runs a `Predictor` over a DOTA-layout
folder's whole images (training-time evaluation, rotated-ddetr test); `Detections` are one image's canonical pixel
rboxes, scores and labels. The one path from images to detections.
"""

from rotated_ddetr.inference.folder import predict_folder
from rotated_ddetr.inference.merge import merge_detections, tile_to_scene, touches_inner_edge
from rotated_ddetr.inference.postprocess import Detections, postprocess, postprocess_raw
from rotated_ddetr.inference.predictor import Predictor, predict_scenes, tiled_predict
from rotated_ddetr.inference.scenes import (
    ArrayScene,
    ImageFileScene,
    RasterScene,
    SceneError,
    SceneReader,
    list_scenes,
    open_scene,
)
from rotated_ddetr.inference.tiling import prefetch_batches
from rotated_ddetr.tiles import Tile, plan_tiles

__all__ = [
    "ArrayScene",
    "Detections",
    "ImageFileScene",
    "Predictor",
    "RasterScene",
    "SceneError",
    "SceneReader",
    "Tile",
    "list_scenes",
    "merge_detections",
    "open_scene",
    "plan_tiles",
    "postprocess",
    "postprocess_raw",
    "predict_folder",
    "predict_scenes",
    "prefetch_batches",
    "tile_to_scene",
    "tiled_predict",
    "touches_inner_edge",
]
