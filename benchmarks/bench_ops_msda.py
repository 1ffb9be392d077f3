"""Benchmark of ms_deform_attn: forward+backward time and peak memory, compiled kernel vs the grid_sample reference.

Shapes follow Deformable DETR: value levels 64x64, 32x32, 16x16, 8x8 (S = 5440), 8 heads x 32 channels, 4 points,
batch 2; the encoder queries all 5440 tokens, the decoder 500 queries (`--small`: levels 8x8 .. 1x1 and 85 / 50
queries, a smoke run without the CPU memory measurement). Run from a checkout:
`python benchmarks/bench_ops_msda.py [--devices cpu cuda] [--small]` (CPU float32, plus CUDA float32 / bfloat16 /
float16 when a GPU is present).

Peak memory is the extra memory one forward+backward step needs beyond its inputs:
- CPU: each case runs in a fresh subprocess where glibc serves every block of 64 KiB or more by mmap and unmaps it at
  free (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_), so the resident set follows the live tensors instead of
  the allocator's cache. After the inputs exist and one warm-up step ran, the peak resident set is reset
  (/proc/self/clear_refs), one step runs, and the peak (VmHWM) minus the resident set before the step is reported.
  It counts every page the step touched (tensors, kernel buffers, autograd), not just what torch accounts for.
- CUDA: torch.cuda.max_memory_allocated() minus the memory allocated before the step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from report import format_table  # noqa: E402

from rotated_ddetr.ops import backend, ms_deform_attn, ms_deform_attn_reference  # noqa: E402

BATCH, HEADS, CHANNELS, POINTS = 2, 8, 32, 4
# (levels, {shape name: queries}) of the full benchmark and of the --small smoke run.
SIZES = {
    "full": (((64, 64), (32, 32), (16, 16), (8, 8)), {"encoder": 5440, "decoder": 500}),
    "small": (((8, 8), (4, 4), (2, 2), (1, 1)), {"encoder": 85, "decoder": 50}),
}
IMPLS = {"kernel": ms_deform_attn, "reference": ms_deform_attn_reference}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2**20


def make_inputs(levels: tuple, queries: int, device: str, dtype: torch.dtype, seed: int = 0) -> dict:
    """Leaf inputs of one step: value in `dtype`, locations and weights in float32 (as produced under autocast)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    loc_shape = (BATCH, queries, HEADS, len(levels), POINTS)
    weights = torch.rand(loc_shape, generator=gen)
    return {
        "value": torch.randn(BATCH, int(sizes.sum()), HEADS, CHANNELS, generator=gen).to(device, dtype),
        "spatial_shapes": shapes.to(device),
        "level_start_index": starts.to(device),
        "sampling_locations": torch.rand(*loc_shape, 2, generator=gen).to(device),
        "attention_weights": (weights / weights.sum((-1, -2), keepdim=True)).to(device),
        "grad_output": torch.randn(BATCH, queries, HEADS * CHANNELS, generator=gen).to(device, dtype),
    }


def step(impl: str, inputs: dict) -> None:
    """One forward+backward step; the three input gradients land in .grad and are dropped by the caller."""
    leaves = [inputs[k].requires_grad_() for k in ("value", "sampling_locations", "attention_weights")]
    out = IMPLS[impl](leaves[0], inputs["spatial_shapes"], inputs["level_start_index"], leaves[1], leaves[2])
    out.backward(inputs["grad_output"])


def clear_grads(inputs: dict) -> None:
    for tensor in inputs.values():
        tensor.grad = None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(impl: str, inputs: dict, device: str, budget_s: float = 3.0, max_repeats: int = 20) -> tuple[float, float]:
    """Median forward and forward+backward milliseconds over repeats (after two warm-up steps)."""
    fn = IMPLS[impl]
    args = [inputs[k] for k in ("value", "spatial_shapes", "level_start_index")]
    args += [inputs["sampling_locations"], inputs["attention_weights"]]
    forward, total = [], []
    start = time.perf_counter()
    for repeat in range(max_repeats + 2):
        with torch.no_grad():
            _sync(device)
            t0 = time.perf_counter()
            fn(*args)
            _sync(device)
            t1 = time.perf_counter()
        step(impl, inputs)
        _sync(device)
        t2 = time.perf_counter()
        clear_grads(inputs)
        if repeat >= 2:  # the first steps pay for lazy initialisation
            forward.append((t1 - t0) * 1e3)
            total.append((t2 - t1) * 1e3)
            if len(total) >= 3 and time.perf_counter() - start > budget_s:
                break
    return statistics.median(forward), statistics.median(total)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_cpu_peak_here(size: str, shape: str, impl: str) -> float:
    """In the child: MiB the resident set grew above its pre-step size during one CPU step (see module doc)."""
    levels, shapes = SIZES[size]
    inputs = make_inputs(levels, shapes[shape], "cpu", torch.float32)
    step(impl, inputs)
    clear_grads(inputs)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    step(impl, inputs)
    return (_status_kib("VmHWM") - before) / 1024


