"""ms_deform_attn: compiled kernels (CPU, CUDA) against the grid_sample twin, hand-computed cases, validation."""

import pytest
import torch
import torch.nn.functional as F

from rotated_ddetr.ops import backend, has_kernel, ms_deform_attn, ms_deform_attn_reference

needs_cpu_kernel = pytest.mark.skipif(not has_kernel("ms_deform_attn", "cpu"), reason="extension not built")
# Odd sizes, a 1x1 level and a 2x9 strip; locations reach 25% beyond [0, 1] on every side, so many read zeros.
ODD_LEVELS = [(7, 5), (1, 1), (3, 4), (2, 9)]


def make_inputs(levels, batch, queries, heads, channels, points, dtype, device="cpu", seed=0, margin=0.25):
    """Random (value, spatial_shapes, level_start_index, locations, weights, grad_output) for `levels` [(H, W)]."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen, dtype=dtype)
    loc_shape = (batch, queries, heads, len(levels), points)
    locations = torch.rand(*loc_shape, 2, generator=gen, dtype=dtype) * (1 + 2 * margin) - margin
    weights = torch.rand(*loc_shape, generator=gen, dtype=dtype)
    grad_output = torch.randn(batch, queries, heads * channels, generator=gen, dtype=dtype)
    tensors = (value, shapes, starts, locations, weights, grad_output)
    return tuple(t.to(device) for t in tensors)


def forward_backward(fn, value, shapes, starts, locations, weights, grad_output, im2col_step=64):
    """fn's output and its gradients w.r.t. (value, locations, weights) for the given grad_output."""
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = fn(leaves[0], shapes, starts, leaves[1], leaves[2], im2col_step)
    grads = torch.autograd.grad(out, leaves, grad_output)
    return out.detach(), grads


def assert_all_close(got, expected, rtol, atol):
    out, grads = got
    out_ref, grads_ref = expected
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol)
    for name, grad, grad_ref in zip(("value", "locations", "weights"), grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}")


@needs_cpu_kernel
def test_backend_is_the_kernel_on_cpu():
    assert backend("ms_deform_attn", "cpu") == "kernel"


@needs_cpu_kernel
@pytest.mark.parametrize("points", [1, 3])
def test_cpu_kernel_matches_reference_float64(points):
    # Batch 5 with im2col_step 2 covers the chunking argument (chunks of 2, 2, 1 on CUDA).
    inputs = make_inputs(ODD_LEVELS, batch=5, queries=13, heads=3, channels=5, points=points, dtype=torch.float64)
    got = forward_backward(ms_deform_attn, *inputs, im2col_step=2)
    expected = forward_backward(ms_deform_attn_reference, *inputs)
    assert got[0].abs().max() > 0.1  # not trivially zero
    assert_all_close(got, expected, rtol=1e-8, atol=1e-8)


@needs_cpu_kernel
def test_cpu_kernel_matches_reference_float32():
    inputs = make_inputs([(16, 12), (8, 6), (4, 3), (1, 1)], 2, 40, 4, 8, 4, torch.float32, seed=1)
    got = forward_backward(ms_deform_attn, *inputs)
    expected = forward_backward(ms_deform_attn_reference, *inputs)
    # float32 rounding of sums of 16 samples x 8 channels; location gradients carry a factor W or H (up to 16).
    assert_all_close(got, expected, rtol=1e-5, atol=5e-5)


@needs_cpu_kernel
@pytest.mark.slow
def test_cpu_kernel_matches_reference_float64_encoder_shape():
    # The encoder of Deformable DETR at a reduced input: 4 levels, 8 heads x 32 channels, queries = all tokens.
    inputs = make_inputs([(32, 32), (16, 16), (8, 8), (4, 4)], 2, 1360, 8, 32, 4, torch.float64, margin=0.05)
    got = forward_backward(ms_deform_attn, *inputs)
    expected = forward_backward(ms_deform_attn_reference, *inputs)
    assert_all_close(got, expected, rtol=1e-8, atol=1e-8)


@needs_cpu_kernel
def test_cpu_kernel_gradcheck():
    value, shapes, starts, locations, weights, _ = make_inputs([(3, 2), (1, 1), (2, 3)], 2, 3, 2, 3, 2, torch.float64)
    leaves = [t.requires_grad_() for t in (value, locations, weights)]

    def fn(v, loc, att):
        return ms_deform_attn(v, shapes, starts, loc, att, 1)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@needs_cpu_kernel
