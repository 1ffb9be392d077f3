"""Benchmark of box_iou_rotated and nms_rotated: compiled kernel vs pure-PyTorch twin (vs shapely 2 for IoU).

`rows()` returns one dict per (op, implementation, device); `python benchmarks/bench_ops_iou_nms.py` prints them as
a table (`python benchmarks/bench_ops.py` runs every op benchmark and records the table in RESULTS.md).
Times are the median of `--repeats` runs for the kernels and of one run for the slow baselines.
"""

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import shapely
import torch
from report import format_table

from rotated_ddetr.boxes import rboxes_to_corners
from rotated_ddetr.ops import (
    backend,
    box_iou_rotated,
    box_iou_rotated_reference,
    nms_rotated,
    nms_rotated_reference,
)


def scene_rboxes(count: int, seed: int, extent: float = 1024.0) -> torch.Tensor:
    """(count, 5) float64 rboxes spread over an `extent`-pixel image, 10-80 px sides, any angle."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=g, dtype=torch.float64) * extent
    sizes = torch.rand(count, 2, generator=g, dtype=torch.float64) * 70 + 10
    angles = (torch.rand(count, 1, generator=g, dtype=torch.float64) - 0.5) * math.pi
    return torch.cat((centres, sizes, angles), 1)


def detections(objects: int, per_object: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like output: `per_object` jittered boxes around each of `objects` boxes, with random scores."""
    g = torch.Generator().manual_seed(seed)
    centres = scene_rboxes(objects, seed).repeat_interleave(per_object, 0)
    jitter = torch.randn(centres.shape, generator=g, dtype=torch.float64)
    jitter *= torch.tensor([3.0, 3.0, 3.0, 3.0, 0.1], dtype=torch.float64)
    return centres + jitter, torch.rand(len(centres), generator=g, dtype=torch.float64)


def _time_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median wall time of `repeats` calls in milliseconds, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), result


def shapely_iou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor) -> np.ndarray:
    """(N, M) IoU by shapely 2's vectorised intersection of the float64 polygons."""
    polygons1 = shapely.polygons(rboxes_to_corners(boxes1.double()).numpy())
    polygons2 = shapely.polygons(rboxes_to_corners(boxes2.double()).numpy())
    inter = shapely.area(shapely.intersection(polygons1[:, None], polygons2[None, :]))
    areas1 = (boxes1[:, 2] * boxes1[:, 3]).double().numpy()
    areas2 = (boxes2[:, 2] * boxes2[:, 3]).double().numpy()
    return inter / (areas1[:, None] + areas2[None, :] - inter)


def _iou_rows(count: int, extent: float, repeats: int, devices: list[torch.device]) -> list[dict]:
    boxes1, boxes2 = scene_rboxes(count, seed=1, extent=extent), scene_rboxes(count, seed=2, extent=extent)
    # Sparse: a 1024-px scene, ~1% of the pairs overlap. Dense: boxes crowded so that most pairs need clipping.
    shape = f"{count}x{count} {'sparse' if extent >= 1024 else 'dense'}"
    shapely_ms, expected = _time_ms(lambda: shapely_iou_matrix(boxes1, boxes2), 1, torch.device("cpu"))
    rows = [dict(op="box_iou_rotated", shape=shape, impl="shapely", device="cpu", time_ms=shapely_ms)]
    cases = [("reference", box_iou_rotated_reference, torch.device("cpu"), 1)]
    cases += [
        ("kernel", box_iou_rotated, device, repeats)
        for device in devices
        if backend("box_iou_rotated", device) == "kernel"
    ]
    for impl, fn, device, runs in cases:
        for dtype in (torch.float64, torch.float32):
            b1, b2 = boxes1.to(device, dtype), boxes2.to(device, dtype)
            ms, ious = _time_ms(lambda fn=fn, b1=b1, b2=b2: fn(b1, b2), runs, device)
            diff = float(np.abs(ious.double().cpu().numpy() - expected).max())
            rows.append(
                dict(
                    op="box_iou_rotated",
                    shape=f"{shape} {str(dtype)[6:]}",
                    impl=impl,
                    device=device.type,
                    time_ms=ms,
                    max_abs_diff=diff,
                )
            )
    for row in rows:
        row["speedup"] = shapely_ms / row["time_ms"]
    return rows


