"""Detect rotated objects in scenes of any size (PNG/JPG, GeoTIFF/BigTIFF/VRT, remote rasters) with a trained
checkpoint, tile by tile.

Examples:
    rotated-ddetr infer work_dirs/run/checkpoint_0049.pth scenes/*.tif --out results
    torchrun --nproc-per-node 4 --no-python rotated-ddetr infer CKPT DOTA/test/images --out results \\
        --rates 0.5 1.0 1.5 --gap 500
    rotated-ddetr infer CKPT https://example.com/cog/scene.tif s3://bucket/a.tif --out results --formats dota,gpkg

Writes OUT/scenes/{scene}.txt (lines `x1 y1 ... x4 y4 class score`; it marks the scene done, so a re-run skips it),
per --formats OUT/geojson/{scene}.geojson (RFC 7946: WGS84 lon/lat), OUT/geojson-crs/{scene}.geojson (the
raster's CRS), OUT/gpkg/{scene}.gpkg (GeoPackage in the raster's CRS; needs pyogrio), OUT/pictures/{scene}.png
(scenes without a CRS: pixel coordinates) and, over all scenes, OUT/Task1_{class}.txt for `rotated-ddetr evaluate --dets
OUT --labels LABELS` or the DOTA evaluation server. URLs (http, https, s3, gs, az) and /vsicurl/, /vsis3/ paths are
read window by window over the network; a scene is named by its file or URL stem.
Under torchrun, rank r takes scenes r, r + W, ...; rank 0 writes the Task1 files when every rank is done. Runs
that share OUT (at once, or on several machines over a shared folder) share its scenes: each claims a scene
(OUT/scenes/.{scene}.lock) before working on it and waits for the others' scenes at the end. A scene that cannot be
read is reported and skipped; the exit status is non-zero when any scene has no result.
"""

import argparse
import sys
from pathlib import Path

from rotated_ddetr.checkpoint import CheckpointError
from rotated_ddetr.cli.parsing import add_device_flags, command_parser
from rotated_ddetr.distributed import barrier, init_inference, shutdown_distributed
from rotated_ddetr.fileio import check_writable_folder
from rotated_ddetr.inference.predictor import Predictor, check_tiled_options, predict_scenes
from rotated_ddetr.inference.scenes import SceneError, list_scenes
from rotated_ddetr.inference.sources import scene_name
from rotated_ddetr.inference.writers import FORMATS, assemble_task1, check_formats

# `tiled_predict`'s options -> their flags, for the messages of `check_tiled_options`.
FLAGS = {"tile_size": "--tile-size", "gap": "--gap", "rates": "--rates", "batch_size": "--batch-size",
         "nms_iou": "--nms-iou", "score_threshold": "--score-threshold", "max_detections": "--max-dets"}  # fmt: skip


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = command_parser(__doc__, prog)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by rotated-ddetr train")
    parser.add_argument("inputs", nargs="+", help="scene files, folders of scenes, glob patterns, or URLs")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; finished scenes skipped)")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side in pixels (default 1024)")
    parser.add_argument("--gap", type=int, default=200, help="overlap of neighbouring tiles in pixels (default 200)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0], help="scene scales to tile (default 1.0)")
    parser.add_argument("--score-threshold", "--score-thr", type=float, default=0.05,
                        help="minimum detection score (default 0.05)")  # fmt: skip
    parser.add_argument("--nms-iou", type=float, default=0.1,
                        help="IoU threshold of the tile merge, in [0, 1]: 0 drops any overlapping box, 1 none "
                        "(default 0.1)")  # fmt: skip
    parser.add_argument("--max-dets", type=int, default=10000, help="detections kept per scene, >= 1 (default 10000)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per model call (default 8)")
    add_device_flags(parser)
    parser.add_argument("--bands", type=int, nargs="+", help="raster bands to use as R G B (1-based)")
    parser.add_argument("--formats", default="dota,geojson,png", help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    options = dict(tile_size=args.tile_size, gap=args.gap, rates=tuple(args.rates), batch_size=args.batch_size,
                   nms_iou=args.nms_iou, score_threshold=args.score_threshold,
                   max_detections=args.max_dets)  # fmt: skip
    try:
        check_formats(formats)  # unknown formats, gpkg without pyogrio: said now, not after the first scene
        check_tiled_options(**options, names=FLAGS)  # before any work: no process group, scene or checkpoint yet
        ctx = init_inference(args.device)
        scenes = list_scenes(args.inputs)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, ctx.device, args.amp, score_threshold=args.score_threshold
        )
        check_writable_folder(args.out)  # before the inference, not after it
    except (SceneError, CheckpointError, OSError, ValueError) as error:
        print(f"infer: error: {error}", file=sys.stderr)
        return 1
    raster_options = {"bands": args.bands} if args.bands else {}
    mine = scenes[ctx.rank :: ctx.world_size]
    report = predict_scenes(mine, predictor, args.out, predictor.classes, formats=formats, progress=not args.quiet,
                            raster_options=raster_options, **options)  # fmt: skip
    done, skipped, failed = len(report.done), len(report.skipped), set(report.failed)
    print(f"rank {ctx.rank}: {done} scenes done, {skipped} done before, {len(failed)} failed")
    barrier(ctx)
    if ctx.is_main:
        missing = assemble_task1(args.out, [scene_name(p) for p in scenes], predictor.classes)
        failed |= {p for p in scenes if scene_name(p) in missing}
        print(f"Task1 files for {len(scenes) - len(missing)} scenes: {args.out}/Task1_{{class}}.txt")
    for path in sorted(failed, key=str):
        reason = report.failed.get(path, f"{path}: no result (see the log of its rank)")
        print(f"infer: failed: {reason}", file=sys.stderr)
    shutdown_distributed()
    return 1 if failed else 0
