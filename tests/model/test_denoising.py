"""Query denoising: noise bounds, group/matching isolation by the mask, outputs and losses of the denoising part."""

import dataclasses
import math

import torch

from rotated_ddetr.boxes import denormalize_rboxes
from rotated_ddetr.model import build_model
from rotated_ddetr.model.denoising import QueryDenoising
from rotated_ddetr.structures import Target
from rotated_ddetr.training import HungarianMatcher, SetCriterion
from tests.small_model import small_test_model_config

TARGETS = [
    Target(labels=torch.tensor([0, 2]), rboxes=torch.tensor([[0.3, 0.4, 0.3, 0.1, 0.5], [0.6, 0.7, 0.2, 0.1, -1.2]]),
     image_size=(128, 128)),
    Target(labels=torch.tensor([1]), rboxes=torch.tensor([[0.5, 0.5, 0.3, 0.1, 1.4]]), image_size=(96, 128)),
]  # fmt: skip


def test_layout_mask_and_index():
    torch.manual_seed(0)
    dn = QueryDenoising(num_classes=3, d_model=32, groups=3)(TARGETS, num_queries=4)
    assert dn.content.shape == (2, 6, 32) and dn.rboxes.shape == (2, 6, 5)  # 3 groups x 2 slots (most targets)
    assert dn.target_index.tolist() == [[0, 1, 0, 1, 0, 1], [0, -1, 0, -1, 0, -1]]
    mask = dn.attn_mask
    assert mask.shape == (10, 10)
    group = torch.arange(6) // 2
    assert torch.equal(mask[:6, :6], group[:, None] != group[None, :])  # groups are blind to each other
    assert mask[6:, :6].all() and not mask[:, 6:].any()  # matching queries never see denoising ones


def test_noise_bounds_and_zero_noise():
    torch.manual_seed(0)
    rboxes = torch.tensor([[0.5, 0.5, 0.2, 0.1, 0.3]]).repeat(2000, 1)
    target = [Target(labels=torch.zeros(2000, dtype=torch.int64), rboxes=rboxes, image_size=(200, 100))]
    dn = QueryDenoising(num_classes=5, d_model=32, groups=1, box_noise=0.4, label_noise=0.2)
    queries = dn(target, num_queries=1)
    noised = denormalize_rboxes(queries.rboxes[0], (200, 100))  # pixels: 20 x 20 box at 0.3 rad, centre (50, 100)
    offset = noised[:, :2] - torch.tensor([50.0, 100.0])
    along = offset[:, 0] * math.cos(0.3) + offset[:, 1] * math.sin(0.3)
    across = -offset[:, 0] * math.sin(0.3) + offset[:, 1] * math.cos(0.3)
    assert along.abs().max() <= 0.4 * 10 + 1e-4 and across.abs().max() <= 0.4 * 10 + 1e-4  # half-sides 10 px
    assert along.abs().max() > 3.5  # the noise covers its range
    assert ((noised[:, 2:4] / 20 - 1).abs() <= 0.4 + 1e-5).all()
    assert ((noised[:, 4] - 0.3).abs() <= 0.4 * math.pi / 4 + 1e-5).all()
    flipped = (queries.content != dn.label_embed.weight[0]).any(-1).float().mean()
    assert abs(flipped - 0.2 * 4 / 5) < 0.04  # a flip to the same class changes nothing
    exact = QueryDenoising(num_classes=5, d_model=32, groups=2, box_noise=0.0, label_noise=0.0)(TARGETS, 1)
    torch.testing.assert_close(exact.rboxes[0, 2:4], TARGETS[0].rboxes, atol=1e-6, rtol=0)


def test_detector_matching_outputs_unaffected_and_losses():
    torch.manual_seed(0)
    cfg = small_test_model_config(3)
    cfg = dataclasses.replace(cfg, num_queries=20, dn_groups=2, two_stage=False, backbone_norm="batch")
    model = build_model(cfg).train()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        plain = model(images)
        with_dn = model(images, targets=TARGETS)
    assert plain.denoising is None and with_dn.denoising.logits.shape == (2, 2, 4, 3)
    torch.testing.assert_close(with_dn.logits, plain.logits, rtol=1e-5, atol=1e-5)  # the mask isolates them
    torch.testing.assert_close(with_dn.rboxes, plain.rboxes, rtol=1e-5, atol=1e-5)
    assert model.eval()(images, targets=TARGETS).denoising is None  # inference never denoises
    model.train()
    losses = SetCriterion(HungarianMatcher(), 3)(model(images, targets=TARGETS), TARGETS)
    assert {"loss_class_dn", "loss_l1_dn_0", "loss_kld_dn"} <= set(losses)
    losses["loss"].backward()
    assert model.denoising.label_embed.weight.grad.abs().sum() > 0
