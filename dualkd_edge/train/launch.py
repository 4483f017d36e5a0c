"""`train --nproc N`: start N training processes on this machine (torch.multiprocessing, spawn) and
wait for them; a user error in a worker comes back as one line (distributed.py has the per-rank side)."""

from __future__ import annotations

import logging
import os
import pickle

import torch

from dualkd_edge.errors import UserError
from dualkd_edge.train.loop import train


def _worker(rank: int, cfg, world: int, port: int, threads: int) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s: [rank {rank}] %(message)s")
    logging.getLogger("dualkd_edge").setLevel(logging.INFO)  # Trainer quiets the other ranks
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
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