def test_opcheck_forward_and_backward_ops():
    value, shapes, starts, locations, weights, grad_output = make_inputs([(3, 2), (2, 2)], 2, 3, 2, 4, 2, torch.float32)
    value.requires_grad_()
    locations.requires_grad_()
    weights.requires_grad_()
    torch.library.opcheck(
        torch.ops.rotated_ddetr.ms_deform_attn.default, (value, shapes, starts, locations, weights, 2)
    )
    args = (value.detach(), shapes, starts, locations.detach(), weights.detach(), grad_output, 2)
    torch.library.opcheck(torch.ops.rotated_ddetr.ms_deform_attn_backward.default, args)


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_hand_computed_bilinear(fn):
    # One level H=2, W=3 holding 1 2 3 / 4 5 6 (token y*3 + x), one head, one channel, four points of weight 2, at
    # pixels (1.25, 0.5): between 2, 3, 5, 6 -> 3.75; (2.5, 0.75): 1/8 of 3 + 3/8 of 6 (right column outside)
    # -> 2.625; (-0.5, -0.5), i.e. location (0, 0): a quarter of 1 -> 0.25; (5, 5): outside -> 0.
    value = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 6, 1, 1).requires_grad_()
    shapes, starts = torch.tensor([[2, 3]]), torch.tensor([0])
    pixels = torch.tensor([[1.25, 0.5], [2.5, 0.75], [-0.5, -0.5], [5.0, 5.0]], dtype=torch.float64)
    locations = ((pixels + 0.5) / torch.tensor([3.0, 2.0], dtype=torch.float64)).view(1, 1, 1, 1, 4, 2)
    locations.requires_grad_()
    weights = torch.full((1, 1, 1, 1, 4), 2.0, dtype=torch.float64, requires_grad=True)
    out = fn(value, shapes, starts, locations, weights)
    torch.testing.assert_close(out, torch.tensor([[[2 * (3.75 + 2.625 + 0.25)]]], dtype=torch.float64))
    out.sum().backward()
    # d/dweight = the sampled values.
    torch.testing.assert_close(weights.grad.flatten(), torch.tensor([3.75, 2.625, 0.25, 0.0], dtype=torch.float64))
    # d/dx = weight * W * (d sample / d pixel x), d/dy = weight * H * (d sample / d pixel y); e.g. point 1:
    # d sample / d pixel x = (3 - 2)/2 + (6 - 5)/2 = 1, d sample / d pixel y = 3/4 * (5 - 2) + 1/4 * (6 - 3) = 3.
    expected_loc = torch.tensor([[6 * 1.0, 4 * 3.0], [6 * -5.25, 4 * 1.5], [6 * 0.5, 4 * 0.5], [0.0, 0.0]])
    torch.testing.assert_close(locations.grad.view(4, 2), expected_loc.double())
    # Each point adds 2 * (its bilinear weight) to the values it read.
    expected_value = torch.tensor([0.5, 0.75, 0.25 + 0.25, 0.0, 0.75, 0.25 + 0.75], dtype=torch.float64)
    torch.testing.assert_close(value.grad.flatten(), expected_value)


def _set(index, new):
    def edit(args):
        args = list(args)
        args[index] = new(args[index])
        return args

    return edit


# (edit of the arguments, exception, message pattern); the same messages come from Python and from TORCH_CHECK.
SHAPE_CASES = {
    "value_3d": (_set(0, lambda v: v[0]), ValueError, r"value must be \(B, S, M, D\)"),
    "levels_sum": (_set(1, lambda s: s - torch.tensor([[0, 0], [0, 0], [0, 0], [0, 1]])), ValueError, r"sum of H\*W"),
    "start_index": (
        _set(2, lambda s: s + torch.tensor([0, 0, 1, 0])),
        ValueError,
        r"level_start_index\[2\] = 37 but the levels before it hold 36",
    ),
    "start_shape": (_set(2, lambda s: s[:3]), ValueError, r"level_start_index must be \(L,\)"),
    "zero_height": (_set(1, lambda s: s * torch.tensor([[1, 1], [0, 1], [1, 1], [1, 1]])), ValueError, "positive"),
    "loc_heads": (_set(3, lambda t: t[:, :, :1]), ValueError, "does not match value"),
    "loc_last_dim": (_set(3, lambda t: t[..., :1]), ValueError, r"must be \(B, Q, M, L, P, 2\)"),
    "weights_shape": (_set(4, lambda t: t[..., :1]), ValueError, r"attention_weights must be \(B, Q, M, L, P\)"),
    "value_int": (_set(0, lambda v: v.long()), TypeError, "value must be float32"),
    "shapes_float": (_set(1, lambda s: s.float()), TypeError, "integer"),
    "im2col_step": (_set(5, lambda _: 0), ValueError, "im2col_step must be"),
}


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_invalid_inputs_raise_clear_errors(fn, case):
    edit, error, pattern = SHAPE_CASES[case]
    value, shapes, starts, locations, weights, _ = make_inputs(ODD_LEVELS, 2, 3, 2, 4, 2, torch.float32)
    with pytest.raises(error, match=pattern):
        fn(*edit((value, shapes, starts, locations, weights, 2)))


