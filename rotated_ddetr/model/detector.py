"""The detector: padded [0, 1] images (B, 3, H, W) + padding mask -> `DetectorOutput` (per-layer logits, rboxes).

`Detector.forward` calls the stages in order: backbone -> projection -> positional encoding -> deformable encoder ->
(two-stage proposals) -> rotated decoder. `build_model(ModelConfig)` wires them with plain constructor calls.
"""

from dataclasses import dataclass

import torch
from torch import nn

from rotated_ddetr.config import ModelConfig
from rotated_ddetr.model.attention import MultiScaleLayout, RotatedMSDeformAttn
from rotated_ddetr.model.backbone import MultiScaleProjection, ResNetBackbone, level_strides, resize_mask
from rotated_ddetr.model.decoder import DeformableDecoderLayer, RotatedDecoder
from rotated_ddetr.model.denoising import DenoisingOutput, QueryDenoising
from rotated_ddetr.model.encoder import DeformableEncoder, DeformableEncoderLayer, TwoStageProposals, token_rboxes
from rotated_ddetr.model.heads import activate_rboxes, inverse_sigmoid
from rotated_ddetr.model.position_encoding import PositionEmbeddingSine
from rotated_ddetr.structures import Target

# Side of the two-stage base boxes, in strides of the token's level: 64 px at stride 8, close to Deformable DETR's
# 0.05 * 2^l of an ~1000 px image (51 px), doubling with each level.
PROPOSAL_SIDE_IN_STRIDES = 8.0


@dataclass
class DenseProposals:
    """The two-stage proposal head's prediction at every encoder token (for one-to-many encoder supervision).

    Attributes:
        logits: (B, S, C) float class logits.
        rboxes: (B, S, 5) float normalised rboxes.
        points: (B, S, 2) float normalised token centres (the base rboxes' centres).
        strides: (S,) float stride of each token's level in pixels.
        padding_mask: (B, S) bool, True for padded tokens.
    """

    logits: torch.Tensor
    rboxes: torch.Tensor
    points: torch.Tensor
    strides: torch.Tensor
    padding_mask: torch.Tensor


@dataclass
class DetectorOutput:
    """What the detector predicts for a batch.

    Attributes:
        logits: (num_dec_layers, B, Q, C) float class logits (sigmoid scores, no background); last layer = final.
        rboxes: (num_dec_layers, B, Q, 5) float normalised rboxes (cx, cy by the valid width/height, w by the width,
            h by the height, angle in radians in [-pi/2, pi/2)); not canonicalised.
        enc_logits: (B, Q, C) logits of the top-k encoder proposals, or None without two-stage.
        enc_rboxes: (B, Q, 5) normalised rboxes of those proposals, or None.
        image_sizes: (B, 2) int64 (height, width) of each image's valid area in pixels: the frame of the
            normalised rboxes.
        dense: the proposal head's prediction at every token, or None without two-stage.
        denoising: the outputs of the denoising queries (training with targets and denoising on), else None.
    """

    logits: torch.Tensor
    rboxes: torch.Tensor
    enc_logits: torch.Tensor | None
    enc_rboxes: torch.Tensor | None
    image_sizes: torch.Tensor
    dense: DenseProposals | None = None
    denoising: DenoisingOutput | None = None


