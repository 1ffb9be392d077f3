"""Benchmark of the exported model: ONNX Runtime (CPU) against eager PyTorch, parity and tiles/s, at 512 and 1024 px.

python benchmarks/bench_export.py [--checkpoint CKPT | --config CFG] [--sizes 512 1024] [--batch 8] [--repeats 3]
    [--threads N] [--no-append]

Exports the checkpoint's model (or --config's with seeded random weights: the same compute) to ONNX at each size,
then on one batch of synthetic tiles (`data.synthetic.generate_image`) reports: how many tiles' logits and rboxes
from ONNX Runtime are within 1e-4 of eager float32's (compiled op), the largest difference among them, whether each
other tile has two proposal scores within 1e-5 (a near-tie that float rounding reorders: `near_ties`), and tiles/s
of eager float32, eager with autocast "auto" (bf16 where the CPU computes it natively) and ONNX Runtime (float32,
all graph optimisations), the best of --repeats timed runs after a warm-up. Appends the table to
benchmarks/RESULTS.md unless --no-append.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import append_results, format_table  # noqa: E402

from rotated_ddetr.checkpoint import load_model  # noqa: E402
from rotated_ddetr.config import load_config  # noqa: E402
from rotated_ddetr.data.synthetic import generate_image  # noqa: E402
from rotated_ddetr.export import RawDetector, export_onnx  # noqa: E402
from rotated_ddetr.model import build_model  # noqa: E402
from rotated_ddetr.structures import autocast_dtype  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: --config with random weights)")
    parser.add_argument("--config", default="synthetic_tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of both runtimes")
    parser.add_argument("--no-append", action="store_true")
    return parser.parse_args()


def best_time(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def near_ties(model, images: torch.Tensor, gap: float = 1e-5) -> np.ndarray:
    """Per image: whether two of the proposals' top-(k + 1) scores lie within `gap` of each other. Decoder queries
    take a learned embedding by rank (DINO's mixed query selection), so such a pair swapped by float rounding (any
    other runtime or kernel: ONNX Runtime, CUDA, bf16) gives those queries other outputs: a difference of the
    model's, not of the export."""
    captured = {}
    hook = model.proposals.class_head.register_forward_hook(lambda m, i, out: captured.update(logits=out))
    with torch.no_grad():
        RawDetector(model)(images)
    hook.remove()
    top = captured["logits"].amax(-1).topk(model.proposals.num_queries + 1, dim=1).values  # (B, k + 1) decreasing
    return ((top[:, :-1] - top[:, 1:]).amin(1) < gap).numpy()


def measure(model, size: int, args, folder: Path) -> dict:
    """One row: parity and tiles/s at `size`."""
    tiles = np.stack([generate_image(3, i, size)[0][..., ::-1] for i in range(args.batch)])  # BGR -> RGB
    images = torch.from_numpy(tiles.copy()).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    path = export_onnx(model, folder / f"model_{size}.onnx", (size, size))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    raw = RawDetector(model).eval()
    with torch.no_grad():
        logits, rboxes = raw(images)
    ort_logits, ort_rboxes = session.run(None, {"images": images.numpy()})
    diff = np.maximum(np.abs(ort_logits - logits.numpy()).max((1, 2)), np.abs(ort_rboxes - rboxes.numpy()).max((1, 2)))
    ties = near_ties(model, images)
    bf16 = autocast_dtype("auto", torch.device("cpu"))

    def eager(dtype):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                raw(images)

        return run

    fp32 = best_time(eager(None), args.repeats)
    auto = best_time(eager(bf16), args.repeats)
    onnx = best_time(lambda: session.run(None, {"images": images.numpy()}), args.repeats)
    return {
        "tile": size,
        "batch": args.batch,
        "tiles within 1e-4": f"{(diff <= 1e-4).sum()} of {len(diff)}",
        "max |d| of those": f"{diff[diff <= 1e-4].max():.1e}" if (diff <= 1e-4).any() else "-",
        "others: near-tie in top-k": f"{(ties & (diff > 1e-4)).sum()} of {(diff > 1e-4).sum()}",
        "eager fp32 tiles/s": round(args.batch / fp32, 2),
        f"eager auto ({'bf16' if bf16 else 'fp32'}) tiles/s": round(args.batch / auto, 2),
        "ORT fp32 tiles/s": round(args.batch / onnx, 2),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, _, _ = load_model(args.checkpoint)
        source = args.checkpoint
    else:
        torch.manual_seed(0)
        model = build_model(load_config(args.config).model).eval()
        source = f"{args.config} (random weights)"
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(model, size, args, Path(folder)) for size in args.sizes]
    print(format_table(rows))
    if not args.no_append:
        notes = (f"Model: {source}. Synthetic tiles; differences are ONNX Runtime {ort.__version__} vs eager float32 "
                 f"(compiled op); {args.threads} threads; best of {args.repeats} after a warm-up.")  # fmt: skip
        append_results("bench_export.py: ONNX Runtime vs eager PyTorch", rows, notes)


if __name__ == "__main__":
    main()