@needs_cpu_kernel
@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (_set(3, lambda t: t.double()), TypeError, "sampling_locations and attention_weights must be Float"),
        (_set(0, lambda v: v.half()), TypeError, "value must be float32 or float64 on cpu"),
        (_set(0, lambda v: v.transpose(0, 1).contiguous().transpose(0, 1)), ValueError, "value must be contiguous"),
        (_set(1, lambda s: s + torch.tensor([[0, 0], [0, 0], [0, 0], [0, 1]])), ValueError, r"sum of H\*W"),
        (_set(2, lambda s: s.int()), TypeError, "must be int64"),
        (_set(5, lambda _: -1), ValueError, "im2col_step must be positive"),
        (_set(0, lambda v: v[0]), ValueError, r"value must be \(B, S, M, D\)"),
        (_set(2, lambda s: s[:3]), ValueError, r"level_start_index must be \(L,\) with L = 4"),
        (_set(3, lambda t: t[:, :, :, :3]), ValueError, "and L = 4 levels"),
        (_set(4, lambda t: t[..., :1]), ValueError, r"attention_weights must be \(B, Q, M, L, P\)"),
        (
            _set(2, lambda s: s + torch.tensor([0, 0, 1, 0])),
            ValueError,
            r"level_start_index\[2\] = 37 but the levels before it hold 36 tokens",
        ),
        (
            _set(1, lambda s: s * torch.tensor([[1, 1], [0, 1], [1, 1], [1, 1]])),
            ValueError,
            r"spatial_shapes\[1\] = \[0, 1\] must be positive",
        ),
        (
            _set(1, lambda s: torch.tensor([[7, 5], [1, 1], [3, 4], [2**32, 2**32]])),  # H*W wraps int64 to 0
            ValueError,
            r"spatial_shapes\[3\] = \[4294967296, 4294967296\] must be positive with H\*W at most S = 66",
        ),
    ],
)
def test_kernel_checks_inputs_before_running(edit, error, pattern):
    value, shapes, starts, locations, weights, grad_output = make_inputs(ODD_LEVELS, 2, 3, 2, 4, 2, torch.float32)
    args = edit((value, shapes, starts, locations, weights, 2))
    with pytest.raises(error, match=pattern):
        torch.ops.rotated_ddetr.ms_deform_attn(*args)
    with pytest.raises(error, match=pattern):
        torch.ops.rotated_ddetr.ms_deform_attn_backward(*args[:5], grad_output, args[5])


@needs_cpu_kernel
def test_backward_checks_grad_output():
    value, shapes, starts, locations, weights, grad_output = make_inputs(ODD_LEVELS, 2, 3, 2, 4, 2, torch.float32)
    with pytest.raises(ValueError, match=r"grad_output must be \(B, Q, M\*D\) = \(2, 3, 8\)"):
        torch.ops.rotated_ddetr.ms_deform_attn_backward(value, shapes, starts, locations, weights, grad_output[:1], 2)


