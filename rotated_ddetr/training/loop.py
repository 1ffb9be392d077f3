"""The training loop: a resolved `Config` -> checkpoints, `config.json`, `log.jsonl` and TensorBoard in output.dir.

Set-up (seeds, data, model and its `train.init_from` weights, then `trainer.build_trainer`: criterion, AdamW,
schedule; resume) -> epochs of `Trainer.step` -> a checkpoint after every epoch (and when `train.max_minutes` runs
out) -> periodic DOTA mAP on `data.val_root`.
`rotated-ddetr train` is a thin wrapper around `train`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from rotated_ddetr.checkpoint import load_checkpoint, save_checkpoint, set_rng_state, unwrap
from rotated_ddetr.config import Config, config_differences
from rotated_ddetr.data.batching import collate
from rotated_ddetr.data.dataset import DotaDataset
from rotated_ddetr.data.transforms import Augment
from rotated_ddetr.distributed import (
    DistContext,
    SkipSampler,
    any_process,
    barrier,
    reduce_mean,
    train_sampler,
    wrap_model,
)
from rotated_ddetr.evaluation import eval_dota
from rotated_ddetr.fileio import atomic_open, atomic_write_text
from rotated_ddetr.images import ImageError, plain_message
from rotated_ddetr.inference import Predictor, predict_folder
from rotated_ddetr.model import build_model
from rotated_ddetr.training.init_from import InitReport, init_from, log_init
from rotated_ddetr.training.logger import RunLogger
from rotated_ddetr.training.run_folder import RunFolderError, claim_run_folder
from rotated_ddetr.training.trainer import Trainer, build_trainer


class SetupError(ValueError):
    """Training cannot start: a missing or malformed dataset, a checkpoint that does not fit, a run folder in use or
    holding another run (the message says which)."""


class RunStopped(RuntimeError):
    """Training stopped early by a bad image or an interrupt, after saving its work to `checkpoint` (None under
    torchrun, where the other processes cannot join a save)."""

    def __init__(self, reason: str, checkpoint: Path | None) -> None:
        super().__init__(reason)
        self.reason, self.checkpoint = reason, checkpoint


@dataclass
class TrainResult:
    """What a call of `train` did: the counters reached, whether time ran out, the last checkpoint, last metrics."""

    epoch: int
    step: int
    stopped_early: bool
    checkpoint: Path | None
    metrics: dict | None
    data: dict | None = None  # the "data" record of log.jsonl: images, skipped images, objects and drops


@dataclass
class _Run:
    """Everything a training run carries between epochs."""

    cfg: Config
    ctx: DistContext
    trainer: Trainer
    dataset: DotaDataset
    sampler: torch.utils.data.DistributedSampler
    logger: RunLogger
    output: Path
    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    metrics: dict | None = None
    deadline: float | None = None  # time.monotonic() at which training stops (train.max_minutes)
    drop_time: float | None = None  # ... at which the learning rates drop (optim.lr_drop_time), until done
    objects: int = 0  # object instances trained on (after augmentation) by this process in this call
    objects_dropped: int = 0  # ... removed by augmentation (centre moved outside the image)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


def _dataset(cfg: Config) -> DotaDataset:
    """The training dataset; SetupError for a missing or malformed folder (and a missing val_root)."""
    d = cfg.data
    if d.train_root is None:
        raise SetupError("data.train_root is not set (the training dataset folder: images/ and labelTxt/)")
    if d.val_root is not None and not Path(d.val_root, "labelTxt").is_dir():
        raise SetupError(f"data.val_root {d.val_root}: no labelTxt/ folder (expected DOTA layout)")
    augment = Augment(hflip=d.hflip, vflip=d.vflip, rot90=d.rot90, rotate=d.rotate, degrees=d.rotate_degrees,
                      scale_jitter=d.scale_jitter)  # fmt: skip
    try:
        return DotaDataset(d.train_root, d.classes, d.drop_difficult, d.keep_empty, d.scale, augment, cfg.train.seed,
                           cache=d.cache_images, skip_bad_images=d.skip_bad_images)  # fmt: skip
    except (OSError, ValueError) as error:  # ImageError and DotaFormatError are ValueErrors naming the file
        raise SetupError(f"training data: {error}") from error


def _setup(cfg: Config, ctx: DistContext, resume: str | os.PathLike | None) -> _Run:
    """Builds data, model and optimisation state (restored from `resume` when given)."""
    t = cfg.train
    dataset = _dataset(cfg)
    _seed(t.seed)  # the same initial weights on every rank
    try:
        model = build_model(cfg.model).to(ctx.device)
    except (OSError, ValueError) as error:  # e.g. model.pretrained missing or not a fitting ResNet
        raise SetupError(f"model: {error}") from error
    report = _init_weights(cfg, ctx, model) if t.init_from is not None and resume is None else None
    steps_per_epoch = math.ceil(math.ceil(len(dataset) / ctx.world_size) / t.batch_size)
    trainer = build_trainer(cfg, model, ctx.device, steps_per_epoch, wrap_model(model, ctx))
    output = Path(cfg.output.dir)
    run = _Run(cfg, ctx, trainer, dataset, train_sampler(dataset, ctx, t.seed), RunLogger(output, ctx.is_main), output)
    _seed(t.seed + 1 + ctx.rank)  # dropout etc. differ between ranks
    if resume is not None:
        try:
            _restore(run, resume)
        except SetupError:
            run.logger.close()
            raise
        # Records after the checkpoint's step that a killed run logged are superseded from here (`logger.read_log`).
        run.logger.log("resume", run.step, {"epoch": run.epoch, "batches_done": run.batches_done, "from": str(resume)})
    if t.init_from is not None:
        log_init(run.logger, run.step, t.init_from, report, show=ctx.is_main)
    run.logger.log("data", run.step, _data_record(dataset))
    if ctx.is_main:
        atomic_write_text(output / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    return run


def _init_weights(cfg: Config, ctx: DistContext, model: torch.nn.Module) -> InitReport:
    """`train.init_from` into the new model (`init_from.init_from`); SetupError on every process when any fails."""
    report, problem = None, None
    try:
        report = init_from(model, cfg.train.init_from, cfg.data.classes, cfg.to_dict()["model"])
    except (OSError, ValueError) as error:  # CheckpointError is a ValueError naming the file
        problem = error
    if any_process(problem is not None, ctx):  # one line: torch's unpickling errors span several
        reason = " ".join(str(problem).split()) if problem else "another process could not load the file"
        raise SetupError(f"train.init_from: {reason}")
    return report


def _data_record(dataset: DotaDataset) -> dict:
    """What the dataset holds and left out: images, unreadable images skipped, objects, objects outside images."""
    return {"images": len(dataset), "skipped_images": [str(p) for p in dataset.skipped_images],
            "objects": dataset.num_objects, "objects_outside": sum(dataset.outside.values())}  # fmt: skip


def _claim_output(cfg: Config, ctx: DistContext, resuming: bool, overwrite: bool):
    """The run folder's lock, taken by the main process (`run_folder.claim_run_folder`); every process raises
    SetupError when it fails."""
    lock, problem = None, None
    if ctx.is_main:
        try:
            lock = claim_run_folder(cfg.output.dir, resuming, overwrite)
        except (RunFolderError, OSError) as error:
            problem = error
    if any_process(problem is not None, ctx):
        raise SetupError(f"output.dir: {problem}" if problem else "the main process could not claim output.dir")
    return lock


def _restore(run: _Run, path: str | os.PathLike) -> None:
    """Loads model, optimiser, schedule, scaler, counters and (on rank 0) RNG states from a checkpoint."""
    try:
        state = load_checkpoint(path, map_location=run.ctx.device)
        if list(state["classes"]) != list(run.cfg.data.classes):
            raise ValueError(f"{path}: trained for classes {state['classes']}, the config has {run.cfg.data.classes}")
        if state["optimizer"] is None:
            raise ValueError(f"{path}: holds no optimiser state, it cannot be resumed")
    except (OSError, ValueError) as error:
        raise SetupError(f"--resume: {error}") from error
    try:
        unwrap(run.trainer.model).load_state_dict(state["model"])
        run.trainer.optimizer.load_state_dict(state["optimizer"])
        run.trainer.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None:
            run.trainer.scaler.load_state_dict(state["scaler"])
    except (ValueError, RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0]
        changed = config_differences(state["config"], run.cfg.to_dict())
        detail = "; ".join(changed[:8]) + ("; ..." if len(changed) > 8 else "") if changed else "none"
        raise SetupError(
            f"--resume {path}: the training state does not fit this config ({first}). Resuming needs the config the "
            f"checkpoint was trained with; what differs (checkpoint -> now): {detail}"
        ) from None
    run.epoch, run.step, run.batches_done = state["epoch"], state["step"], state.get("batches_done", 0)
    if run.ctx.is_main:
        set_rng_state(state["rng"])
    else:
        _seed(run.cfg.train.seed + 1 + run.ctx.rank + run.step)


def _loader(run: _Run) -> torch.utils.data.DataLoader:
    """The DataLoader of the current epoch, skipping the batches a resumed run already trained on."""
    run.sampler.set_epoch(run.epoch)
    run.dataset.set_epoch(run.epoch)
    t = run.cfg.train
    sampler = SkipSampler(run.sampler, run.batches_done * t.batch_size) if run.batches_done else run.sampler
    # Its own generator (worker seeds), so that creating the loader does not draw from the global RNG.
    generator = torch.Generator().manual_seed(t.seed * 1_000_003 + run.epoch)
    return torch.utils.data.DataLoader(
        run.dataset, batch_size=t.batch_size, sampler=sampler, num_workers=t.num_workers,
        collate_fn=partial(collate, size_divisor=unwrap(run.trainer.model).size_divisor),
        pin_memory=run.ctx.device.type == "cuda", generator=generator,
    )  # fmt: skip


def _save(run: _Run, end_of_epoch: bool) -> Path:
    """Writes checkpoint_last.pth (and checkpoint_{epoch:04d}.pth at an epoch's end; keeps the newest keep_last)."""
    last = run.output / "checkpoint_last.pth"
    if run.ctx.is_main:
        t = run.trainer
        state = dict(optimizer=t.optimizer, scheduler=t.scheduler, scaler=t.scaler, epoch=run.epoch, step=run.step,
                     batches_done=run.batches_done)  # fmt: skip
        target = run.output / f"checkpoint_{run.epoch:04d}.pth" if end_of_epoch else last
        save_checkpoint(target, t.model, run.cfg, run.cfg.data.classes, **state)
        if end_of_epoch:
            with open(target, "rb") as src, atomic_open(last, "wb") as dst:
                shutil.copyfileobj(src, dst)
            numbered = sorted(run.output.glob("checkpoint_[0-9][0-9][0-9][0-9].pth"))
            for old in numbered[: -run.cfg.output.keep_last] if run.cfg.output.keep_last else []:
                old.unlink()
    barrier(run.ctx)
    return last


def _evaluate(run: _Run) -> None:
    """DOTA mAP of the current model on data.val_root (rank 0; the others wait), through the inference path: a
    `Predictor` of the live model (the config's scale and evaluation settings, the training's autocast) over the
    folder's whole images, train.batch_size at a time."""
    d = run.cfg.data
    if run.ctx.is_main:
        model = unwrap(run.trainer.model)
        was_training = model.training
        detections = predict_folder(
            Predictor.from_config(model, run.cfg), d.val_root, batch_size=run.cfg.train.batch_size
        )
        model.train(was_training)
        result = eval_dota(detections, Path(d.val_root) / "labelTxt", classes=list(d.classes))
        run.metrics = {"mAP": result["mAP"], **{f"AP/{k}": v for k, v in result["AP"].items()}}
        run.logger.log("eval", run.step, {"epoch": run.epoch, **run.metrics})
    barrier(run.ctx)


def _drop_lr(run: _Run) -> None:
    """Drops the learning rates from the next step on (the time-budget drop, `optim.lr_drop_time`)."""
    scheduler = run.trainer.scheduler
    for schedule in scheduler.lr_lambdas:
        schedule.drop_from(run.step)
    groups = run.trainer.optimizer.param_groups
    for group, base, schedule in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * schedule(run.step)
    run.logger.log("lr_drop", run.step, {"epoch": run.epoch, "lr": run.trainer.optimizer.param_groups[0]["lr"]})


def _train_epoch(run: _Run, bar: tqdm) -> bool:
    """Trains the rest of the current epoch; True when the deadline stopped it early."""
    log_every = run.cfg.output.log_every
    last_log, images_since = time.perf_counter(), 0
    for batch in _loader(run):
        values = run.trainer.step(batch)
        run.step, run.batches_done = run.step + 1, run.batches_done + 1
        run.objects += sum(len(target) for target in batch.targets)
        run.objects_dropped += sum(target.num_dropped for target in batch.targets)
        images_since += len(batch)
        bar.update(1)
        bar.set_postfix(epoch=run.epoch + 1, loss=f"{values['loss']:.3f}")
        if run.step % log_every == 0:
            now = time.perf_counter()
            values = reduce_mean(values, run.ctx)
            rate = images_since * run.ctx.world_size / max(now - last_log, 1e-9)
            run.logger.log("train", run.step, {"epoch": run.epoch, **values, "images_per_s": rate})
            last_log, images_since = now, 0
        if run.drop_time is not None and any_process(time.monotonic() >= run.drop_time, run.ctx):
            _drop_lr(run)
            run.drop_time = None
        if run.cfg.train.max_steps is not None and run.step >= run.cfg.train.max_steps:
            return True  # the same on every rank: no vote needed
        if any_process(run.deadline is not None and time.monotonic() >= run.deadline, run.ctx):
            return True
    return False


def train(
    cfg: Config,
    ctx: DistContext,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Trains the detector of a resolved config; see the module docstring.

    Args:
        cfg: a resolved config (`rotated_ddetr.config.load_config`).
        ctx: the process's place in the job (`rotated_ddetr.distributed.init_distributed`).
        resume: a checkpoint to continue from exactly (counters, optimiser, schedule, RNG, data position); it wins
            over `train.init_from`, which is then ignored with a note in the log.
        progress: show a tqdm bar (main process only).
        overwrite: replace the files of an earlier run found in `output.dir` (without it, or `resume`, such a folder
            is refused: `run_folder.claim_run_folder`).

    Returns:
        A `TrainResult`. A budget running out (`train.max_minutes`, counted from this call, or `train.max_steps`) is
        a normal end.

    Raises:
        SetupError: before any training (data, model, checkpoint, run folder).
        RunStopped: an image that does not decode, or Ctrl-C, stopped the run; its work was saved first (in a
            single process) to `checkpoint_last.pth`, so `--resume` continues it.
    """
    start = time.monotonic()
    lock = _claim_output(cfg, ctx, resume is not None, overwrite)
    try:
        run = _setup(cfg, ctx, resume)
        return _run(run, start, progress)
    finally:
        if lock is not None:
            lock.release()


def _run(run: _Run, start: float, progress: bool) -> TrainResult:
    """The epochs of `train`; saves the work done when a bad image or an interrupt stops them."""
    cfg, ctx = run.cfg, run.ctx
    t = cfg.train
    if t.max_minutes is not None:
        run.deadline = start + 60.0 * t.max_minutes
        drop_time = cfg.optim.lr_drop_time
        run.drop_time = start + 60.0 * t.max_minutes * drop_time if drop_time else None
    steps_per_epoch = math.ceil(len(run.sampler) / t.batch_size)
    bar = tqdm(total=t.epochs * steps_per_epoch, initial=run.step, disable=not (progress and ctx.is_main),
               unit="step", dynamic_ncols=True)  # fmt: skip
    stopped, checkpoint = False, None
    try:
        while run.epoch < t.epochs and not stopped and (t.max_steps is None or run.step < t.max_steps):
            stopped = _train_epoch(run, bar)
            if stopped:
                minutes = (time.monotonic() - start) / 60
                run.logger.log("stop", run.step, {"epoch": run.epoch, "batches_done": run.batches_done,
                                                  "minutes": minutes})  # fmt: skip
            if stopped and run.batches_done < steps_per_epoch:
                checkpoint = _save(run, end_of_epoch=False)
                break
            run.epoch, run.batches_done = run.epoch + 1, 0
            checkpoint = _save(run, end_of_epoch=True)
            minutes = (time.monotonic() - start) / 60
            counts = {"objects": run.objects, "objects_dropped": run.objects_dropped}
            run.logger.log("epoch", run.step, {"epoch": run.epoch, "minutes": minutes, **counts})
            due = cfg.eval.every and run.epoch % cfg.eval.every == 0
            if cfg.data.val_root is not None and not stopped and (due or run.epoch == t.epochs):
                _evaluate(run)
    except (ImageError, KeyboardInterrupt) as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else plain_message(error)
        saved = _save(run, end_of_epoch=False) if ctx.world_size == 1 else None
        run.logger.log("stop", run.step, {"epoch": run.epoch, "batches_done": run.batches_done, "reason": reason})
        raise RunStopped(reason, saved) from None
    finally:
        bar.close()
        run.logger.close()
    return TrainResult(run.epoch, run.step, stopped, checkpoint, run.metrics, _data_summary(run))


def _data_summary(run: _Run) -> dict:
    """The data record with the objects this call trained on and the ones augmentation dropped (a warning when
    augmentation dropped most of them)."""
    if run.objects_dropped > run.objects:
        warnings.warn(f"augmentation dropped {run.objects_dropped} of {run.objects + run.objects_dropped} objects "
                      "(centres rotated or scaled out of the image): check data.rotate and data.scale_jitter",
                      stacklevel=3)  # fmt: skip
    return {**_data_record(run.dataset), "objects_trained": run.objects, "objects_dropped": run.objects_dropped}
