"""Distributed jobs under torchrun: environment (RANK, WORLD_SIZE, LOCAL_RANK) -> device, process group, DDP, samplers.

Used by the training loop (`init_distributed`) and by tiled inference over many scenes (`init_inference`). A single
process (no torchrun) is the world of size 1 and needs no process group.
Multi-node runs work through torchrun's environment (MASTER_ADDR/MASTER_PORT with `env://` initialisation).
Only rank 0 logs and writes checkpoints (`DistContext.is_main`); nothing here touches `print`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

# Rank 0 evaluates alone while the others wait at a barrier: allow long evaluations.
_TIMEOUT = datetime.timedelta(minutes=60)
# Inference ranks meet only once each has done its scenes, possibly hours apart.
_INFERENCE_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 is the main process).
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
        device: the device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use (world size > 1)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device named by `name` (train.device, --device): auto = cuda:local_rank with CUDA, else cpu;
    cuda = cuda:local_rank; anything else (cpu, cuda:1, ...) as named.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (use the cpu device)")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Reads torchrun's environment and joins the process group when WORLD_SIZE > 1 (training).

    Backend: nccl on CUDA, gloo on CPU. Each process uses cuda:LOCAL_RANK ("auto"/"cuda") or the given device.

    Args:
        device: "auto", "cpu", "cuda" or an explicit device such as "cuda:1".

    Raises:
        ValueError: a malformed torchrun variable, or CUDA asked for but not available.
    """
    return _join(device, None, _TIMEOUT, share_gpus=False)


def init_inference(device: str = "auto") -> DistContext:
    """`init_distributed` for inference jobs whose ranks work alone and meet only at the end (`rotated-ddetr infer`).

    The group is gloo whatever the device (it only carries barriers) with a 7-day timeout (ranks may finish hours
    apart). With "auto" or "cuda", a process uses cuda:(LOCAL_RANK modulo the GPU count): more ranks than GPUs on a
    node share them (each holds its own model; nothing is reduced across ranks).

    Args:
        device: "auto", "cpu", "cuda" or an explicit device such as "cuda:1".

    Raises:
        ValueError: a malformed torchrun variable, or CUDA asked for but not available.
    """
    return _join(device, "gloo", _INFERENCE_TIMEOUT, share_gpus=True)


def _join(device: str, backend: str | None, timeout: datetime.timedelta, share_gpus: bool) -> DistContext:
    """This process's context; joins a `backend` group (None: nccl on CUDA, else gloo) when WORLD_SIZE > 1. The GPU
    index is LOCAL_RANK, modulo the GPU count when `share_gpus`."""
    rank, world_size, local_rank = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    gpu = local_rank % torch.cuda.device_count() if share_gpus and torch.cuda.is_available() else local_rank
    target = resolve_device(device, gpu)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if target.type == "cuda" else "gloo")
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)
    return DistContext(rank, world_size, local_rank, target)


def shutdown_distributed() -> None:
    """Leaves the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Waits for every process (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """`model` in DistributedDataParallel when distributed (device_ids set on CUDA), else unchanged.

    Trainable BatchNorm (backbone norm "batch") then uses per-process batch statistics; rank 0's running statistics
    are broadcast every step (DDP's default).
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def train_sampler(dataset: Dataset, ctx: DistContext, seed: int) -> DistributedSampler:
    """The shuffling sampler of this process: a seeded permutation per epoch (`set_epoch`), split across ranks.

    Used in single-process runs too, so that the data order is a function of (seed, epoch) and a resumed run
    replays it exactly. The last incomplete round is padded with repeated samples (DistributedSampler's default).
    """
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)


class SkipSampler(Sampler[int]):
    """The indices of `sampler` after the first `skip` (resuming in the middle of an epoch).

    Args:
        sampler: the epoch's sampler (its `set_epoch` already called).
        skip: indices to leave out from the start.
    """

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def reduce_mean(values: Mapping[str, float | torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """The mean of each value over all processes (every process must call this with the same keys)."""
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if ctx.distributed:
        backend_device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
        stacked = stacked.to(backend_device)
        dist.all_reduce(stacked)
        stacked = stacked.cpu() / ctx.world_size
    return dict(zip(keys, stacked.tolist(), strict=True))


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True on every process when `flag` is True on at least one (e.g. agreeing to stop)."""
    if not ctx.distributed:
        return flag
    device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def average_over_ranks(value: float, device: torch.device) -> torch.Tensor:
    """A per-process number averaged over the processes of the default group, as a 0-d float tensor on `device`.

    For the loss normalisers (DETR's num_boxes): called inside the model's step, where no `DistContext` is passed;
    outside a process group it is the value itself. The result stays on `device` (no host synchronisation).
    """
    tensor = torch.tensor(float(value), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
        tensor = tensor / dist.get_world_size()
    return tensor