@needs_cpu_kernel
def test_cpu_backward_is_deterministic():
    inputs = make_inputs(ODD_LEVELS, 2, 50, 4, 8, 4, torch.float32, margin=0.0)
    first = forward_backward(ms_deform_attn, *inputs)[1]
    second = forward_backward(ms_deform_attn, *inputs)[1]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_value_on_cpu(dtype):
    # float16 / bfloat16 values are upcast for the CPU kernel: equal to float32 on the rounded value, up to the
    # rounding of the output (2^-11 / 2^-8 relative) and of the value gradient.
    value, shapes, starts, locations, weights, grad_output = make_inputs(ODD_LEVELS, 2, 9, 2, 4, 3, torch.float32)
    low = forward_backward(ms_deform_attn, value.to(dtype), shapes, starts, locations, weights, grad_output.to(dtype))
    full = forward_backward(
        ms_deform_attn, value.to(dtype).float(), shapes, starts, locations, weights, grad_output.to(dtype).float()
    )
    assert low[0].dtype == dtype and low[1][0].dtype == dtype and low[1][1].dtype == torch.float32
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(low[0].float(), full[0], rtol=tol, atol=tol)
    torch.testing.assert_close(low[1][0].float(), full[1][0], rtol=tol, atol=tol)
    torch.testing.assert_close(low[1][1:], full[1][1:], rtol=1e-6, atol=1e-6)


def _autocast_model_step(device, dtype, fn):
    """A projection + deformable attention step under autocast: value and locations come out in `dtype`, the
    softmaxed weights in float32. Returns the output and the gradients of the three parameters."""
    levels = [(6, 5), (3, 3)]
    shapes = torch.tensor(levels, device=device)
    starts = torch.tensor([0, 30], device=device)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, 39, 16, generator=gen).to(device)
    w_value, w_offset, w_att = (torch.randn(16, n, generator=gen).div(4).to(device) for n in (16, 16, 8))
    for w in (w_value, w_offset, w_att):
        w.requires_grad_()
    queries = tokens[:, :7]
    reference = torch.rand(2, 7, 1, 1, 1, 2, generator=gen).to(device)
    with torch.autocast(device, dtype=dtype):
        value = (tokens @ w_value).view(2, 39, 2, 8)
        locations = reference + 0.1 * (queries @ w_offset).view(2, 7, 2, 2, 2, 2)
        weights = F.softmax((queries @ w_att).view(2, 7, 2, 4), -1).view(2, 7, 2, 2, 2)
        out = fn(value, shapes, starts, locations, weights)
    out.float().square().sum().backward()
    return out, (w_value.grad, w_offset.grad, w_att.grad)


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_autocast_cpu_bfloat16(fn):
    out, grads = _autocast_model_step("cpu", torch.bfloat16, fn)
    assert out.dtype == torch.bfloat16
    out_ref, grads_ref = _autocast_model_step("cpu", torch.bfloat16, ms_deform_attn_reference)
    torch.testing.assert_close(out, out_ref, rtol=1.6e-2, atol=1.6e-2)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=5e-2, atol=5e-2)


@needs_cpu_kernel
def test_torch_compile_fullgraph():
    inputs = make_inputs(ODD_LEVELS, 2, 5, 2, 4, 2, torch.float32)
    compiled = torch.compile(ms_deform_attn, backend="aot_eager", fullgraph=True)
    assert_all_close(forward_backward(compiled, *inputs), forward_backward(ms_deform_attn, *inputs), 1e-6, 1e-6)


# CUDA: skipped without a GPU (conftest); the parity tests also need the extension built with CUDA kernels.
needs_cuda_kernel = pytest.mark.skipif(not has_kernel("ms_deform_attn", "cuda"), reason="built without CUDA kernels")


def _cuda(tensors):
    return tuple(t.cuda() for t in tensors)


def _cpu(result):
    out, grads = result
    return out.cpu(), tuple(g.cpu() for g in grads)


@pytest.mark.cuda
def test_cuda_backend_is_the_kernel():
    assert backend("ms_deform_attn", "cuda") == "kernel", "extension built without CUDA kernels (try FORCE_CUDA=1)"


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("channels", [5, 32, 40])  # 8 lanes per group; 32 lanes; 32 lanes over two channel chunks
def test_cuda_matches_cpu_kernel_and_reference_float64(channels):
    inputs = make_inputs(ODD_LEVELS, batch=5, queries=13, heads=3, channels=channels, points=3, dtype=torch.float64)
    got = _cpu(forward_backward(ms_deform_attn, *_cuda(inputs), im2col_step=2))  # batch chunks 2, 2, 1
    assert_all_close(got, forward_backward(ms_deform_attn_reference, *inputs), rtol=1e-8, atol=1e-8)
    assert_all_close(got, forward_backward(ms_deform_attn, *inputs), rtol=1e-8, atol=1e-8)


