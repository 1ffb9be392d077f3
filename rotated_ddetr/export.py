"""Export: a trained detector -> ONNX (standard operators only), a `torch.export` program (.pt2) or release weights
(safetensors + config JSON).

Every exported graph computes `RawDetector`: float (B, 3, H, W) RGB images in [0, 1] -> (logits (B, Q, C), rboxes
(B, Q, 5) normalised) of the last decoder layer, for images of exactly the export size (no padding mask) and any
batch. Post-processing (top-k, rotated NMS, pixels) stays outside the graph: `postprocess_raw` does it for the
outputs of any of them.

- ONNX: the deformable attention runs its pure-PyTorch twin (`model.reference_ops`), so the sampling becomes ONNX
  GridSample and ONNX Runtime needs no custom op. Written by the `torch.export`-based exporter (opset >= 18) without
  onnxscript's graph optimiser, which mis-rewrites this graph for a batch other than the traced one (measured: the
  third image of a batch of 3 off by 0.34 in its logits); ONNX Runtime optimises the graph when it loads it.
- pt2: `torch.export` keeps the compiled op as the custom op `rotated_ddetr::ms_deform_attn` (its fake
  implementation lets it trace); `torch.export.load` needs `import rotated_ddetr` first, so that the op is registered.
  The program holds the device it was exported on.
- safetensors: `checkpoint.save_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from rotated_ddetr.checkpoint import save_weights
from rotated_ddetr.config import Config
from rotated_ddetr.fileio import atomic_open
from rotated_ddetr.model import Detector, reference_ops

FORMATS = ("onnx", "pt2", "safetensors")
MIN_OPSET = 18  # the torch.export-based ONNX exporter's own opset; GridSample itself needs 16
INPUT_NAMES, OUTPUT_NAMES = ["images"], ["logits", "rboxes"]
_TRACE_BATCH = 2  # a traced batch of 1 would be specialised to 1


class ExportError(ValueError):
    """A model or option that cannot be exported (the message says why)."""


class RawDetector(nn.Module):
    """`Detector` as the graph that exports: images -> (logits, rboxes) of the last decoder layer.

    Args:
        model: the detector (eval mode).
    """

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) float RGB in [0, 1], unpadded -> logits (B, Q, C), normalised rboxes (B, Q, 5)."""
        outputs = self.model(images)
        return outputs.logits[-1], outputs.rboxes[-1]


def check_export_options(model: Detector, cfg: Config, image_size: Sequence[int], opset: int | None = None) -> None:
    """Refuses what cannot be exported, before any tracing.

    Raises:
        ExportError: image_size is not two positive multiples of the model's size divisor; the config runs rotated
            NMS inside the model (`model.proposal_nms_iou` > 0: a data-dependent loop no graph holds); opset below
            `MIN_OPSET`.
    """
    divisor = model.size_divisor
    if len(image_size) != 2 or any(int(side) < divisor or int(side) % divisor for side in image_size):
        raise ExportError(f"--image-size must be two multiples of {divisor} (the model's largest stride), "
                          f"got {tuple(image_size)}")  # fmt: skip
    if cfg.model.two_stage and cfg.model.proposal_nms_iou > 0:
        raise ExportError(f"model.proposal_nms_iou = {cfg.model.proposal_nms_iou}: the proposals' rotated NMS is "
                          "a data-dependent loop no exported graph holds; export a model trained with 0")  # fmt: skip
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET} (the exporter's own opset; ONNX's version converter "
                          f"cannot lower this graph), got {opset}")  # fmt: skip


def _example(model: Detector, image_size: Sequence[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.rand(_TRACE_BATCH, 3, *map(int, image_size), generator=torch.Generator().manual_seed(0)).to(device)


def _batch_dim() -> dict:
    return {"images": {0: torch.export.Dim("batch", min=1, max=1024)}}


def export_onnx(model: Detector, path: str | os.PathLike, image_size: Sequence[int], opset: int = MIN_OPSET) -> Path:
    """Writes `RawDetector(model)` as ONNX (input "images" (batch, 3, H, W), outputs "logits", "rboxes"), checked
    by `onnx.checker`, atomically.

    Raises:
        ExportError: the exporter wrote another opset than `opset`.
        ImportError: onnx or onnxscript is missing (`pip install rotated_ddetr[export]`).
    """
    import onnx  # optional: only the export needs it

    raw = RawDetector(model).eval()
    with reference_ops(model), torch.no_grad():
        program = torch.onnx.export(raw, (_example(model, image_size),), input_names=INPUT_NAMES,
                                    output_names=OUTPUT_NAMES, opset_version=opset, dynamic_shapes=_batch_dim(),
                                    dynamo=True, optimize=False, verbose=False)  # fmt: skip
    proto = program.model_proto
    written = {entry.domain: entry.version for entry in proto.opset_import}.get("", None)
    if written != opset:
        raise ExportError(f"asked for ONNX opset {opset}, the exporter could only write opset {written}")
    onnx.checker.check_model(proto, full_check=True)
    with atomic_open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return Path(path)


def export_pt2(model: Detector, path: str | os.PathLike, image_size: Sequence[int]) -> Path:
    """Writes `torch.export.export(RawDetector(model))` with a dynamic batch to `path` (`torch.export.save`),
    atomically; the compiled op stays in it as `rotated_ddetr::ms_deform_attn` where it is built."""
    raw = RawDetector(model).eval()
    with torch.no_grad():
        program = torch.export.export(raw, (_example(model, image_size),), dynamic_shapes=_batch_dim())
    with atomic_open(path, "wb") as f:
        torch.export.save(program, f)
    return Path(path)


def export_model(
    model: Detector,
    cfg: Config,
    classes: Sequence[str],
    fmt: str,
    out: str | os.PathLike,
    *,
    image_size: Sequence[int] | None = None,
    opset: int = MIN_OPSET,
) -> Path:
    """Exports a detector to `fmt` ("onnx", "pt2", "safetensors") at `out`, traced on the model's device (pt2
    programs keep it).

    Args:
        model, cfg, classes: the detector, its resolved config and class names (`checkpoint.load_model`).
        fmt: one of FORMATS.
        out: the file to write (safetensors: also its `.json` beside it).
        image_size: (H, W) of the exported graph's input; default `default_image_size`.
        opset: ONNX opset (>= MIN_OPSET).

    Returns:
        The written file.

    Raises:
        ExportError: an unknown format or an option that cannot be exported (`check_export_options`).
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "safetensors":
        save_weights(out, model, cfg, classes)
        return Path(out)
    size = tuple(image_size) if image_size is not None else default_image_size(cfg, model.size_divisor)
    check_export_options(model, cfg, size, opset if fmt == "onnx" else None)
    if fmt == "onnx":
        return export_onnx(model, out, size, opset)
    return export_pt2(model, out, size)


def default_image_size(cfg: Config, divisor: int) -> tuple[int, int]:
    """The export size when none is given: a 1024-px tile (the split tool's and `tiled_predict`'s default) at the
    model's input scale (`data.scale`), rounded up to a multiple of `divisor`."""
    side = -(-round(1024 * cfg.data.scale) // divisor) * divisor
    return (side, side)
