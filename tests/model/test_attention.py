"""Rotated deformable attention: hand-computed sampling locations, isotropy on non-square and padded images, init."""

import math

import torch

from rotated_ddetr.model.attention import MultiScaleLayout, RotatedMSDeformAttn, rbox_sampling_locations


def _locations(ref, offsets, image_wh, ratios=(1.0, 1.0)):
    offsets = torch.tensor(offsets, dtype=torch.float64).view(1, 1, 1, 1, -1, 2)
    return rbox_sampling_locations(
        torch.tensor([ref], dtype=torch.float64)[None],
        offsets,
        torch.tensor([image_wh], dtype=torch.float64).flip(-1),  # the API takes (height, width)
        torch.tensor([ratios], dtype=torch.float64),
    ).view(-1, 2)


def test_box_at_90_degrees_by_hand():
    # Image 200 x 100 (W x H); box centred at (100, 50) px, w 40, h 20, angle 90 deg: its w-axis points along +y.
    ref = (100 / 200, 50 / 100, 40 / 200, 20 / 100, math.pi / 2)
    # (1, 0): half of w along +y -> (100, 70) px; (0, 1): half of h along -x -> (90, 50) px.
    locations = _locations(ref, [[1.0, 0.0], [0.0, 1.0]], (200.0, 100.0))
    expected = torch.tensor([[100 / 200, 70 / 100], [90 / 200, 50 / 100]], dtype=torch.float64)
    torch.testing.assert_close(locations, expected, atol=1e-12, rtol=0)


def test_isotropic_on_non_square_padded_image():
    # Valid image 300 x 120 px inside a 320 x 160 padded map; any angle: in pixels, the sampled point minus the
    # centre, turned back by -angle, is exactly (u * w/2, v * h/2).
    torch.manual_seed(0)
    image_wh, padded_wh = torch.tensor([300.0, 120.0], dtype=torch.float64), (320.0, 160.0)
    ratios = (300.0 / 320.0, 120.0 / 160.0)
    for _ in range(5):
        cx, cy, w, h = (torch.rand(4, dtype=torch.float64) * 0.5 + 0.2).tolist()
        angle = float(torch.empty(1).uniform_(-math.pi / 2, math.pi / 2))
        offsets = torch.randn(6, 2, dtype=torch.float64)
        locations = _locations((cx, cy, w, h, angle), offsets.tolist(), image_wh.tolist(), ratios)
        pixels = locations * torch.tensor(padded_wh, dtype=torch.float64)
        d = pixels - torch.tensor([cx, cy], dtype=torch.float64) * image_wh
        cos, sin = math.cos(angle), math.sin(angle)
        local = torch.stack((d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos), dim=-1)
        expected = offsets * torch.tensor([w, h], dtype=torch.float64) * image_wh / 2
        torch.testing.assert_close(local, expected, atol=1e-9, rtol=0)


def test_init_ring_and_forward():
    torch.manual_seed(0)
    attn = RotatedMSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    ring = attn.sampling_offsets.bias.view(4, 2, 2, 2)  # (M, L, P, 2)
    torch.testing.assert_close(ring[0, 1], torch.tensor([[1.0, 0.0], [2.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ring[1, 0], torch.tensor([[0.0, 1.0], [0.0, 2.0]]), atol=1e-6, rtol=0)
    shapes = torch.tensor([[4, 6], [2, 3]])
    layout = MultiScaleLayout(
        ((4, 6), (2, 3)), shapes, torch.tensor([0, 24]), torch.zeros(2, 30, dtype=torch.bool),
        torch.tensor([[32.0, 48.0]] * 2), torch.ones(2, 2),
    )  # fmt: skip
    query = torch.randn(2, 5, 32, requires_grad=True)
    refs = torch.tensor([0.5, 0.5, 0.3, 0.2, 0.4]).expand(2, 5, 5)
    out = attn(query, refs, torch.randn(2, 30, 32), layout)
    assert out.shape == (2, 5, 32) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert attn.attention_weights.weight.grad.abs().sum() > 0


def test_module_reads_the_hand_computed_pixel():
    # One head, level and point; identity projections; offset (1, 0). Image 160 x 80 px, one 16 x 8 map (stride 10).
    # Box centre (75, 35) px, w 20, h 10, angle 90 deg: the point is (75, 45) px -> map cell (x 7, y 4).
    attn = RotatedMSDeformAttn(d_model=2, n_levels=1, n_heads=1, n_points=1)
    with torch.no_grad():
        for linear in (attn.value_proj, attn.output_proj):
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]))
    value = torch.stack((torch.arange(128.0), -torch.arange(128.0)), dim=-1)[None]  # (1, 128, 2): token index
    layout = MultiScaleLayout(
        ((8, 16),), torch.tensor([[8, 16]]), torch.tensor([0]), torch.zeros(1, 128, dtype=torch.bool),
        torch.tensor([[80.0, 160.0]]), torch.ones(1, 2),
    )  # fmt: skip
    ref = torch.tensor([[[75 / 160, 35 / 80, 20 / 160, 10 / 80, math.pi / 2]]])
    out = attn(torch.zeros(1, 1, 2), ref, value, layout)
    torch.testing.assert_close(out[0, 0], torch.tensor([4 * 16 + 7.0, -(4 * 16 + 7.0)]), atol=1e-4, rtol=0)
