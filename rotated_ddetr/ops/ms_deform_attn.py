"""Multi-scale deformable attention (Deformable DETR eq. 3): multi-level values, locations, weights -> features.

Called by the deformable encoder and decoder. Runs the compiled kernel of `rotated_ddetr._C` when one exists for the
inputs' device, otherwise `ms_deform_attn_reference`, its grid_sample twin; `backend("ms_deform_attn", device)` says
which one runs.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rotated_ddetr.ops._extension import extension_loaded, has_kernel

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "ms_deform_attn_static"]

_VALUE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
# Resolved once at import (the kernels register when `_C` loads): a constant torch.compile can trace through.
_KERNEL_DEVICES = frozenset(device for device in ("cpu", "cuda") if has_kernel("ms_deform_attn", device))


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
) -> Tensor:
    """Multi-scale deformable attention, the sum of eq. 3 of Deformable DETR (Zhu et al., ICLR 2021).

    For every batch b, query q and head m: out[b, q, m*D:(m+1)*D] = sum over levels l and points p of
    attention_weights[b, q, m, l, p] * value_l[b, :, m, :] read at sampling_locations[b, q, m, l, p]. A location
    (x, y) reads level l at pixel (x * W_l - 0.5, y * H_l - 0.5) with bilinear interpolation and zeros outside the
    map, exactly `grid_sample(mode="bilinear", align_corners=False, padding_mode="zeros")`.

    Sampling positions and weights are computed in float32 (float64 when value is float64) whatever their incoming
    dtype, so positions keep their precision under autocast; sums accumulate in float32 (float64). On CPU, float16 /
    bfloat16 values are upcast to float32 for the kernel. Differentiable in value, sampling_locations and
    attention_weights; each gradient comes back in its input's dtype.

    Args:
        value: (B, S, M, D) float16/bfloat16/float32/float64, the L levels' feature maps flattened row-major and
            concatenated along S, split into M heads of D channels.
        spatial_shapes: (L, 2) integer, [H_l, W_l] of each level in tokens; sum of H_l * W_l must equal S.
        level_start_index: (L,) integer, first token of each level on the S axis: (0, H_0 * W_0, ...).
        sampling_locations: (B, Q, M, L, P, 2) floating, (x, y) normalised to [0, 1] over each level's width and
            height (locations outside read zeros).
        attention_weights: (B, Q, M, L, P) floating, usually softmax-normalised over (L, P) per head.
        im2col_step: batch chunk of one CUDA kernel launch (bounds the float32 gradient buffer of float16/bfloat16
            backward); positive; does not change the result.

    Returns:
        (B, Q, M * D) in value's dtype, heads concatenated along the last axis.

    Raises:
        ValueError: shapes, devices or the level table are inconsistent, or im2col_step is not positive. The CUDA
            kernel checks the level table's values on the GPU without waiting for it (no host sync): a bad table
            there fails the stream with a device-side assert, raised at the next synchronising call, instead.
        TypeError: a dtype is not supported.
    """
    spatial_shapes, level_start_index = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
    )
    if value.device.type not in _KERNEL_DEVICES:
        return ms_deform_attn_reference(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )
    accumulate = _accumulation_dtype(value.dtype)
    # Only the CUDA kernel reads float16 / bfloat16 directly; the CPU kernel computes in float32 / float64.
    kernel_dtype = value.dtype if value.device.type == "cuda" else torch.promote_types(value.dtype, torch.float32)
    out = torch.ops.rotated_ddetr.ms_deform_attn(
        value.to(kernel_dtype).contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.to(accumulate).contiguous(),
        attention_weights.to(accumulate).contiguous(),
        im2col_step,
    )
    return out.to(value.dtype)


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
) -> Tensor:
    """Pure-PyTorch twin of `ms_deform_attn` built on `F.grid_sample`, same arguments, result and dtype rules.

    One grid_sample per level on (B*M, D, H_l, W_l) maps, then the weighted sum over levels and points. Runs on
    any device and is differentiable through autograd, at the cost of (B*M, D, Q, L*P) intermediates: several times
    the memory of the kernel. `im2col_step` is checked and otherwise ignored.

    Args:
        value: (B, S, M, D) floating, levels flattened and concatenated along S.
        spatial_shapes: (L, 2) integer [H_l, W_l].
        level_start_index: (L,) integer, first token of each level on S.
        sampling_locations: (B, Q, M, L, P, 2) floating (x, y) in [0, 1].
        attention_weights: (B, Q, M, L, P) floating.
        im2col_step: positive integer (kept for signature parity).

    Returns:
        (B, Q, M * D) in value's dtype, computed in float32 (float64 for float64 values).

    Raises:
        ValueError: shapes, devices or the level table are inconsistent, or im2col_step is not positive.
        TypeError: a dtype is not supported.
    """
    spatial_shapes, level_start_index = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
    )
    levels = _read_levels(spatial_shapes, level_start_index, value.shape[1])
    return ms_deform_attn_static([(height, width) for height, width, _ in levels], value, sampling_locations,
                                 attention_weights)  # fmt: skip


def ms_deform_attn_static(
    level_shapes: Sequence[tuple[int, int]], value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """`ms_deform_attn_reference` with the level table as Python ints and no checks: the form that tracing
    (ONNX export, `torch.export` without the compiled op) needs, since it reads no tensor back. The model's
    `reference_ops` switch runs this.

    Args:
        level_shapes: ((H_l, W_l), ...) of each level, in the order they are concatenated on value's S axis.
        value, sampling_locations, attention_weights: as `ms_deform_attn`.

    Returns:
        (B, Q, M * D) in value's dtype, computed in float32 (float64 for float64 values).
    """
    accumulate = _accumulation_dtype(value.dtype)
    batch, _, heads, channels = value.shape
    _, queries, _, num_levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations.to(accumulate) - 1  # [0, 1] -> grid_sample's [-1, 1]
    sampled, start = [], 0
    for level, (height, width) in enumerate(level_shapes):
        # (B, H*W, M, D) -> (B, M, D, H*W) -> (B*M, D, H, W)
        value_l = value[:, start : start + height * width].to(accumulate).permute(0, 2, 3, 1)
        value_l = value_l.reshape(batch * heads, channels, height, width)
        start += height * width
        # (B, Q, M, P, 2) -> (B, M, Q, P, 2) -> (B*M, Q, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (B*M, D, Q, P): bilinear, zeros outside, pixel centres at (i + 0.5) / size
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B, Q, M, L, P) -> (B, M, Q, L, P) -> (B*M, 1, Q, L*P)
    weights = attention_weights.to(accumulate).transpose(1, 2).reshape(batch * heads, 1, queries, num_levels * points)
    # (B*M, D, Q, L, P) -> (B*M, D, Q, L*P), weighted sum over levels and points (eq. 3) -> (B*M, D, Q)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    # (B*M, D, Q) -> (B, M*D, Q) -> (B, Q, M*D)
    return out.view(batch, heads * channels, queries).transpose(1, 2).contiguous().to(value.dtype)


def _accumulation_dtype(value_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if value_dtype == torch.float64 else torch.float32


def _check_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> tuple[Tensor, Tensor]:
    """Checks shapes, dtypes and devices (metadata only: no device sync, traceable by torch.compile).

    The level table's values are checked where they are read: by the CPU kernel (TORCH_CHECK on the host), by the
    CUDA kernel (an asynchronous assert on the GPU, no host sync), or by `_read_levels` for the reference.
    Returns spatial_shapes and level_start_index as int64.
    """
    tensors = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a Tensor, got {type(tensor).__name__}")
        if tensor.device != value.device:
            raise ValueError(
                f"ms_deform_attn: all inputs must be on value's device {value.device}, got {name} on {tensor.device}"
            )
    if value.dtype not in _VALUE_DTYPES:
        raise TypeError(f"ms_deform_attn: value must be float32, float64, float16 or bfloat16, got {value.dtype}")
    for name in ("sampling_locations", "attention_weights"):
        if not tensors[name].dtype.is_floating_point:
            raise TypeError(f"ms_deform_attn: {name} must be floating point, got {tensors[name].dtype}")
    for name in ("spatial_shapes", "level_start_index"):
        if tensors[name].dtype not in _INDEX_DTYPES:
            raise TypeError(f"ms_deform_attn: {name} must be an integer tensor (int64), got {tensors[name].dtype}")
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if isinstance(im2col_step, bool) or not isinstance(im2col_step, int) or im2col_step <= 0:
        raise ValueError(f"ms_deform_attn: im2col_step must be a positive int, got {im2col_step!r}")
    return spatial_shapes.long(), level_start_index.long()


def _check_shapes(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (B, S, M, D), got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2 or spatial_shapes.shape[0] == 0:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must be (L, 2) rows of [H, W] with L >= 1, "
            f"got shape {tuple(spatial_shapes.shape)}"
        )
    num_levels = spatial_shapes.shape[0]
    if tuple(level_start_index.shape) != (num_levels,):
        raise ValueError(
            f"ms_deform_attn: level_start_index must be (L,) with L = {num_levels} as in spatial_shapes, "
            f"got shape {tuple(level_start_index.shape)}"
        )
    loc_shape = tuple(sampling_locations.shape)
    if len(loc_shape) != 6 or loc_shape[5] != 2:
        raise ValueError(f"ms_deform_attn: sampling_locations must be (B, Q, M, L, P, 2), got shape {loc_shape}")
    batch, _, heads, _ = value.shape
    if (loc_shape[0], loc_shape[2], loc_shape[3]) != (batch, heads, num_levels):
        raise ValueError(
            f"ms_deform_attn: sampling_locations (B, Q, M, L, P, 2) = {loc_shape} does not match value "
            f"(B, S, M, D) = {tuple(value.shape)} and L = {num_levels} levels"
        )
    if tuple(attention_weights.shape) != loc_shape[:5]:
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (B, Q, M, L, P) = {loc_shape[:5]} like sampling_locations, "
            f"got shape {tuple(attention_weights.shape)}"
        )


def _read_levels(spatial_shapes: Tensor, level_start_index: Tensor, tokens: int) -> list[tuple[int, int, int]]:
    """[(H, W, start)] of each level, checked to describe exactly value's S = `tokens` tokens in order."""
    levels = []
    total = 0
    starts = level_start_index.tolist()
    for level, ((height, width), start) in enumerate(zip(spatial_shapes.tolist(), starts, strict=True)):
        if height <= 0 or width <= 0 or height * width > tokens:
            raise ValueError(
                f"ms_deform_attn: spatial_shapes[{level}] = [{height}, {width}] must be positive with H*W at most "
                f"S = {tokens}"
            )
        if start != total:
            raise ValueError(
                f"ms_deform_attn: level_start_index[{level}] = {start} but the levels before it hold {total} tokens "
                f"(it must be the running sum of H*W)"
            )
        total += height * width
        levels.append((height, width, start))
    if total != tokens:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes describe {total} tokens (sum of H*W) but value has S = {tokens}"
        )
    return levels


def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.im2col_step = im2col_step


def _backward(ctx, grad_output: Tensor) -> tuple:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.rotated_ddetr.ms_deform_attn_backward(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        grad_output.contiguous(),
        ctx.im2col_step,
    )
    return grad_value, None, None, grad_locations, grad_weights, None


def _fake_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> Tensor:
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    batch, _, heads, channels = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * channels))


def _fake_backward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
    im2col_step: int,
) -> tuple[Tensor, Tensor, Tensor]:
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


if extension_loaded():
    # Fake (meta) implementations let torch.compile / FakeTensor trace the ops; autograd wraps the forward op.
    torch.library.register_fake("rotated_ddetr::ms_deform_attn", _fake_forward)
    torch.library.register_fake("rotated_ddetr::ms_deform_attn_backward", _fake_backward)
    torch.library.register_autograd("rotated_ddetr::ms_deform_attn", _backward, setup_context=_setup_context)
