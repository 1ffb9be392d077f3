"""Benchmarks of tiled inference: (a) peak resident memory over a 30000 x 30000 GeoTIFF read window by window,
(b) the time tiling + reading + merging add to the model's own time, (c) tiles/s of the tiny model on this machine.

python benchmarks/bench_tiled_inference.py [--scene-size 30000] [--checkpoint CKPT | --config CFG] [--device cuda]
    [--amp bf16] [--tiles-scene-size 4096] [--repeats 5] [--skip-memory] [--no-append]

(a) writes a tiled, deflate-compressed RGB GeoTIFF stripe by stripe (bounded memory) into a temporary folder under
/tmp (deleted at the end), with bright rotated rectangles on a patterned ground, and runs `tiled_predict` over it in
a fresh process with a classical detector doing real per-tile work (threshold, contours, minimum-area rectangles).
Peak growth = VmHWM - VmRSS after imports, from /proc/self/status. (b), (c) run a model (the checkpoint's, or
--config's with random weights, synthetic_tiny by default: the same compute) on a 4096 x 4096 GeoTIFF
(--tiles-scene-size): model time on tiles already in memory vs `tiled_predict` end to end, on --device.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio
import torch
from rasterio.transform import Affine
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import append_results, format_table  # noqa: E402

from rotated_ddetr.boxes import polygons_to_rboxes, rboxes_to_polygons  # noqa: E402
from rotated_ddetr.inference import (  # noqa: E402
    Detections,
    merge_detections,
    open_scene,
    plan_tiles,
    tile_to_scene,
    tiled_predict,
    touches_inner_edge,
)
from rotated_ddetr.structures import AMP_MODES  # noqa: E402

CELL = 300  # one object per 300 x 300 cell: 10000 objects on a 30000 px scene, never touching each other


def _objects(size: int, seed: int = 0) -> np.ndarray:
    """(N, 8) polygons of bright rotated rectangles, one per cell, jittered (20-80 x 8-30 px)."""
    rng = np.random.default_rng(seed)
    centres = np.stack(np.meshgrid(np.arange(size // CELL), np.arange(size // CELL)), -1).reshape(-1, 2) * CELL
    n = len(centres)
    rboxes = np.column_stack((centres + CELL / 2 + rng.uniform(-60, 60, (n, 2)), rng.uniform(20, 80, n),
                              rng.uniform(8, 30, n), rng.uniform(-np.pi / 2, np.pi / 2, n)))  # fmt: skip
    return rboxes_to_polygons(rboxes)


def write_scene(path: Path, size: int, stripe: int = 512) -> int:
    """Writes the size x size RGB GeoTIFF stripe by stripe (tiled 512, deflate); returns the number of objects."""
    polygons = _objects(size)
    ys = polygons[:, 1::2]
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", zlevel=1, photometric="RGB", BIGTIFF="IF_SAFER",
                   crs="EPSG:32633", transform=Affine(0.3, 0, 5e5, 0, -0.3, 4.6e6))  # fmt: skip
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, stripe):
            rows = min(stripe, size - y0)
            y = np.arange(y0, y0 + rows, dtype=np.float32)[:, None]
            ground = (90 + 30 * np.sin(x / 97) * np.cos(y / 131)).astype(np.uint8)
            pixels = np.repeat(ground[..., None], 3, axis=2)
            inside = (ys.max(1) >= y0) & (ys.min(1) < y0 + rows)
            corners = np.round((polygons[inside].reshape(-1, 4, 2) - [0, y0]) * 16).astype(np.int32)
            cv2.fillPoly(pixels, list(corners), (240, 235, 230), cv2.LINE_8, shift=4)
            dst.write(pixels.transpose(2, 0, 1), window=Window(0, y0, size, rows))
    return len(polygons)


def bright_box_detector(tiles: list[np.ndarray]) -> list[Detections]:
    """A classical detector: the minimum-area rectangles of the bright blobs of each tile, in tile pixels."""
    results = []
    for tile in tiles:
        mask = (tile[..., 0] > 200).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        corners = [cv2.boxPoints(cv2.minAreaRect(c)) for c in contours if cv2.contourArea(c) >= 20]
        rboxes = polygons_to_rboxes(np.array(corners, np.float64).reshape(-1, 8))
        scores = np.full(len(rboxes), 0.9, np.float32)
        results.append(
            Detections(
                torch.from_numpy(rboxes).float(), torch.from_numpy(scores), torch.zeros(len(rboxes), dtype=torch.int64)
            )
        )
    return results


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(path: Path) -> dict:
    """In this (fresh) process: tiled_predict over `path`; peak RSS growth over the RSS after imports."""
    baseline = _kib("VmRSS")
    start = time.perf_counter()
    detections = tiled_predict(path, bright_box_detector, tile_size=1024, gap=200, batch_size=8)
    seconds = time.perf_counter() - start
    with open_scene(path) as reader:
        tiles = len(plan_tiles(reader.image_size, 1024, 200))
    return {"peak_growth_mib": (_kib("VmHWM") - baseline) / 1024, "baseline_mib": baseline / 1024,
            "seconds": seconds, "tiles": tiles, "detections": len(detections.scores)}  # fmt: skip


def bench_memory(size: int) -> dict:
    """(a): writes the scene under /tmp, measures in a child process, deletes the scene."""
    folder = Path(tempfile.mkdtemp(prefix="bench_tiled_", dir="/tmp"))
    try:
        path = folder / f"scene_{size}.tif"
        start = time.perf_counter()
        objects = write_scene(path, size)
        write_s = time.perf_counter() - start
        child = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(child.stderr)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        return {"benchmark": f"(a) {size} px RGB GeoTIFF, classical detector", "decoded_gib": size * size * 3 / 2**30,
                "file_mib": path.stat().st_size / 2**20, "write_s": write_s, "objects": objects, **result}  # fmt: skip
    finally:
        shutil.rmtree(folder)


def _predictor(checkpoint: str | None, config: str, device: str, amp: str, folder: Path):
    """The checkpoint's Predictor, or one of `config` with random weights (the same compute), on `device`."""
    from rotated_ddetr.checkpoint import save_checkpoint
    from rotated_ddetr.config import load_config
    from rotated_ddetr.inference.predictor import Predictor
    from rotated_ddetr.model import build_model

    if checkpoint is None:
        cfg = load_config(config)
        torch.manual_seed(0)
        checkpoint = folder / "random_weights.pth"
        save_checkpoint(checkpoint, build_model(cfg.model), cfg, cfg.data.classes)
    return Predictor.from_checkpoint(checkpoint, device, amp, score_threshold=0.0)