class Detector(nn.Module):
    """Rotated Deformable DETR.

    Args:
        backbone: a `ResNetBackbone`.
        projection: its `MultiScaleProjection` to d_model.
        position_encoding: a `PositionEmbeddingSine` with d_model / 2 features per axis.
        encoder: a `DeformableEncoder`.
        decoder: a `RotatedDecoder`.
        proposals: `TwoStageProposals` for the two-stage variant, or None for learned query references.
        d_model: transformer width.
        num_queries: decoder queries.
        n_points: sampling points per head and level (sets the encoder reference size).
        denoising: `QueryDenoising` used in training when targets are given, or None.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        projection: MultiScaleProjection,
        position_encoding: PositionEmbeddingSine,
        encoder: DeformableEncoder,
        decoder: RotatedDecoder,
        proposals: TwoStageProposals | None,
        *,
        d_model: int,
        num_queries: int,
        n_points: int,
        denoising: QueryDenoising | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.projection, self.position_encoding = backbone, projection, position_encoding
        self.encoder, self.decoder, self.proposals = encoder, decoder, proposals
        self.denoising = denoising
        self.strides = level_strides(backbone.strides, len(projection.layers))
        self.encoder_side_in_strides = 2.0 * n_points
        self.level_embed = nn.Parameter(torch.empty(len(projection.layers), d_model).normal_())
        self.query_content = nn.Embedding(num_queries, d_model)
        # Without two-stage: learned references in unconstrained form (`activate_rboxes`), centres uniform over the
        # image, sides 5% of it, angle 0.
        init = torch.cat((torch.rand(num_queries, 2), torch.full((num_queries, 2), 0.05)), dim=-1)
        init = torch.cat((inverse_sigmoid(init), torch.zeros(num_queries, 1)), dim=-1)
        self.query_rboxes = nn.Parameter(init) if proposals is None else None

    def class_rows(self) -> dict[str, int]:
        """The state-dict tensors whose rows index the classes -> how many class rows they start with (the denoising
        label embedding has one padding row after them): what fine-tuning remaps to another class list."""
        heads = {f"decoder.class_heads.{i}": head for i, head in enumerate(self.decoder.class_heads)}
        if self.proposals is not None:
            heads["proposals.class_head"] = self.proposals.class_head
        rows = {f"{prefix}.{name}": head.out_features for prefix, head in heads.items() for name in ("weight", "bias")}
        if self.denoising is not None:
            rows["denoising.label_embed.weight"] = self.denoising.num_classes
        return rows

    @property
    def size_divisor(self) -> int:
        """Pad images to a multiple of this (the largest stride) so that every level covers the padded image."""
        return max(self.strides)

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, targets: list[Target] | None = None
    ) -> DetectorOutput:
        """Detects rotated objects.

        Args:
            images: (B, 3, H, W) float RGB images in [0, 1] (the backbone applies the ImageNet mean/std), padded at
                the bottom/right to a common size (a multiple of `size_divisor` keeps the sampling exact).
            masks: (B, H, W) bool, True at padding; None when no image is padded.
            targets: B `Target`s, for the denoising queries in training; ignored otherwise.

        Returns:
            A `DetectorOutput`.
        """
        if masks is None:
            masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        features = self.projection(self.backbone(images))
        level_masks = [resize_mask(masks, tuple(f.shape[-2:])) for f in features]
        pos = [
            self.position_encoding(m) + e[None, :, None, None]
            for m, e in zip(level_masks, self.level_embed, strict=True)
        ]
        src = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)  # (B, S, d)
        pos = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], dim=1).to(src.dtype)
        layout = _layout(features, level_masks, masks)
        enc_refs = token_rboxes(layout, self.strides, self.encoder_side_in_strides)
        memory = self.encoder(src, pos, enc_refs, layout)
        batch = images.shape[0]
        enc_logits = enc_rboxes = dense = None
        if self.proposals is not None:
            base = token_rboxes(layout, self.strides, PROPOSAL_SIDE_IN_STRIDES)
            enc_logits, enc_rboxes, dense_logits, dense_rboxes = self.proposals(
                memory, base, layout.padding_mask, layout.image_sizes
            )
            strides = torch.tensor(self.strides, dtype=torch.float32).to(images.device, non_blocking=True)
            # output_size given: repeat_interleave then needs no read-back of the repeats (no host sync on CUDA).
            strides = strides.repeat_interleave(layout.spatial_shapes.prod(-1), output_size=memory.shape[1])
            dense = DenseProposals(dense_logits, dense_rboxes, base[..., :2], strides, layout.padding_mask)
            references = enc_rboxes.detach()
        else:
            references = activate_rboxes(self.query_rboxes)[None].expand(batch, -1, -1)
        tgt = self.query_content.weight[None].expand(batch, -1, -1)
        image_sizes = layout.image_sizes.round().to(torch.int64)
        if self.denoising is None or not self.training or targets is None:
            logits, rboxes = self.decoder(tgt, references, memory, layout)
            return DetectorOutput(logits, rboxes, enc_logits, enc_rboxes, image_sizes, dense)
        dn = self.denoising(targets, tgt.shape[1])
        n = dn.content.shape[1]
        tgt = torch.cat((dn.content.to(tgt.dtype), tgt), dim=1)
        references = torch.cat((dn.rboxes.to(references.dtype), references), dim=1)
        logits, rboxes = self.decoder(tgt, references, memory, layout, dn.attn_mask)
        denoising = DenoisingOutput(logits[:, :, :n], rboxes[:, :, :n], dn.target_index, self.denoising.groups)
        return DetectorOutput(logits[:, :, n:], rboxes[:, :, n:], enc_logits, enc_rboxes, image_sizes, dense, denoising)


def _layout(features: list[torch.Tensor], level_masks: list[torch.Tensor], mask: torch.Tensor) -> MultiScaleLayout:
    """The token layout of the flattened levels; valid sizes come from the full-resolution padding mask."""
    level_shapes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)  # metadata: no device read
    # Built on the host and copied asynchronously: torch.tensor(..., device="cuda") would first wait for the GPU.
    shapes = torch.tensor(level_shapes, dtype=torch.int64).to(mask.device, non_blocking=True)  # (L, 2)
    starts = torch.cat((shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]))
    valid = ~mask
    # Valid rows / columns hold at least one unpadded pixel (images are padded at the bottom/right).
    sizes = torch.stack((valid.any(2).sum(1), valid.any(1).sum(1)), dim=-1).to(torch.float32).clamp(min=1.0)
    ratios = torch.stack((sizes[:, 1] / mask.shape[2], sizes[:, 0] / mask.shape[1]), dim=-1)  # (B, 2) as (x, y)
    padding = torch.cat([m.flatten(1) for m in level_masks], dim=1)  # (B, S)
    return MultiScaleLayout(level_shapes, shapes, starts, padding, sizes, ratios)


def build_model(cfg: ModelConfig) -> Detector:
    """Builds a `Detector` from a `ModelConfig` with plain constructor calls."""
    backbone = ResNetBackbone(cfg.depth, pretrained=cfg.pretrained, frozen_stages=cfg.frozen_stages,
                              norm=cfg.backbone_norm, stages=cfg.backbone_stages)  # fmt: skip
    projection = MultiScaleProjection(backbone.out_channels, cfg.d_model, cfg.n_levels)

    def attention() -> RotatedMSDeformAttn:
        return RotatedMSDeformAttn(
            d_model=cfg.d_model, n_levels=cfg.n_levels, n_heads=cfg.n_heads, n_points=cfg.n_points
        )

    encoder = DeformableEncoder(
        [DeformableEncoderLayer(attention(), d_model=cfg.d_model, ffn_dim=cfg.ffn_dim, dropout=cfg.dropout)
         for _ in range(cfg.enc_layers)]
    )  # fmt: skip
    dec_layers = [
        DeformableDecoderLayer(attention(), d_model=cfg.d_model, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                               dropout=cfg.dropout)
        for _ in range(cfg.dec_layers)
    ]  # fmt: skip
    decoder = RotatedDecoder(dec_layers, cfg.d_model, cfg.num_classes, cfg.box_refine)
    proposals = None
    if cfg.two_stage:
        proposals = TwoStageProposals(d_model=cfg.d_model, num_classes=cfg.num_classes, num_queries=cfg.num_queries,
                                      nms_iou=cfg.proposal_nms_iou)  # fmt: skip
    denoising = None
    if cfg.dn_groups > 0:
        denoising = QueryDenoising(num_classes=cfg.num_classes, d_model=cfg.d_model, groups=cfg.dn_groups,
                                   box_noise=cfg.dn_box_noise, label_noise=cfg.dn_label_noise)  # fmt: skip
    return Detector(
        backbone,
        projection,
        PositionEmbeddingSine(cfg.d_model // 2),
        encoder,
        decoder,
        proposals,
        d_model=cfg.d_model,
        num_queries=cfg.num_queries,
        n_points=cfg.n_points,
        denoising=denoising,
    )
