"""Backbone: padded [0, 1] images (B, 3, H, W) -> multi-scale d_model feature maps (and per-level padding masks).

A torchvision ResNet (ImageNet normalisation inside, frozen/batch/group norm, frozen stem) gives strides 8/16/32;
`MultiScaleProjection` maps them to d_model with GroupNorm and adds stride-2 levels (64, 128, ...) as in Deformable
DETR. First stage of the detector.
"""

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50,
            101: torchvision.models.resnet101}  # fmt: skip
# The statistics torchvision's ImageNet weights were trained with (RGB, images in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMS = ("frozen", "batch", "group")


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The ResNet's normalisation layer for `norm` ("frozen", "batch" or "group" with 32 groups)."""
    if norm == "frozen":
        return FrozenBatchNorm2d
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda channels: nn.GroupNorm(32, channels)
    raise ValueError(f"backbone norm must be one of {NORMS}, got {norm!r}")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet returning the outputs of layer2/3/4 (strides 8, 16, 32), or of layer2/3 only.

    Takes RGB images in [0, 1] and applies the ImageNet mean/std itself (buffers), so data and inference code never
    normalise. Norm layers: "frozen" = `FrozenBatchNorm2d` (fixed statistics and affine terms, as in DETR: for
    pretrained weights, since detection batches are too small for batch statistics); "batch" = trainable BatchNorm
    (statistics over batch and pixels: the choice for training from scratch, where frozen random-init norms
    normalise nothing); "group" = GroupNorm(32) (independent of the batch size, slower on CPU). The stem (conv1) and
    the first `frozen_stages` residual stages do not train, and their BatchNorm statistics stay fixed.

    Args:
        depth: 18, 34, 50 or 101.
        pretrained: path to a local torchvision ResNet state dict (e.g. `resnet50-0676ba61.pth`), or None for random
            weights. Nothing is ever downloaded. Needs norm "frozen" or "batch".
        frozen_stages: residual stages frozen after the stem (1 = stem and layer1, as in DETR / Deformable DETR;
            0 = everything trains, stem included).
        norm: "frozen", "batch" or "group".
        stages: residual stages kept: 4 (outputs at strides 8, 16, 32) or 3 (layer4 dropped: strides 8 and 16, about
            a quarter less backbone compute; `MultiScaleProjection` makes the coarser levels with stride-2 convs).

    Raises:
        ValueError: unsupported depth or norm, or a state dict that does not fit this ResNet.
        FileNotFoundError: `pretrained` does not exist.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        pretrained: str | None = None,
        frozen_stages: int = 1,
        norm: str = "frozen",
        stages: int = 4,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNETS)}, got {depth}")
        if stages not in (3, 4):
            raise ValueError(f"backbone stages must be 3 or 4, got {stages}")
        if not 0 <= frozen_stages <= stages:
            raise ValueError(f"frozen_stages must be in [0, {stages}], got {frozen_stages}")
        if pretrained is not None and norm == "group":
            raise ValueError("pretrained torchvision ResNet weights need backbone norm 'frozen' or 'batch'")
        resnet = _RESNETS[depth](weights=None, norm_layer=_norm_layer(norm))
        if pretrained is not None:
            _load_torchvision_state_dict(resnet, pretrained, depth)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4][:stages])
        self.frozen_stages = frozen_stages
        for module in self._frozen_modules():
            module.requires_grad_(False)
        width = 512 if depth >= 50 else 128  # output channels of layer2 (bottleneck expansion 4 for depth >= 50)
        self.out_channels = (width, 2 * width, 4 * width)[: stages - 1]
        self.strides = (8, 16, 32)[: stages - 1]
        # Channels-last convolutions: about 20% faster forward + backward on CPU (oneDNN), and the layout tensor
        # cores prefer under autocast. Loading a state dict copies into these parameters, keeping the layout.
        self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> "ResNetBackbone":
        """Sets the training mode; frozen parts stay in eval mode (their BatchNorm statistics do not move)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def _frozen_modules(self) -> list[nn.Module]:
        """The stem and the first `frozen_stages` residual stages."""
        return [self.stem, *self.stages[: self.frozen_stages]]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) RGB images in [0, 1] -> [(B, C_l, ceil(H/s), ceil(W/s)) for s in `self.strides`]."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 1:
                outputs.append(x)
        return outputs


def _load_torchvision_state_dict(resnet: nn.Module, path: str, depth: int) -> None:
    """Loads a local torchvision ResNet state dict into `resnet`, with a clear error when it does not fit."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained backbone weights not found: {path!r} (a local file path is required)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
    result = resnet.load_state_dict(state, strict=False)
    own = resnet.state_dict()
    shapes = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    # Trainable BatchNorm counts its updates; torchvision's published weights predate that counter.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys or shapes:
        raise ValueError(
            f"{path!r} is not a torchvision ResNet-{depth} state dict: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}, wrong shapes {shapes[:5]}"
        )


class MultiScaleProjection(nn.Module):
    """Backbone maps -> `num_levels` maps of d_model channels (Deformable DETR's input projections).

    The last `min(num_levels, len(in_channels))` backbone maps get a 1x1 conv + GroupNorm; each extra level is a
    stride-2 3x3 conv + GroupNorm, the first applied to the last backbone map, the next to the previous extra level.

    Args:
        in_channels: channels of the backbone maps, finest first.
        d_model: output channels (a multiple of 32, for GroupNorm(32)).
        num_levels: number of output levels.
    """

    def __init__(self, in_channels: tuple[int, ...], d_model: int, num_levels: int) -> None:
        super().__init__()
        if d_model % 32:
            raise ValueError(f"d_model must be a multiple of 32 (GroupNorm(32, d_model)), got {d_model}")
        self.num_backbone_levels = min(num_levels, len(in_channels))
        used = in_channels[len(in_channels) - self.num_backbone_levels :]
        layers = [nn.Sequential(nn.Conv2d(c, d_model, 1), nn.GroupNorm(32, d_model)) for c in used]
        previous = in_channels[-1]
        for _ in range(num_levels - self.num_backbone_levels):
            conv = nn.Conv2d(previous, d_model, 3, stride=2, padding=1)
            layers.append(nn.Sequential(conv, nn.GroupNorm(32, d_model)))
            previous = d_model
        self.layers = nn.ModuleList(layers)
        for layer in self.layers:
            nn.init.xavier_uniform_(layer[0].weight, gain=1)
            nn.init.zeros_(layer[0].bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, C_l, H_l, W_l)] backbone maps -> [(B, d_model, H_l, W_l)] for each output level, finest first."""
        features = features[len(features) - self.num_backbone_levels :]
        outputs = [layer(x) for layer, x in zip(self.layers, features, strict=False)]
        x = features[-1]
        for layer in self.layers[len(features) :]:
            x = layer(x)
            outputs.append(x)
        return outputs


def level_strides(backbone_strides: tuple[int, ...], num_levels: int) -> tuple[int, ...]:
    """Nominal strides of the `MultiScaleProjection` outputs, e.g. (8, 16, 32) and 4 levels -> (8, 16, 32, 64)."""
    used = backbone_strides[len(backbone_strides) - min(num_levels, len(backbone_strides)) :]
    extra = tuple(backbone_strides[-1] * 2 ** (i + 1) for i in range(num_levels - len(used)))
    return tuple(used) + extra


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool padding mask (True at padding) -> (B, h, w) by nearest sampling, as DETR does per level."""
    return F.interpolate(mask[None].float(), size=size, mode="nearest")[0].to(torch.bool)
