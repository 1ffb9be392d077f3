"""Query denoising (DN-DETR) for training: targets -> noised rbox queries the decoder must restore, and its mask.

Built by the detector from the targets of a training batch and placed before the matching queries; their outputs
(`DenoisingOutput`) are scored against the targets they came from, without matching. Inference never uses it.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from rotated_ddetr.boxes import denormalize_rboxes, normalize_rboxes, wrap_angle
from rotated_ddetr.structures import Target

# The largest angle noise, as a fraction of a quarter turn per unit of `box_noise` (0.4 -> +-18 degrees).
_ANGLE_NOISE_PER_BOX_NOISE = 0.5


@dataclass
class DenoisingQueries:
    """Noised targets as decoder queries.

    Attributes:
        content: (B, N, d) content queries (embeddings of the noised labels).
        rboxes: (B, N, 5) normalised noised reference rboxes.
        target_index: (B, N) int64 index of the target each query came from; -1 for padding.
        attn_mask: (N + Q, N + Q) bool self-attention mask for [denoising; matching] queries, True = blocked.
    """

    content: torch.Tensor
    rboxes: torch.Tensor
    target_index: torch.Tensor
    attn_mask: torch.Tensor


@dataclass
class DenoisingOutput:
    """What the decoder made of the denoising queries.

    Attributes:
        logits: (num_dec_layers, B, N, C) class logits.
        rboxes: (num_dec_layers, B, N, 5) normalised rboxes.
        target_index: (B, N) int64 target of each query (-1: padding, no loss).
        groups: how many noised copies of each target there are.
    """

    logits: torch.Tensor
    rboxes: torch.Tensor
    target_index: torch.Tensor
    groups: int


class QueryDenoising(nn.Module):
    """Makes `groups` noised copies of every target (DN-DETR, Li et al. 2022) for rotated boxes.

    Noise, per copy: the centre moves by up to `box_noise` x (w/2, h/2) along the box's own axes, each side is scaled
    by a factor in [1 - box_noise, 1 + box_noise], the angle turns by up to box_noise x 45 degrees (all uniform; in
    pixels, so the noise is isotropic), and the label is replaced by a random class with probability `label_noise`.
    Groups do not see each other and the matching queries do not see any of them (the attention mask), so the
    matching part learns as without denoising.

    Args:
        num_classes: object classes.
        d_model: query channels.
        groups: noised copies per target.
        box_noise: box noise scale (DN-DETR's lambda).
        label_noise: probability of a flipped label.
    """

    def __init__(
        self, *, num_classes: int, d_model: int, groups: int, box_noise: float = 0.4, label_noise: float = 0.2
    ) -> None:
        super().__init__()
        self.num_classes, self.groups = num_classes, groups
        self.box_noise, self.label_noise = box_noise, label_noise
        self.label_embed = nn.Embedding(num_classes + 1, d_model)  # the last row pads

    def forward(self, targets: list[Target], num_queries: int) -> DenoisingQueries:
        """Noised queries for a batch.

        Args:
            targets: B `Target`s on the model's device.
            num_queries: matching queries Q that follow the denoising ones.
        """
        device = self.label_embed.weight.device
        most = max(1, max(len(t) for t in targets))  # one padded slot at least: keeps the embedding used
        n = self.groups * most
        labels = torch.full((len(targets), n), self.num_classes, dtype=torch.int64, device=device)
        rboxes = torch.tensor([0.5, 0.5, 0.1, 0.1, 0.0]).to(device, non_blocking=True).repeat(len(targets), n, 1)
        index = torch.full((len(targets), n), -1, dtype=torch.int64, device=device)
        for b, target in enumerate(targets):
            count = len(target)
            if count == 0:
                continue
            slots = torch.arange(self.groups, device=device)[:, None] * most + torch.arange(count, device=device)
            slots = slots.flatten()  # group-major: group g holds slots g*most .. g*most + count - 1
            labels[b, slots] = self._noised_labels(target.labels.repeat(self.groups))
            rboxes[b, slots] = self._noised_rboxes(target.rboxes.float().repeat(self.groups, 1), target.image_size)
            index[b, slots] = torch.arange(count, device=device).repeat(self.groups)
        return DenoisingQueries(self.label_embed(labels), rboxes, index, self._mask(most, num_queries, device))

    def _noised_labels(self, labels: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise
        return torch.where(flip, torch.randint_like(labels, self.num_classes), labels)

    def _noised_rboxes(self, rboxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(K, 5) normalised rboxes -> noised, still normalised (noise drawn in pixels)."""
        cx, cy, w, h, a = denormalize_rboxes(rboxes, image_size).unbind(-1)
        noise = (torch.rand(rboxes.shape[0], 5, device=rboxes.device) * 2 - 1) * self.box_noise  # U(-lambda, lambda)
        du, dv = noise[:, 0] * w / 2, noise[:, 1] * h / 2  # in the box frame
        cx, cy = cx + du * a.cos() - dv * a.sin(), cy + du * a.sin() + dv * a.cos()
        w, h = w * (1 + noise[:, 2]), h * (1 + noise[:, 3])
        a = wrap_angle(a + noise[:, 4] * _ANGLE_NOISE_PER_BOX_NOISE * math.pi / 2)
        out = normalize_rboxes(torch.stack((cx, cy, w, h, a), dim=-1), image_size)
        return torch.cat((out[:, :4].clamp(1e-4, 1 - 1e-4), out[:, 4:]), dim=-1)

    def _mask(self, most: int, num_queries: int, device: torch.device) -> torch.Tensor:
        """(N + Q, N + Q) True where attention is blocked: across groups, and from matching to denoising queries."""
        n = self.groups * most
        group = torch.arange(n, device=device) // most
        mask = torch.zeros(n + num_queries, n + num_queries, dtype=torch.bool, device=device)
        mask[:n, :n] = group[:, None] != group[None, :]
        mask[n:, :n] = True
        return mask
