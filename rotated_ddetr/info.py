"""`python -m rotated_ddetr.info`: versions, whether the compiled extension is built, and where each op has a kernel.

Paste its output into bug reports.
"""

import platform

import torch

from rotated_ddetr import __version__
from rotated_ddetr.ops import _extension


def describe() -> str:
    """A multi-line report of the environment and of the compiled ops."""
    try:
        import torchvision

        tv_version = torchvision.__version__
    except ImportError as error:
        tv_version = f"not importable ({error})"
    cuda = "not available"
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        cuda = f"{torch.cuda.device_count()} device(s): {', '.join(sorted(names))}"
    lines = [
        f"rotated_ddetr  {__version__}",
        f"python         {platform.python_version()} ({platform.machine()})",
        f"torch          {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}; CUDA at run time: {cuda})",
        f"torchvision    {tv_version}",
    ]
    if _extension.extension_loaded():
        archs = _extension.cuda_archs() or "none (CPU-only build)"
        lines.append(f"extension      rotated_ddetr._C built; CUDA archs: {archs}")
    else:
        lines.append(f"extension      not built, pure-PyTorch twins in use ({_extension.IMPORT_ERROR})")
    lines.append("op kernels     (reference = pure-PyTorch twin)")
    for op in _extension.OPS:
        devices = [dev for dev in ("cpu", "cuda") if _extension.has_kernel(op, dev)]
        lines.append(f"  {op:<24} {', '.join(devices) if devices else 'reference only'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