def _timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, all threads) of fn(), the device's queue drained."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_overhead(
    checkpoint: str | None,
    config: str = "synthetic_tiny",
    device: str = "cpu",
    amp: str = "none",
    scene_size: int = 4096,
    batch_size: int = 4,
    repeats: int = 5,
) -> list[dict]:
    """(b) and (c): a model on a `scene_size` px GeoTIFF: model alone (tiles in memory), reading alone, merging
    alone, and `tiled_predict` end to end.

    Every tile keeps its 300 best candidates (score threshold 0), so the merge has 7500 boxes to reduce. The fastest
    of `repeats` alternating runs counts, in wall time and in process CPU time. On a shared machine the end-to-end
    ratio is noisy; the component ratio (reading + merging CPU time over model CPU time) bounds the overhead from
    above as if reading did not overlap the model at all.
    """
    folder = Path(tempfile.mkdtemp(prefix="bench_tiled_", dir="/tmp"))
    try:
        predictor = _predictor(checkpoint, config, device, amp, folder)
        path = folder / f"scene_{scene_size}.tif"
        write_scene(path, scene_size)
        with open_scene(path) as reader:
            tiles = plan_tiles(reader.image_size, 1024, 200)
            pixels = [reader.read(tile) for tile in tiles]
        dets = [d for i in range(0, len(pixels), batch_size) for d in predictor(pixels[i : i + batch_size])]

        def model_only() -> None:
            for i in range(0, len(pixels), batch_size):
                predictor(pixels[i : i + batch_size])

        def read_only() -> None:
            with open_scene(path) as reader:
                for tile in tiles:
                    reader.read_tile(tile)

        def merge_only() -> None:
            cut = [touches_inner_edge(d.rboxes, tile) for d, tile in zip(dets, tiles, strict=True)]
            merge_detections([tile_to_scene(d, tile) for d, tile in zip(dets, tiles, strict=True)], cut)

        def end_to_end() -> None:
            tiled_predict(path, predictor, tile_size=1024, gap=200, batch_size=batch_size, max_detections=None)

        runs = [[_timed(f, device) for f in (model_only, read_only, merge_only, end_to_end)] for _ in range(repeats)]
    finally:
        shutil.rmtree(folder)
    (model, model_cpu), (_, read_cpu), (_, merge_cpu), (total, _) = (
        (min(r[k][0] for r in runs), min(r[k][1] for r in runs)) for k in range(4)
    )
    model_name = f"{checkpoint}" if checkpoint else f"{Path(config).stem}, random weights"
    name = f"{model_name}, input scale {predictor.scale}, {device} amp {amp}, {scene_size} px GeoTIFF, "
    name += f"{len(tiles)} x 1024 px tiles"
    overhead = {"model_s": model, "tiled_predict_s": total, "overhead_pct": 100 * (total / model - 1),
                "read_cpu_s": read_cpu, "merge_cpu_s": merge_cpu, "boxes_merged": sum(len(d.scores) for d in dets),
                "overhead_bound_pct": 100 * (read_cpu + merge_cpu) / model_cpu}  # fmt: skip
    speed = {"tiles_per_s_model": len(tiles) / model, "tiles_per_s_end_to_end": len(tiles) / total}
    return [
        {"benchmark": f"(b) {name}, batch {batch_size}", **overhead},
        {"benchmark": f"(c) {model_name} on {device} (amp {amp}), tiles of 1024 px", **speed},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene-size", type=int, default=30000, help="side of the (a) scene (default 30000)")
    parser.add_argument("--checkpoint", help="model checkpoint for (b), (c) (default: --config, random weights)")
    parser.add_argument("--config", default="synthetic_tiny", help="model config when no --checkpoint")
    parser.add_argument("--device", default="cpu", help="device of the model in (b), (c) (default cpu)")
    parser.add_argument("--amp", choices=AMP_MODES, default="none", help="autocast of (b), (c)")
    parser.add_argument("--tiles-scene-size", type=int, default=4096, help="side of the (b), (c) scene")
    parser.add_argument("--repeats", type=int, default=5, help="runs of (b), (c); the fastest counts (default 5)")
    parser.add_argument("--skip-memory", action="store_true", help="skip (a), the large-scene memory run")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process of (a)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_memory(args.measure)))
        return 0
    load_before = os.getloadavg()[0]
    memory = [] if args.skip_memory else [bench_memory(args.scene_size)]
    overhead = bench_overhead(args.checkpoint, args.config, args.device, args.amp, args.tiles_scene_size,
                              repeats=args.repeats)  # fmt: skip
    rows = [*memory, *overhead]
    rows = [{"part": r["benchmark"], "measure": k, "value": v} for r in rows for k, v in r.items() if k != "benchmark"]
    print(format_table(rows))
    if not args.no_append:
        notes = ("(a) peak RSS growth = VmHWM - VmRSS after imports, in a fresh process; target <= 1024 MiB whatever "
                 "the scene size. (b) overhead_pct = tiled_predict (reading in a background thread + merge) / model "
                 "on tiles in memory - 1, wall time, fastest of 5 (noisy on a shared machine); overhead_bound_pct = "
                 "(reading + merging CPU time) / model CPU time, as if reading never overlapped the model; "
                 f"target <= 10 %. Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
                 f"on {os.cpu_count()} cores.")  # fmt: skip
        append_results("Tiled inference (benchmarks/bench_tiled_inference.py)", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