def cpu_peak_mib(size: str, shape: str, impl: str) -> float:
    """Extra peak memory of one CPU step, measured in a fresh subprocess (see module doc)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peak-memory-child", size, shape, impl]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def cuda_peak_mib(impl: str, inputs: dict) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(impl, inputs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    clear_grads(inputs)
    return peak / MIB


def _cases(devices: tuple[str, ...], shapes: dict) -> list[tuple[str, str, str]]:
    cases = [("cpu", "float32", shape) for shape in shapes] if "cpu" in devices else []
    if "cuda" in devices and torch.cuda.is_available():
        cases += [("cuda", dtype, shape) for dtype in DTYPES for shape in shapes]
    return cases


def rows(devices: tuple[str, ...] = ("cpu", "cuda"), size: str = "full", budget_s: float = 3.0) -> list[dict]:
    """One row per (device, dtype, shape, impl): forward and forward+backward ms, peak MiB, speed-up vs reference.

    CUDA rows need a GPU (skipped without one); `size` is "full" or "small" (SIZES); `budget_s` bounds each timing.
    """
    table = []
    levels, shapes = SIZES[size]
    tokens = sum(h * w for h, w in levels)
    sizes = f"S{tokens} M{HEADS} D{CHANNELS} L{len(levels)} P{POINTS}"
    for device, dtype, shape in _cases(devices, shapes):
        inputs = make_inputs(levels, shapes[shape], device, DTYPES[dtype])
        kernel_built = backend("ms_deform_attn", device) == "kernel"
        measured = {}
        for impl in IMPLS:
            fwd_ms, fwd_bwd_ms = time_ms(impl, inputs, device, budget_s)
            if device == "cuda":
                peak = cuda_peak_mib(impl, inputs)
            else:  # the fresh-process measurement is skipped for the small smoke run
                peak = cpu_peak_mib(size, shape, impl) if size == "full" else float("nan")
            measured[impl] = (fwd_ms, fwd_bwd_ms, peak)
        ref_ms, ref_peak = measured["reference"][1], measured["reference"][2]
        for impl, (fwd_ms, fwd_bwd_ms, peak) in measured.items():
            table.append(
                {
                    "op": "ms_deform_attn",
                    "shape": f"{shape} B{BATCH} Q{shapes[shape]} {sizes}",
                    "impl": impl if impl == "reference" or kernel_built else "kernel (not built: ran reference)",
                    "device": device,
                    "dtype": dtype,
                    "fwd_ms": round(fwd_ms, 2),
                    "fwd_bwd_ms": round(fwd_bwd_ms, 2),
                    "peak_mem_mb": round(peak, 1),
                    "speedup": round(ref_ms / fwd_bwd_ms, 2),
                    "mem_ratio": round(peak / ref_peak, 3) if ref_peak > 0 else float("nan"),
                }
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu", "cuda"],
                        help="devices to benchmark (cuda rows only with a GPU; default both)")  # fmt: skip
    parser.add_argument("--small", action="store_true", help="tiny shapes: a smoke run of every code path")
    parser.add_argument("--budget-s", type=float, default=3.0, help="seconds of repeats per timing (default 3)")
    parser.add_argument("--peak-memory-child", nargs=3, metavar=("SIZE", "SHAPE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory_child:
        print(json.dumps({"peak_mib": _measure_cpu_peak_here(*args.peak_memory_child)}))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", end="")
    print(f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
    print("fwd_bwd_ms: median of forward+backward steps; speedup and mem_ratio: relative to the reference row\n")
    print(format_table(rows(tuple(args.devices), "small" if args.small else "full", args.budget_s)))


if __name__ == "__main__":
    main()
