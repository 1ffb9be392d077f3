"""The shared vocabulary: `Target`, the batched pixel <-> normalised conversion, the half-open angle wrap."""

import math

import pytest
import torch

from rotated_ddetr import structures
from rotated_ddetr.boxes import denormalize_rboxes, normalize_rboxes, wrap_angle
from rotated_ddetr.structures import Target, autocast_dtype, stack_image_sizes


def test_target_length_device_and_checks():
    target = Target(torch.tensor([2, 0]), torch.rand(2, 5), image_size=torch.tensor([40, 60]).tolist())
    assert len(target) == 2 and target.image_size == (40, 60) and isinstance(target.image_size, tuple)
    moved = target.to("cpu")
    assert moved.image_size == (40, 60) and torch.equal(moved.rboxes, target.rboxes)
    assert len(Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 5), (8, 8))) == 0
    with pytest.raises(ValueError, match=r"labels \(N,\) and rboxes \(N, 5\)"):
        Target(torch.tensor([1, 2]), torch.rand(3, 5), (8, 8))


def test_batched_conversion_equals_per_image():
    # (B, Q, 5) rboxes with one (height, width) per image, as the matcher and the attention use it.
    rboxes = torch.rand(2, 3, 5, dtype=torch.float64)
    sizes = torch.tensor([[80.0, 120.0], [64.0, 32.0]], dtype=torch.float64)
    batched = denormalize_rboxes(rboxes, sizes[:, None])
    per_image = torch.stack([denormalize_rboxes(rboxes[b], (int(h), int(w))) for b, (h, w) in enumerate(sizes)])
    torch.testing.assert_close(batched, per_image, atol=0, rtol=0)
    # Image 0 is 120 px wide, 80 px high: cx and w scale by 120, cy and h by 80, the angle is unchanged.
    torch.testing.assert_close(batched[0, 0], rboxes[0, 0] * torch.tensor([120, 80, 120, 80, 1.0], dtype=torch.float64))
    torch.testing.assert_close(normalize_rboxes(batched, sizes[:, None]), rboxes, atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="height, width"):
        denormalize_rboxes(rboxes, torch.ones(2, 3))


def test_stack_image_sizes_repeats_rows():
    targets = [Target(torch.zeros(2, dtype=torch.int64), torch.rand(2, 5), (10, 20)),
               Target(torch.zeros(1, dtype=torch.int64), torch.rand(1, 5), (30, 40))]  # fmt: skip
    like = torch.zeros(1, dtype=torch.float64)
    assert stack_image_sizes(targets, like).tolist() == [[10, 20], [30, 40]]
    rows = stack_image_sizes(targets, like, repeats=[1, 3])
    assert rows.dtype == torch.float64 and rows.tolist() == [[10, 20], [30, 40], [30, 40], [30, 40]]


def test_wrap_angle_is_half_open():
    angles = torch.tensor([0.0, math.pi / 2, -math.pi / 2, 3 * math.pi / 4, -7.0, 10.0], dtype=torch.float64)
    expected = torch.tensor([0.0, -math.pi / 2, -math.pi / 2, -math.pi / 4, -7.0 + 2 * math.pi, 10.0 - 3 * math.pi],
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(wrap_angle(angles), expected, atol=1e-12, rtol=0)
    # Just below -pi/2 the remainder rounds up to exactly pi: a plain wrap would return +pi/2, outside the range.
    below = torch.nextafter(torch.tensor(-math.pi / 2, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64))
    assert float(torch.remainder(below + math.pi / 2, math.pi) - math.pi / 2) == math.pi / 2
    wrapped = float(wrap_angle(below))
    assert -math.pi / 2 <= wrapped < math.pi / 2 and abs(wrapped + math.pi / 2) < 1e-15
    # Gradient 1 everywhere (the box heads learn through the wrap).
    angle = torch.tensor([2.0, -3.0], requires_grad=True)
    wrap_angle(angle).sum().backward()
    assert angle.grad.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)],
)
def test_auto_amp_is_bf16_only_on_cpus_that_compute_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert structures.native_bf16(cpu) is (expected is not None)
    assert autocast_dtype("auto", cpu) is expected
    assert (autocast_dtype("none", cpu), autocast_dtype("bf16", cpu), autocast_dtype("fp16", cpu)) == (
        None, torch.bfloat16, torch.float16)  # fmt: skip
    with pytest.raises(ValueError, match="amp must be one of"):
        autocast_dtype("fp32", cpu)
