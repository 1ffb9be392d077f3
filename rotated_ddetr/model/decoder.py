"""Rotated decoder: queries (B, Q, d) + reference rboxes (B, Q, 5) + encoder memory -> per-layer logits and rboxes.

Each layer runs self-attention, rotated deformable cross-attention and an FFN, then its own class and box heads;
with box refinement the predicted rbox (angle included) becomes the next layer's reference (detached).
"""

import torch
import torch.nn.functional as F
from torch import nn

from rotated_ddetr.model.attention import MultiScaleLayout, RotatedMSDeformAttn
from rotated_ddetr.model.heads import MLP, class_bias_init, refine_rboxes
from rotated_ddetr.model.position_encoding import rbox_sine_embedding


class DeformableDecoderLayer(nn.Module):
    """Self-attention, rotated cross-attention, FFN; post-norm (Deformable DETR's decoder layer).

    Args:
        cross_attn: a `RotatedMSDeformAttn` of width d_model.
        d_model: query channels.
        n_heads: heads of the self-attention.
        ffn_dim: hidden width of the feed-forward network.
        dropout: dropout probability.
    """

    def __init__(self, cross_attn: RotatedMSDeformAttn, *, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = cross_attn
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_rboxes: torch.Tensor,
        memory: torch.Tensor,
        layout: MultiScaleLayout,
        self_attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, Q, d) queries + (B, Q, d) positions + (B, Q, 5) references + (B, S, d) memory -> (B, Q, d).

        `self_attn_mask` (Q, Q) bool, True where query i must not attend to query j (denoising groups).
        """
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attended))
        cross = self.cross_attn(tgt + query_pos, reference_rboxes, memory, layout)
        tgt = self.norm2(tgt + self.dropout(cross))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class RotatedDecoder(nn.Module):
    """Decoder layers with their own class and box heads, refining rotated reference boxes layer by layer.

    The query positional embedding of every layer is an MLP of the sine embedding of its reference rbox
    (`rbox_sine_embedding`, as DAB-DETR / DINO for 4-d boxes), so the current angle conditions the attention.

    Args:
        layers: the built decoder layers.
        d_model: query channels.
        num_classes: object classes (sigmoid, no background).
        box_refine: whether each layer's prediction becomes the next layer's reference (iterative refinement);
            otherwise every layer predicts relative to the initial references.
    """

    def __init__(self, layers: list[DeformableDecoderLayer], d_model: int, num_classes: int, box_refine: bool):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even, got {d_model}")
        self.layers = nn.ModuleList(layers)
        self.box_refine = box_refine
        self.ref_point_head = MLP(5 * (d_model // 2), d_model, d_model, 2)
        self.class_heads = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in layers)
        self.box_heads = nn.ModuleList(MLP(d_model, d_model, 5, 3) for _ in layers)
        for class_head, box_head in zip(self.class_heads, self.box_heads, strict=True):
            nn.init.constant_(class_head.bias, class_bias_init())
            box_head.zero_last_layer()

    def forward(
        self,
        tgt: torch.Tensor,
        reference_rboxes: torch.Tensor,
        memory: torch.Tensor,
        layout: MultiScaleLayout,
        self_attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs all layers.

        Args:
            tgt: (B, Q, d) content queries.
            reference_rboxes: (B, Q, 5) normalised initial references.
            memory: (B, S, d) encoder memory.
            layout: the memory's token layout.
            self_attn_mask: (Q, Q) bool, True where query i must not attend to query j; None = no mask.

        Returns:
            logits (num_layers, B, Q, C) and rboxes (num_layers, B, Q, 5) normalised (angle in [-pi/2, pi/2),
            not canonicalised).
        """
        all_logits, all_rboxes = [], []
        for layer, class_head, box_head in zip(self.layers, self.class_heads, self.box_heads, strict=True):
            query_pos = self.ref_point_head(rbox_sine_embedding(reference_rboxes, tgt.shape[-1] // 2))
            tgt = layer(tgt, query_pos, reference_rboxes, memory, layout, self_attn_mask)
            rboxes = refine_rboxes(reference_rboxes, box_head(tgt))
            all_logits.append(class_head(tgt))
            all_rboxes.append(rboxes)
            if self.box_refine:
                reference_rboxes = rboxes.detach()  # Deformable DETR: no gradient through the next reference
        return torch.stack(all_logits), torch.stack(all_rboxes)
