"""The only module that imports the compiled extension `rotated_ddetr._C`.

Tells the op dispatchers whether a compiled kernel exists for a device; they use the pure-PyTorch twin otherwise.
"""

import functools

import torch

try:
    from rotated_ddetr import _C
except ImportError as error:  # not built (ROTATED_DDETR_NO_EXT=1, or a failed build): twins are used
    _C = None
    IMPORT_ERROR: str | None = f"{type(error).__name__}: {error}"
else:
    IMPORT_ERROR = None

OPS = ("box_iou_rotated", "nms_rotated", "ms_deform_attn", "ms_deform_attn_backward")


def extension_loaded() -> bool:
    """True when `rotated_ddetr._C` imported (its ops are registered under torch.ops.rotated_ddetr)."""
    return _C is not None


def cuda_archs() -> str:
    """The CUDA architectures the extension was compiled for ("" without CUDA kernels)."""
    return _C.cuda_archs if _C is not None else ""


@functools.cache
def has_kernel(op: str, device_type: str) -> bool:
    """Whether the compiled op `op` (a name in OPS) has a kernel for `device_type` ("cpu", "cuda", ...)."""
    if _C is None:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"rotated_ddetr::{op}", key)


def backend(op: str, device: torch.device | str) -> str:
    """ "kernel" when `op` runs compiled on `device`, "reference" when its pure-PyTorch twin runs instead."""
    return "kernel" if has_kernel(op, torch.device(device).type) else "reference"
