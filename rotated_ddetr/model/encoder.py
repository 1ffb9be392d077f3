"""Deformable encoder: flattened multi-scale tokens (B, S, d) -> memory (B, S, d); and the two-stage proposals.

Each token attends around an axis-aligned square reference rbox at its own position (`token_rboxes`), through the
same rotated deformable attention the decoder uses. `TwoStageProposals` turns memory into top-k rotated proposals.
"""

import torch
import torch.nn.functional as F
from torch import nn

from rotated_ddetr.boxes import denormalize_rboxes, normalize_rboxes
from rotated_ddetr.model.attention import MultiScaleLayout, RotatedMSDeformAttn
from rotated_ddetr.model.heads import MLP, class_bias_init, refine_rboxes
from rotated_ddetr.ops import nms_rotated


def token_rboxes(layout: MultiScaleLayout, strides: tuple[int, ...], side_in_strides: float) -> torch.Tensor:
    """One axis-aligned square rbox per token, centred on the token's cell, `side_in_strides * stride` pixels wide.

    Used as the encoder's references (side 2 * n_points strides: the initial offset ring then samples the token's
    own level at 1, 2, ..., n_points feature cells, the radii of Deformable DETR's 2-d references) and as the base
    boxes of the two-stage proposals.

    Args:
        layout: the token layout (spatial shapes, valid sizes).
        strides: nominal stride of each level in pixels.
        side_in_strides: box side in units of the level's stride.

    Returns:
        (B, S, 5) normalised rboxes (relative to each image's valid area), angle 0.
    """
    ratios = layout.valid_ratios[:, None, :]  # (B, 1, 2)
    boxes = []
    for (h, w), stride in zip(layout.level_shapes, strides, strict=True):
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=ratios.device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=ratios.device) + 0.5) / w,
            indexing="ij",
        )
        centres = torch.stack((xs.flatten(), ys.flatten()), dim=-1)[None] / ratios  # (B, h*w, 2) valid frame
        # The side in each image's normalised frame: columns 2, 3 of a normalised (side, ..., side) row (filled on
        # the device, no host-to-device copy).
        square = normalize_rboxes(ratios.new_full((5,), side_in_strides * stride), layout.image_sizes)  # (B, 5)
        sides = square[:, None, 2:4].expand_as(centres)  # (B, h*w, 2)
        boxes.append(torch.cat((centres, sides, torch.zeros_like(centres[..., :1])), dim=-1))
    return torch.cat(boxes, dim=1)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels + FFN, post-norm (Deformable DETR's encoder layer).

    Args:
        self_attn: a `RotatedMSDeformAttn` of width d_model.
        d_model: token channels.
        ffn_dim: hidden width of the feed-forward network.
        dropout: dropout probability.
    """

    def __init__(self, self_attn: RotatedMSDeformAttn, *, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, reference_rboxes: torch.Tensor, layout: MultiScaleLayout
    ) -> torch.Tensor:
        """(B, S, d) tokens + (B, S, d) positions + (B, S, 5) references -> (B, S, d)."""
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference_rboxes, src, layout)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DeformableEncoder(nn.Module):
    """A stack of `DeformableEncoderLayer`s sharing the token references.

    Args:
        layers: the built encoder layers.
    """

    def __init__(self, layers: list[DeformableEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, reference_rboxes: torch.Tensor, layout: MultiScaleLayout
    ) -> torch.Tensor:
        """(B, S, d) tokens, (B, S, d) positional + level embeddings, (B, S, 5) references -> (B, S, d) memory."""
        for layer in self.layers:
            src = layer(src, pos, reference_rboxes, layout)
        return src


class TwoStageProposals(nn.Module):
    """Encoder memory -> the top-k rotated proposals that seed the decoder (Deformable DETR's two-stage variant).

    Each token predicts class logits and a 5-d delta from its base rbox (`token_rboxes`); the k tokens with the
    highest class score (max over classes, as DINO) become proposals. The decoder gets them detached.

    With `nms_iou` > 0, the proposals first go through class-agnostic rotated NMS (the best `PRE_NMS` tokens), and
    the suppressed ones fill the k slots only after all survivors: a one-to-many trained proposal head marks each
    object with several near-identical boxes, which would leave the one-to-one decoder to untangle duplicates.

    Args:
        d_model: memory channels.
        num_classes: object classes (sigmoid scores, no background class).
        num_queries: k, the number of proposals kept per image.
        nms_iou: IoU above which a lower-scored proposal is deferred behind the survivors (0 = no NMS).
    """

    PRE_NMS = 1000

    def __init__(self, *, d_model: int, num_classes: int, num_queries: int, nms_iou: float = 0.0) -> None:
        super().__init__()
        self.num_queries, self.nms_iou = num_queries, nms_iou
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = MLP(d_model, d_model, 5, 3)
        nn.init.constant_(self.class_head.bias, class_bias_init())
        self.box_head.zero_last_layer()

    def forward(
        self, memory: torch.Tensor, base_rboxes: torch.Tensor, padding_mask: torch.Tensor, image_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicts a proposal at every token and selects the top-k of each image.

        Args:
            memory: (B, S, d) encoder output.
            base_rboxes: (B, S, 5) normalised base rboxes of the tokens.
            padding_mask: (B, S) bool, True for padded tokens (never selected).
            image_sizes: (B, 2) valid image (height, width) in pixels (NMS compares pixel rboxes).

        Returns:
            top-k logits (B, k, C) and rboxes (B, k, 5) normalised, then the dense logits (B, S, C) and rboxes
            (B, S, 5) of every token; all with gradients (for the encoder loss).

        Raises:
            ValueError: fewer tokens than k.
        """
        if memory.shape[1] < self.num_queries:
            raise ValueError(f"{memory.shape[1]} tokens cannot seed {self.num_queries} queries: the image is too small")
        memory = self.norm(self.proj(memory.masked_fill(padding_mask[..., None], 0.0)))
        logits = self.class_head(memory)  # (B, S, C)
        rboxes = refine_rboxes(base_rboxes, self.box_head(memory))  # (B, S, 5)
        scores = logits.detach().amax(-1).masked_fill(padding_mask, float("-inf"))
        if self.nms_iou > 0:
            index = self._select_with_nms(scores, rboxes.detach(), image_sizes)[..., None]
        else:
            index = scores.topk(self.num_queries, dim=1).indices[..., None]  # (B, k, 1)
        top_logits = logits.gather(1, index.expand(-1, -1, logits.shape[-1]))
        return top_logits, rboxes.gather(1, index.expand(-1, -1, 5)), logits, rboxes

    @torch.no_grad()
    def _select_with_nms(self, scores: torch.Tensor, rboxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B, S) scores, (B, S, 5) normalised rboxes -> (B, k) token indices: NMS survivors, then the rest."""
        k = self.num_queries
        candidates = scores.topk(max(k, min(self.PRE_NMS, scores.shape[1])), dim=1).indices  # (B, n) by score
        selected = []
        for b in range(scores.shape[0]):
            boxes = denormalize_rboxes(rboxes[b, candidates[b]].float(), image_sizes[b])
            keep = nms_rotated(boxes, scores[b, candidates[b]].float(), self.nms_iou)  # positions, by score
            deferred = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
            deferred[keep] = False
            order = torch.cat((keep, deferred.nonzero().flatten()))[:k]
            selected.append(candidates[b, order])
        return torch.stack(selected)
