"""One optimisation step and what it needs: config sections -> set criterion, AdamW, learning-rate schedule, `Trainer`.

`build_trainer(cfg, model, device, steps_per_epoch)` wires them as training runs them; the loop (`loop.py`), the
training-step benchmark and the tests call it. `Trainer.step`: autocast forward, float32 loss, backward, clipping,
AdamW step.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from rotated_ddetr.checkpoint import unwrap
from rotated_ddetr.config import Config, LossConfig, OptimConfig
from rotated_ddetr.data.batching import Batch
from rotated_ddetr.model import DetectorOutput
from rotated_ddetr.structures import autocast_dtype
from rotated_ddetr.training.assigner import TopKAssigner
from rotated_ddetr.training.criterion import SetCriterion
from rotated_ddetr.training.matcher import HungarianMatcher


def build_criterion(loss: LossConfig, num_classes: int) -> SetCriterion:
    """The set criterion, its Hungarian matcher and (with `enc_positives`) its dense assigner, configured."""
    matcher = HungarianMatcher(
        class_weight=loss.match_class_weight, l1_weight=loss.match_l1_weight, iou_weight=loss.match_iou_weight,
        kld_weight=loss.match_kld_weight, focal_alpha=loss.focal_alpha, focal_gamma=loss.focal_gamma,
    )  # fmt: skip
    assigner = TopKAssigner(matcher, k=loss.enc_positives) if loss.enc_positives else None
    return SetCriterion(
        matcher, num_classes, class_weight=loss.class_weight, l1_weight=loss.l1_weight, kld_weight=loss.kld_weight,
        focal_alpha=loss.focal_alpha, focal_gamma=loss.focal_gamma, angle_weight=loss.angle_weight, assigner=assigner,
        iou_aware=loss.iou_aware, kld_symmetric=loss.kld_symmetric,
    )  # fmt: skip


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: the backbone at `lr_backbone`, everything else at `lr`."""
    backbone, rest = [], []
    for name, parameter in unwrap(model).named_parameters():
        if parameter.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(parameter)
    groups = [{"params": rest, "lr": optim.lr}]
    if backbone and optim.lr_backbone > 0:
        groups.append({"params": backbone, "lr": optim.lr_backbone})
    elif backbone:
        for parameter in backbone:
            parameter.requires_grad_(False)  # lr_backbone = 0: a frozen backbone
    # The fused kernel (CPU and CUDA) is several times faster than the per-tensor loop torch uses by default on CPU.
    return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=True)