@pytest.mark.cuda
@needs_cuda_kernel
def test_cuda_matches_reference_float32_encoder_shape():
    inputs = _cuda(make_inputs([(64, 64), (32, 32), (16, 16), (8, 8)], 2, 500, 8, 32, 4, torch.float32, seed=4))
    got = forward_backward(ms_deform_attn, *inputs)
    expected = forward_backward(ms_deform_attn_reference, *inputs)
    # float32 sums in different orders (the reference's own error vs float64 is ~6e-7 of each tensor's largest
    # entry); location gradients carry a factor W or H up to 64 and reach ~2e3, weight gradients ~20.
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(got[1][0], expected[1][0], rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(got[1][1], expected[1][1], rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(got[1][2], expected[1][2], rtol=1e-5, atol=2e-4)


@pytest.mark.cuda
@needs_cuda_kernel
def test_cuda_gradcheck_float64():
    value, shapes, starts, locations, weights, _ = _cuda(
        make_inputs([(3, 2), (1, 1), (2, 3)], 3, 3, 2, 3, 2, torch.float64)
    )
    leaves = [t.requires_grad_() for t in (value, locations, weights)]

    def fn(v, loc, att):
        return ms_deform_attn(v, shapes, starts, loc, att, 2)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5, nondet_tol=1e-12)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_cuda_reduced_precision_matches_float32(dtype, tol):
    # Inputs rounded to `dtype` are read exactly and summed in float32, so the output and the value gradient differ
    # from the float32 kernel on the same rounded numbers only by their final rounding (2^-11 / 2^-8 relative,
    # twice); location and weight gradients are float32 throughout.
    value, shapes, starts, locations, weights, grad_output = _cuda(
        make_inputs([(16, 12), (8, 6), (4, 3), (1, 1)], 3, 40, 4, 32, 4, torch.float32, seed=2)
    )
    value, grad_output = value.to(dtype), grad_output.to(dtype)
    low = forward_backward(ms_deform_attn, value, shapes, starts, locations, weights, grad_output, im2col_step=2)
    full = forward_backward(ms_deform_attn, value.float(), shapes, starts, locations, weights, grad_output.float())
    assert (low[0].dtype, low[1][0].dtype, low[1][1].dtype, low[1][2].dtype) == (dtype, dtype, *(torch.float32,) * 2)
    torch.testing.assert_close(low[0].float(), full[0], rtol=tol, atol=tol)
    torch.testing.assert_close(low[1][0].float(), full[1][0], rtol=tol, atol=tol)
    torch.testing.assert_close(low[1][1:], full[1][1:], rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_mixed_dtypes(dtype):
    out, grads = _autocast_model_step("cuda", dtype, ms_deform_attn)
    assert out.dtype == dtype
    out_ref, grads_ref = _autocast_model_step("cuda", dtype, ms_deform_attn_reference)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(out, out_ref, rtol=tol, atol=tol)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=5e-2, atol=5e-2)


@pytest.mark.cuda
@needs_cuda_kernel
def test_cuda_location_and_weight_gradients_are_deterministic():
    inputs = _cuda(make_inputs(ODD_LEVELS, 2, 50, 4, 8, 4, torch.float32, margin=0.0))
    first = forward_backward(ms_deform_attn, *inputs)
    second = forward_backward(ms_deform_attn, *inputs)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1][1], second[1][1]) and torch.equal(first[1][2], second[1][2])
    torch.testing.assert_close(first[1][0], second[1][0], rtol=1e-6, atol=1e-6)  # atomicAdd order varies


@pytest.mark.cuda
@needs_cuda_kernel
def test_cuda_opcheck_and_device_checks():
    value, shapes, starts, locations, weights, _ = _cuda(make_inputs([(3, 2), (2, 2)], 2, 3, 2, 4, 2, torch.float32))
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    torch.library.opcheck(torch.ops.rotated_ddetr.ms_deform_attn.default, (leaves[0], shapes, starts, *leaves[1:], 1))
    pattern = "all inputs must be on value's device cuda:0, got spatial_shapes on cpu"
    with pytest.raises(ValueError, match=pattern):
        ms_deform_attn(value, shapes.cpu(), starts, locations, weights)
    with pytest.raises(ValueError, match=pattern):
        torch.ops.rotated_ddetr.ms_deform_attn(value, shapes.cpu(), starts, locations.detach(), weights.detach(), 1)
