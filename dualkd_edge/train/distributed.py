"""Data-parallel training over several processes (PyTorch DistributedDataParallel): one process per
GPU with NCCL, or N CPU processes with gloo.

`dualkd-edge train ... --nproc N` starts the N processes itself (launch.py); `torchrun
--nproc-per-node N -m dualkd_edge.train ...` starts them from outside (RANK / WORLD_SIZE /
LOCAL_RANK in the environment). Either way each step's global batch (drawn from (seed, step) as
in one process) is cut into N equal contiguous shards, one per rank; DDP averages the gradients,
which is the gradient of the global batch's mean loss. Hard mining's quantile is taken over the
token distances of the whole global batch (gathered), as one process takes it. Rank 0 alone
writes checkpoints and calibrates."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The process's place in a torchrun / `launch` group (one process: rank 0 of 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def quiet_other_ranks(ctx: DistContext) -> None:
    """Rank 0 reports progress; the others only warnings (N copies of each line help nobody)."""
    if ctx.active and not ctx.is_main:
        logging.getLogger("dualkd_edge").setLevel(logging.WARNING)


def device_for(ctx: DistContext, device: str) -> str:
    """One GPU per process: cuda:<local rank>; CPU processes share the CPU."""
    if not ctx.active or not device.startswith("cuda"):
        return device
    if ctx.local_rank >= torch.cuda.device_count():
        raise UserError(f"--nproc: process {ctx.local_rank} has no GPU of its own ({torch.cuda.device_count()} "
                        "visible); one process per GPU, or --device cpu")
    torch.cuda.set_device(ctx.local_rank)
    return f"cuda:{ctx.local_rank}"


def init_group(ctx: DistContext, device: str) -> bool:
    """Join the process group (NCCL for GPUs, gloo on CPU); True when this call created it."""
    if not ctx.active or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=ctx.rank, world_size=ctx.world)
    return True


def backend_name() -> str | None:
    return dist.get_backend() if dist.is_initialized() else None


def shard(indices: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's contiguous share of the global batch's indices."""
    if not ctx.active:
        return indices
    per = len(indices) // ctx.world
    return indices[ctx.rank * per:(ctx.rank + 1) * per]


def global_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile over the values of every rank (the global batch), or of this one alone."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, values.contiguous())
        values = torch.cat(parts)
    return torch.quantile(values, q)


def mean_over_ranks(values: dict[str, float], device: str) -> dict[str, float]:
    """Each rank's loss values averaged: the global batch's (every shard has the same size)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def broadcast_from_main(value: object) -> object:
    """Rank 0's value on every rank (e.g. the step count fitted to --max-time)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def leave_group(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()
