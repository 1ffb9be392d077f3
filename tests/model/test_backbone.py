"""Backbone: padding masks per level, frozen parts, local pretrained weights, multi-scale projection shapes."""

import pytest
import torch
import torchvision

from rotated_ddetr.model.backbone import MultiScaleProjection, ResNetBackbone, level_strides, resize_mask


def test_masks_for_two_image_sizes():
    # Images of 64x96 and 96x32 (H x W) padded to 96x96: at stride 8 the valid cells are 8x12 and 12x4, exactly.
    mask = torch.ones(2, 96, 96, dtype=torch.bool)
    mask[0, :64, :96] = False
    mask[1, :96, :32] = False
    for stride in (8, 16, 32):
        level = resize_mask(mask, (96 // stride, 96 // stride))
        expected = torch.ones_like(level)
        expected[0, : 64 // stride, : 96 // stride] = False
        expected[1, : 96 // stride, : 32 // stride] = False
        assert torch.equal(level, expected), stride


def test_level_strides():
    assert level_strides((8, 16, 32), 4) == (8, 16, 32, 64)
    assert level_strides((8, 16, 32), 5) == (8, 16, 32, 64, 128)
    assert level_strides((8, 16, 32), 1) == (32,)


@pytest.mark.parametrize("num_levels", [1, 4, 5])
def test_projection_shapes(num_levels):
    backbone = ResNetBackbone(18)
    projection = MultiScaleProjection(backbone.out_channels, 64, num_levels)
    maps = projection(backbone(torch.randn(1, 3, 64, 96)))
    strides = level_strides(backbone.strides, num_levels)
    assert [tuple(m.shape) for m in maps] == [(1, 64, -(-64 // s), -(-96 // s)) for s in strides]


def test_frozen_stem_and_batchnorm():
    backbone = ResNetBackbone(18, frozen_stages=1)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("stem.", "stages.0.")) for n in trainable)
    assert any(n.startswith("stages.1.") for n in trainable)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_pretrained_local_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetBackbone(18, pretrained=str(path))
    assert torch.equal(backbone.stages[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    # Frozen BN must hold the stored statistics (running_var is not 1 after a randomised init only if loaded).
    assert torch.equal(backbone.stem[1].weight, reference.bn1.weight)
    with pytest.raises(FileNotFoundError, match="not found"):
        ResNetBackbone(18, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="ResNet-34"):
        ResNetBackbone(34, pretrained=str(path))