def _nms_rows(
    objects: int, per_object: int, repeats: int, devices: list[torch.device], with_reference: bool = True
) -> list[dict]:
    """NMS of a detector-like scene in float64 and float32. The baseline (speedup 1, expected result) is the twin
    on CPU, or with `with_reference=False` (sizes where the twin is too slow) the compiled CPU kernel."""
    boxes, scores = detections(objects, per_object, seed=3)
    cpu = torch.device("cpu")
    rows = []
    for dtype in (torch.float64, torch.float32):
        b, s = boxes.to(dtype), scores.to(dtype)
        shape = f"{len(boxes)} boxes {str(dtype)[6:]}"
        impl, fn = ("reference", nms_rotated_reference) if with_reference else ("kernel", nms_rotated)
        base_ms, expected = _time_ms(lambda fn=fn, b=b, s=s: fn(b, s, 0.5), 1, cpu)
        group = [dict(op="nms_rotated", shape=shape, impl=impl, device="cpu", time_ms=base_ms, kept=len(expected))]
        for device in devices:
            if backend("nms_rotated", device) != "kernel" or (device.type == "cpu" and not with_reference):
                continue
            bd, sd = b.to(device), s.to(device)
            ms, kept = _time_ms(lambda bd=bd, sd=sd: nms_rotated(bd, sd, 0.5), repeats, device)
            same = torch.equal(kept.cpu(), expected)
            group.append(dict(op="nms_rotated", shape=shape, impl="kernel", device=device.type, time_ms=ms,
                              kept=len(kept), max_abs_diff=0.0 if same else float("nan")))  # fmt: skip
        for row in group:
            row["speedup"] = base_ms / row["time_ms"]
        rows += group
    return rows


def rows(
    iou_boxes: int = 2000,
    dense_iou_boxes: int = 1000,
    nms_objects: int = 500,
    nms_per_object: int = 20,
    repeats: int = 5,
    nms_large_objects: int = 0,
    device_types: tuple[str, ...] = ("cpu", "cuda"),
) -> list[dict]:
    """Benchmark rows: dicts with op, shape, impl, device, time_ms, speedup (vs shapely for IoU, vs the reference
    for NMS) and max_abs_diff (IoU: against shapely; NMS: 0 when the kept indices equal the baseline's).

    `nms_large_objects` > 0 adds NMS of that many objects x `nms_per_object` boxes, CUDA kernel vs CPU kernel.
    CUDA rows need a GPU; the CPU baselines always run."""
    devices = [torch.device("cpu")] if "cpu" in device_types else []
    devices += [torch.device("cuda")] if "cuda" in device_types and torch.cuda.is_available() else []
    table = (
        _iou_rows(iou_boxes, 1024.0, repeats, devices)
        + _iou_rows(dense_iou_boxes, 100.0, repeats, devices)
        + _nms_rows(nms_objects, nms_per_object, repeats, devices)
    )
    if nms_large_objects > 0:
        table += _nms_rows(nms_large_objects, nms_per_object, repeats, devices, with_reference=False)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iou-boxes", type=int, default=2000, help="N for the sparse N x N IoU matrix")
    parser.add_argument("--dense-iou-boxes", type=int, default=1000, help="N for the dense N x N IoU matrix")
    parser.add_argument("--nms-objects", type=int, default=500, help="objects in the NMS scene")
    parser.add_argument("--nms-per-object", type=int, default=20, help="detections per object")
    parser.add_argument("--repeats", type=int, default=5, help="runs per kernel timing (median)")
    parser.add_argument("--nms-large-objects", type=int, default=0,
                        help="also NMS of this many objects x --nms-per-object, CUDA vs CPU kernel")  # fmt: skip
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu", "cuda"],
                        help="kernel devices to time (cuda only with a GPU; CPU baselines always run)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        # On a machine shared with other jobs, fewer threads than cores avoids waiting on descheduled OpenMP threads.
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    table = rows(args.iou_boxes, args.dense_iou_boxes, args.nms_objects, args.nms_per_object, args.repeats,
                 args.nms_large_objects, tuple(args.devices))  # fmt: skip
    print(format_table(table))
