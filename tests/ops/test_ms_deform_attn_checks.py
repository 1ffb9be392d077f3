"""ms_deform_attn's level-table checks: exact on CPU (messages naming the entry), asynchronous on CUDA (no host
sync; a bad table fails the stream with a device-side assert)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rotated_ddetr.ops import ms_deform_attn, ms_deform_attn_reference

from .test_ms_deform_attn import (
    ODD_LEVELS,
    _cuda,
    assert_all_close,
    forward_backward,
    make_inputs,
    needs_cpu_kernel,
    needs_cuda_kernel,
)


def _bad_level_tables():
    """(spatial_shapes, level_start_index, S) tables of ODD_LEVELS that must fail, each for one reason."""
    shapes, starts = torch.tensor(ODD_LEVELS), torch.tensor([0, 35, 36, 48])
    return {
        "sum below S": (shapes, starts, 67),
        "sum above S": (shapes, starts, 65),
        "start off by one": (shapes, starts + torch.tensor([0, 0, 1, 0]), 66),
        "starts swapped": (shapes, torch.tensor([0, 36, 35, 48]), 66),
        "zero height": (shapes * torch.tensor([[1, 1], [1, 1], [0, 1], [1, 1]]), torch.tensor([0, 35, 36, 36]), 54),
        "negative width": (torch.tensor([[2, -3], [2, 3]]), torch.tensor([0, -6]), 0),
        # H*W = 2^64 wraps to 0 in int64: the running sums alone would accept it.
        "product overflow": (torch.tensor([[2**32, 2**32], [1, 1]]), torch.tensor([0, 0]), 1),
    }


@needs_cpu_kernel
def test_device_side_level_check_on_cpu_tensors():
    # The check the CUDA kernels enqueue (at::_assert_async, no host sync), run here on CPU where it fails at once.
    check = torch.ops.rotated_ddetr._ms_deform_attn_assert_levels
    check(torch.tensor(ODD_LEVELS), torch.tensor([0, 35, 36, 48]), 66)
    check(torch.tensor([[1, 1]]), torch.tensor([0]), 1)
    for name, (shapes, starts, tokens) in _bad_level_tables().items():
        with pytest.raises(RuntimeError, match="the level table does not describe value's S tokens"):
            check(shapes, starts, tokens)
            pytest.fail(f"accepted: {name}")


@needs_cpu_kernel
def test_cpu_kernel_rejects_the_bad_level_tables():
    for name, (shapes, starts, tokens) in _bad_level_tables().items():
        value = torch.zeros(1, tokens, 1, 2)
        locations, weights = torch.zeros(1, 2, 1, len(shapes), 1, 2), torch.zeros(1, 2, 1, len(shapes), 1)
        with pytest.raises(ValueError, match="ms_deform_attn: (spatial_shapes|level_start_index)"):
            torch.ops.rotated_ddetr.ms_deform_attn(value, shapes, starts, locations, weights, 1)
            pytest.fail(f"accepted: {name}")


@pytest.mark.cuda
@needs_cuda_kernel
def test_cuda_forward_and_backward_never_sync():
    # The inputs are checked from metadata and by an asynchronous device assert: no device-to-host copy or stream
    # synchronisation, which set_sync_debug_mode("error") turns into an exception.
    inputs = _cuda(make_inputs(ODD_LEVELS, 2, 50, 4, 8, 4, torch.float32))
    leaves = [t.detach().clone().requires_grad_() for t in (inputs[0], inputs[3], inputs[4])]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ms_deform_attn(leaves[0], inputs[1], inputs[2], leaves[1], leaves[2])
        grads = torch.autograd.grad(out, leaves, inputs[5])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = forward_backward(ms_deform_attn_reference, *inputs)
    assert_all_close((out.detach(), grads), expected, rtol=1e-5, atol=5e-5)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("case", ["start off by one", "sum above S", "product overflow"])
def test_cuda_bad_level_table_fails_the_stream(case):
    # A device-side assert poisons the CUDA context, hence a fresh interpreter per case.
    script = textwrap.dedent(f"""
        import torch
        from tests.ops.test_ms_deform_attn_checks import _bad_level_tables
        shapes, starts, tokens = (t.cuda() if torch.is_tensor(t) else t for t in _bad_level_tables()[{case!r}])
        locations = torch.zeros(1, 2, 1, len(shapes), 1, 2, device="cuda")
        weights = torch.zeros(1, 2, 1, len(shapes), 1, device="cuda")
        value = torch.zeros(1, tokens, 1, 2, device="cuda")
        torch.ops.rotated_ddetr.ms_deform_attn(value, shapes, starts, locations, weights, 1)
        torch.cuda.synchronize()
        print("no error")
    """)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no error" not in result.stdout, result.stdout
    assert "device-side assert" in result.stderr, result.stderr[-2000:]
