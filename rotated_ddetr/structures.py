"""The ground truth every layer passes around: `Target`, one image's labels and normalised rboxes with its size.

Made by `data/` (datasets, batching), read by `model/` (query denoising) and `training/` (matcher, assigner,
criterion). Box geometry and the pixel <-> normalised conversion live in `rotated_ddetr.boxes`.

Image sizes: every image size in the package is (height, width) in pixels, the order of a tensor's trailing
dimensions (H, W) and of numpy's `shape[:2]`; one image's is a `(height, width)` tuple named `image_size`, a batch's
a (B, 2) tensor named `image_sizes`. Points, offsets and ratios that multiply (x, y) coordinates stay in (x, y) order
and say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Mixed-precision modes of the configs (`train.amp`) and tools (`--amp`) -> the autocast dtype (None: float32);
# "auto" is resolved per device by `autocast_dtype`.
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("auto", *AMP_DTYPES)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: CUDA GPUs with bf16 (Ampere and later), CPUs with AVX-512 BF16
    or AMX (on a 2-core AVX-512 BF16 CPU a training step of the tiny config runs 1.7x faster in bf16 autocast than in
    float32; without such instructions bf16 would run in software, so "auto" keeps float32 there)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(probe is not None and probe() for probe in probes)
    return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an amp mode on `device` (None: float32). "auto" is bf16 where `native_bf16`, else
    float32; the others as `AMP_DTYPES`.

    Raises:
        ValueError: an unknown mode.
    """
    if amp == "auto":
        return torch.bfloat16 if native_bf16(torch.device(device)) else None
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return AMP_DTYPES[amp]


@dataclass
class Target:
    """The ground truth of one image.

    Attributes:
        labels: (N,) int64 class indices in [0, num_classes).
        rboxes: (N, 5) float normalised rboxes (cx, w by the width, cy, h by the height; angle in radians), see
            `rotated_ddetr.boxes.normalize_rboxes`.
        image_size: (height, width) of the image's valid area in pixels: the frame of the normalised rboxes.
        num_dropped: objects of the image's labels that augmentation removed (centre moved outside the image), for
            the training loop's count.
    """

    labels: torch.Tensor
    rboxes: torch.Tensor
    image_size: tuple[int, int]
    num_dropped: int = 0

    def __post_init__(self) -> None:
        if self.labels.dim() != 1 or self.rboxes.shape != (len(self.labels), 5):
            raise ValueError(
                f"Target needs labels (N,) and rboxes (N, 5), got {tuple(self.labels.shape)} and "
                f"{tuple(self.rboxes.shape)}"
            )
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        """The number of objects N."""
        return self.labels.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Target:
        """The target with its tensors on `device` (`image_size` stays a tuple)."""
        return Target(
            self.labels.to(device, non_blocking=non_blocking),
            self.rboxes.to(device, non_blocking=non_blocking),
            self.image_size,
            self.num_dropped,
        )


def stack_image_sizes(targets: list[Target], like: torch.Tensor, repeats: list[int] | None = None) -> torch.Tensor:
    """The targets' image sizes as one tensor on `like`'s device and in its dtype.

    Args:
        targets: B targets.
        like: a tensor giving the device and dtype.
        repeats: B counts: image b's size is repeated `repeats[b]` times (rows of concatenated per-image values).

    Returns:
        (B, 2), or (sum(repeats), 2) with `repeats`, (height, width) in pixels.
    """
    sizes = torch.tensor([t.image_size for t in targets], dtype=torch.float64).reshape(-1, 2)
    if repeats is not None:
        sizes = sizes.repeat_interleave(torch.tensor(repeats, dtype=torch.int64), dim=0)  # on the host: no sync
    return sizes.to(device=like.device, dtype=like.dtype)