class LrSchedule:
    """Learning-rate multiplier of each optimiser step: linear warmup, then x lr_drop_factor from the drop on.

    The drop comes at epoch `lr_drop`, at `lr_drop_time` of a step budget (`max_steps`) if that is earlier, or
    earlier still when `drop_from` is called (the loop does so once `lr_drop_time` of a time budget has passed). A
    callable object, so `LambdaLR.state_dict` saves the drop step with the schedule and a resumed run continues it.

    Args:
        steps_per_epoch: optimiser steps per epoch.
        optim: the optimisation config (warmup_steps, lr_drop, lr_drop_factor, lr_drop_time).
        max_steps: the run's step budget (`train.max_steps`), or None.
    """

    def __init__(self, steps_per_epoch: int, optim: OptimConfig, max_steps: int | None = None) -> None:
        self.warmup_steps, self.drop_factor = optim.warmup_steps, optim.lr_drop_factor
        self.drop_step = optim.lr_drop * steps_per_epoch if optim.lr_drop > 0 else None
        if max_steps is not None and optim.lr_drop_time:
            self.drop_from(round(max_steps * optim.lr_drop_time))

    def __call__(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        dropped = self.drop_step is not None and step >= self.drop_step
        return warmup * (self.drop_factor if dropped else 1.0)

    def drop_from(self, step: int) -> None:
        """Drops the rates from optimiser step `step` on (if not dropped already)."""
        self.drop_step = step if self.drop_step is None else min(self.drop_step, step)


class Trainer:
    """One optimisation step at a time: autocast forward, set loss in float32, (scaled) backward, clipping, step.

    Args:
        model: the detector, possibly wrapped in DistributedDataParallel, on `device`.
        criterion: the set criterion.
        optimizer, scheduler: AdamW and its per-step LambdaLR.
        amp: "auto" (bf16 where the device computes it natively, else float32), "none", "bf16" or "fp16" (fp16
            uses a GradScaler); see `structures.autocast_dtype`.
        clip_max_norm: gradient clipping norm (0 disables).
        device: the compute device.
    """

    def __init__(self, model, criterion, optimizer, scheduler, amp: str, clip_max_norm: float, device) -> None:
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.amp_dtype, self.clip_max_norm, self.device = autocast_dtype(amp, device), clip_max_norm, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step(self, batch: Batch) -> dict[str, float]:
        """Trains on one batch.

        Returns:
            "loss" (weighted total), "loss_class", "loss_l1", "loss_kld" (and "loss_angle" when weighted) of
            the last decoder layer (unweighted),
            "grad_norm" (before clipping; 0 when clipping is off) and "lr" of the transformer group.

        Raises:
            FloatingPointError: the loss is not finite (outside fp16, where the scaler skips such steps).
        """
        self.model.train()
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(batch.images, batch.masks, batch.targets)
        losses = self.criterion(_as_float32(outputs), batch.targets)
        loss = losses["loss"]
        if not torch.isfinite(loss) and not self.scaler.is_enabled():
            raise FloatingPointError(f"non-finite loss {loss.item()}: lower optim.lr or optim.clip_max_norm")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = 0.0
        if self.clip_max_norm > 0:
            self.scaler.unscale_(self.optimizer)
            parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.clip_max_norm))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        keys = ["loss", *(f"loss_{name}" for name in self.criterion.weights)]
        values = {k: float(losses[k].detach()) for k in keys}
        return {**values, "grad_norm": grad_norm, "lr": lr}


def _as_float32(outputs: DetectorOutput) -> DetectorOutput:
    """The outputs in float32 (the criterion and matcher run outside autocast)."""

    def cast(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.float()

    dense, dn = outputs.dense, outputs.denoising
    if dense is not None:
        dense = dataclasses.replace(dense, logits=dense.logits.float(), rboxes=dense.rboxes.float())
    if dn is not None:
        dn = dataclasses.replace(dn, logits=dn.logits.float(), rboxes=dn.rboxes.float())
    return dataclasses.replace(
        outputs, logits=outputs.logits.float(), rboxes=outputs.rboxes.float(),
        enc_logits=cast(outputs.enc_logits), enc_rboxes=cast(outputs.enc_rboxes), dense=dense, denoising=dn,
    )  # fmt: skip


def build_trainer(
    cfg: Config, model: nn.Module, device: torch.device, steps_per_epoch: int, wrapped: nn.Module | None = None
) -> Trainer:
    """The criterion, AdamW, learning-rate schedule and `Trainer` of a resolved config around `model` (on `device`).

    Args:
        cfg: the resolved config (its `loss`, `optim` and `train.amp`).
        model: the detector; the optimiser takes its parameters.
        device: where it runs.
        steps_per_epoch: optimiser steps per epoch (the epoch-based learning-rate drop).
        wrapped: the module the trainer calls, e.g. `model` in DDP (`distributed.wrap_model`); default `model`.
    """
    optimizer = build_optimizer(model, cfg.optim)
    schedule = LrSchedule(steps_per_epoch, cfg.optim, cfg.train.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    criterion = build_criterion(cfg.loss, cfg.model.num_classes)
    module = model if wrapped is None else wrapped
    return Trainer(module, criterion, optimizer, scheduler, cfg.train.amp, cfg.optim.clip_max_norm, device)
