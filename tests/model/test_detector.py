"""The tiny detector on CPU: output shapes, gradients where they belong, angle refinement, padded batches."""

import dataclasses
import math

import pytest
import torch

from rotated_ddetr.model import DetectorOutput, build_model
from rotated_ddetr.model.heads import refine_rboxes
from rotated_ddetr.structures import Target
from rotated_ddetr.training import HungarianMatcher, SetCriterion
from tests.small_model import small_test_model_config

NUM_CLASSES = 3


def _targets():
    return [
        Target(
            labels=torch.tensor([0, 2]),
            rboxes=torch.tensor([[0.3, 0.4, 0.2, 0.1, 0.5], [0.6, 0.7, 0.1, 0.25, -1.2]]),
            image_size=(128, 128),
        ),
        Target(labels=torch.tensor([1]), rboxes=torch.tensor([[0.5, 0.5, 0.3, 0.1, 1.4]]), image_size=(96, 128)),
    ]


def _batch():
    images = torch.randn(2, 3, 128, 128)
    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[1, 96:, :] = True  # the second image is 96 x 128, padded at the bottom
    images[1, :, 96:] = 0
    return images, masks


@pytest.mark.parametrize("two_stage", [True, False])
def test_output_shapes(two_stage):
    torch.manual_seed(0)
    cfg = dataclasses.replace(small_test_model_config(NUM_CLASSES), num_queries=20, two_stage=two_stage)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(*_batch())
    assert isinstance(out, DetectorOutput)
    assert out.logits.shape == (2, 2, 20, NUM_CLASSES) and out.rboxes.shape == (2, 2, 20, 5)
    assert out.image_sizes.tolist() == [[128, 128], [96, 128]]
    if two_stage:
        assert out.enc_logits.shape == (2, 20, NUM_CLASSES) and out.enc_rboxes.shape == (2, 20, 5)
    else:
        assert out.enc_logits is None and out.enc_rboxes is None
    angles = out.rboxes[..., 4]
    assert torch.isfinite(out.rboxes).all() and (angles >= -math.pi / 2).all() and (angles < math.pi / 2).all()
    assert ((out.rboxes[..., :4] > 0) & (out.rboxes[..., :4] < 1)).all()


@pytest.mark.parametrize("two_stage", [True, False])
def test_forward_backward_gradients(two_stage):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(small_test_model_config(NUM_CLASSES), num_queries=50, two_stage=two_stage))
    heads = [*model.decoder.box_heads] + ([model.proposals.box_head] if two_stage else [])
    # At init every box is a square in pixels (zero deltas on square base boxes), whose Gaussian is isotropic: the
    # KLD then has no angle gradient. Nudge the heads off zero, as the first optimiser step does.
    with torch.no_grad():
        for head in heads:
            head.layers[-1].weight.normal_(std=1e-2)
    out = model(*_batch())
    losses = SetCriterion(HungarianMatcher(), NUM_CLASSES)(out, _targets())
    losses["loss"].backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.stem.", "backbone.stages.0.")) for n in frozen)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    # The angle row of every box head's last layer (decoder layers and proposals) gets a gradient.
    for head in heads:
        assert head.layers[-1].weight.grad[4].abs().sum() > 0 and head.layers[-1].bias.grad[4].abs() > 0
    for name in ("backbone.stages.3.1.conv2.weight", "encoder.layers.0.self_attn.sampling_offsets.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    if not two_stage:  # the learned references train through the first layer's prediction
        assert model.query_rboxes.grad.abs().sum() > 0


def test_angle_is_refined_layer_by_layer():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(small_test_model_config(NUM_CLASSES), num_queries=20)).eval()
    with torch.no_grad():
        for head in model.decoder.box_heads:
            head.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))  # +1 rad per layer
        out = model(*_batch())
    proposals = out.enc_rboxes[..., 4]
    expected_0 = torch.remainder(proposals + 1.0 + math.pi / 2, math.pi) - math.pi / 2
    expected_1 = torch.remainder(proposals + 2.0 + math.pi / 2, math.pi) - math.pi / 2
    torch.testing.assert_close(out.rboxes[0, ..., 4], expected_0, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rboxes[1, ..., 4], expected_1, atol=1e-5, rtol=0)


def test_refine_rboxes_by_hand():
    ref = torch.tensor([0.5, 0.25, 0.1, 0.2, 1.5])
    delta = torch.tensor([0.0, math.log(3.0), 0.0, 0.0, 0.2])
    # cy: sigmoid(logit(0.25) + ln 3) = 0.5; angle 1.7 wraps to 1.7 - pi.
    expected = torch.tensor([0.5, 0.5, 0.1, 0.2, 1.7 - math.pi])
    torch.testing.assert_close(refine_rboxes(ref, delta), expected, atol=1e-6, rtol=0)


def _forward_both_modes(model, images, masks, targets):
    """Inference forward (eval) and training forward with targets (denoising queries on)."""
    with torch.no_grad():
        model.eval()(images, masks)
    return model.train()(images, masks, targets)


def test_forward_reads_nothing_back_from_the_device(monkeypatch):
    # On a GPU each of these reads waits for the GPU's queue; on the CPU they show where one would happen. The
    # forward may read shapes (metadata) but no tensor values, in either mode (dense proposals, denoising on).
    torch.manual_seed(0)
    cfg = dataclasses.replace(small_test_model_config(NUM_CLASSES), num_queries=20, dn_groups=2)
    model, (images, masks), targets = build_model(cfg), _batch(), _targets()

    def refuse(self, *args, **kwargs):
        raise AssertionError("the detector's forward read a tensor value back")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = _forward_both_modes(model, images, masks, targets)
    monkeypatch.undo()
    assert out.denoising is not None and out.logits.shape == (2, 2, 20, NUM_CLASSES)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_never_synchronises():
    # CUDA's own check of the same property: any synchronising call in the forward raises.
    torch.manual_seed(0)
    cfg = dataclasses.replace(small_test_model_config(NUM_CLASSES), num_queries=20, dn_groups=2)
    model, (images, masks) = build_model(cfg).cuda(), _batch()
    images, masks, targets = images.cuda(), masks.cuda(), [t.to("cuda") for t in _targets()]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = _forward_both_modes(model, images, masks, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.rboxes).all()
