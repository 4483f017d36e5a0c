"""Data-parallel training over several processes (PyTorch DistributedDataParallel): one process per
GPU with NCCL, or N CPU processes with gloo.

`dualkd-edge train ... --nproc N` starts the N processes itself (`launch`); `torchrun
--nproc-per-node N -m dualkd_edge.train ...` starts them from outside (RANK / WORLD_SIZE /
LOCAL_RANK in the environment). Either way each step's global batch (drawn from (seed, step) as
in one process) is cut into N equal contiguous shards, one per rank; DDP averages the gradients,
which is the gradient of the global batch's mean loss. Hard mining's quantile is taken over the
token distances of the whole global batch (gathered), as one process takes it. Rank 0 alone
writes checkpoints and calibrates."""

from __future__ import annotations

import logging
import os
import pickle
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


# -- `train --nproc N`: start the processes ----------------------------------------------------
def _worker(rank: int, cfg, world: int, port: int, threads: int) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s: [rank {rank}] %(message)s")
    logging.getLogger("dualkd_edge").setLevel(logging.INFO)  # Trainer quiets the other ranks
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    from dualkd_edge.train.loop import train

    try:
        train(cfg)
    except UserError as exc:  # crosses the process boundary as text; the parent re-raises it
        raise RuntimeError(f"UserError: {exc}") from None


def launch(cfg) -> None:
    """Run `train(cfg)` in cfg.nproc processes on this machine and wait for them."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the group's rendezvous on this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        pickle.dumps(cfg)
    except Exception as exc:  # noqa: BLE001 - anything that cannot be sent to the workers
        raise UserError(f"--nproc: the training configuration cannot be sent to worker processes ({exc})") from None
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and cfg.nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {cfg.nproc}: only {torch.cuda.device_count()} GPU(s) here (one process per GPU)")
    threads = max(1, (os.cpu_count() or 1) // cfg.nproc) if device == "cpu" else 1
    try:
        mp.start_processes(_worker, args=(cfg, cfg.nproc, port, threads), nprocs=cfg.nproc,
                           start_method="spawn", join=True)
    except mp.ProcessRaisedException as exc:
        text = str(exc).strip().splitlines()
        user = [line for line in text if line.startswith("RuntimeError: UserError: ")]
        if user:
            raise UserError(user[-1].removeprefix("RuntimeError: UserError: ")) from None
        raise RuntimeError(f"a training process failed:\n{exc}") from None
