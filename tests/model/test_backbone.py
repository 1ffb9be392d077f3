"""Backbone: padding masks per level, frozen parts, norms, ImageNet normalisation, pretrained weights, projections."""

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


def test_three_stages_drop_layer4(tmp_path):
    # stages=3: outputs of layer2/3 at strides 8/16; coarser levels come from the projection's stride-2 convs.
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetBackbone(18, pretrained=str(path), stages=3).eval()
    assert backbone.strides == (8, 16) and backbone.out_channels == (128, 256)
    assert not any(n.startswith("stages.3.") for n, _ in backbone.named_parameters())
    images = torch.rand(1, 3, 64, 96)
    expected = _torchvision_features(reference, images, stages=3)
    torch.testing.assert_close(backbone(images)[-1], expected, rtol=1e-4, atol=1e-4)  # conv sum order
    projection = MultiScaleProjection(backbone.out_channels, 64, 4)
    maps = projection(backbone(images))
    assert level_strides(backbone.strides, 4) == (8, 16, 32, 64)
    assert [tuple(m.shape[2:]) for m in maps] == [(8, 12), (4, 6), (2, 3), (1, 2)]
    with pytest.raises(ValueError, match="stages must be 3 or 4"):
        ResNetBackbone(18, stages=2)
    with pytest.raises(ValueError, match=r"frozen_stages must be in \[0, 3\]"):
        ResNetBackbone(18, frozen_stages=4, stages=3)


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


def test_imagenet_normalisation_inside():
    torch.manual_seed(0)
    backbone = ResNetBackbone(18).eval()
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.load_state_dict(_state_of(backbone))
    images = torch.rand(2, 3, 64, 64)
    expected = _torchvision_features(reference, images, stages=4)
    torch.testing.assert_close(backbone(images)[-1], expected, rtol=1e-4, atol=1e-4)  # conv sum order
    assert "mean" not in backbone.state_dict()  # constants, not weights


def _torchvision_features(reference: torch.nn.Module, images: torch.Tensor, stages: int) -> torch.Tensor:
    """Output of torchvision's ResNet after `stages` residual stages, on ImageNet-normalised images."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = reference.maxpool(reference.relu(reference.bn1(reference.conv1((images - mean) / std))))
    for layer in [reference.layer1, reference.layer2, reference.layer3, reference.layer4][:stages]:
        x = layer(x)
    return x


def _state_of(backbone: ResNetBackbone) -> dict:
    """The backbone's weights under torchvision's ResNet names."""
    stem = {"conv1": backbone.stem[0], "bn1": backbone.stem[1]}
    state = {f"{name}.{k}": v for name, module in stem.items() for k, v in module.state_dict().items()}
    for index, stage in enumerate(backbone.stages):
        state.update({f"layer{index + 1}.{k}": v for k, v in stage.state_dict().items()})
    reference = torchvision.models.resnet18(weights=None).state_dict()
    return {k: state.get(k, reference[k]) for k in reference}


@pytest.mark.parametrize("norm, layer", [("batch", torch.nn.BatchNorm2d), ("group", torch.nn.GroupNorm)])
def test_trainable_norms(norm, layer):
    backbone = ResNetBackbone(18, frozen_stages=1, norm=norm)
    norms = [m for m in backbone.modules() if isinstance(m, layer)]
    assert len(norms) == 20  # stem 1 + layer1 2 x 2 + layers 2-4 3 x (2 x 2 + 1 downsample)
    backbone.train()
    assert not backbone.stem[1].training and not backbone.stages[0][0].bn1.training
    assert backbone.stages[1][0].bn1.training
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("stages.1."))
    if norm == "batch":  # frozen stages keep their statistics while training
        before = backbone.stem[1].running_mean.clone()
        backbone(torch.rand(2, 3, 64, 64))
        assert torch.equal(backbone.stem[1].running_mean, before)
        assert not torch.equal(backbone.stages[1][0].bn1.running_mean, torch.zeros(128))
    with pytest.raises(ValueError, match="norm"):
        ResNetBackbone(18, norm="layer")


def test_pretrained_into_batchnorm(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = ResNetBackbone(18, pretrained=str(path), norm="batch")
    assert torch.equal(backbone.stages[2][0].bn2.running_var, reference.layer3[0].bn2.running_var)
    with pytest.raises(ValueError, match="frozen' or 'batch"):
        ResNetBackbone(18, pretrained=str(path), norm="group")
