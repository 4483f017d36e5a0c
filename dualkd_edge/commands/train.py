"""`dualkd-edge train`: thin wrapper that prints where the run went and its calibration; with
--nproc N it starts N data-parallel processes (train/distributed.py) and reports rank 0's run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from dualkd_edge.commands.options import BatchSize, Device, FloatOption, Seed
from dualkd_edge.commands.signals import EXIT_CODES, stop_on_signals

if TYPE_CHECKING:
    from dualkd_edge.train.loop import TrainConfig


def command(
    data: List[Path] = typer.Argument(..., help="MVTec-AD style root(s), category folder(s) or plain folders of good images; several make one multi-class model"),
    out: Path = typer.Option(..., "--out", help="run directory to write"),
    preset: str = typer.Option("tiny", "--preset", help="tiny | edge-s224 | paper-b392 (see `dualkd-edge presets`)"),
    weights: Optional[str] = typer.Option(None, "--weights", help="teacher weights: none | hub | PATH (.pth / .safetensors, official DINOv2 or timm keys); default: the preset's"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (default: the preset's, see `dualkd-edge presets`)"),
    batch_size: BatchSize = 16,
    lr: float = FloatOption(2e-3, "--lr", help="peak learning rate of the Encoder-Decoder student (warm-up, then cosine to 10%)"),
    ee_lr: float = FloatOption(5e-4, "--ee-lr", help="peak learning rate of the class-token student"),
    semantic_centring: Optional[bool] = typer.Option(None, "--semantic-centring/--no-semantic-centring", help="centre the teacher's class token (default: the preset's; the paper regresses the plain token)"),
    device: Device = "auto",
    seed: Seed = 0,
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out up to --steps"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="steps between checkpoints"),
    max_time: Optional[float] = FloatOption(None, "--max-time", help="stop after about this many seconds (the schedule is fitted to it)"),
    holdout: float = FloatOption(0.1, "--holdout", help="share of good images held out for calibration"),
    tau_local: float = FloatOption(1.0, "--tau-local", help="Noisy-OR temperature of the local branch"),
    tau_semantic: float = FloatOption(1.0, "--tau-semantic", help="Noisy-OR temperature of the semantic branch"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel processes (DistributedDataParallel): one per GPU "
                              "(NCCL), or CPU processes (gloo); the --batch-size images of a step are split over them"),
) -> None:
    """Train the dual-student model (frozen DINOv2 teacher, Noisy-OR objective) and calibrate it."""
    from dualkd_edge.train.loop import TrainConfig

    raise typer.Exit(run(TrainConfig(
        data=list(data), out=out, preset=preset, weights=weights, steps=steps, batch_size=batch_size, lr=lr,
        ee_lr=ee_lr, semantic_centring=semantic_centring, device=device, seed=seed, resume=resume,
        checkpoint_every=checkpoint_every, max_time=max_time, holdout_fraction=holdout, tau_local=tau_local,
        tau_semantic=tau_semantic, nproc=nproc)))


def run(cfg: TrainConfig) -> int:
    """Exit code 0; 130 / 143 when Ctrl-C / SIGTERM stopped it (after the step in flight and a
    checkpoint that `--resume` continues from)."""
    from dualkd_edge.train.distributed import context_from_env
    from dualkd_edge.train.loop import Trainer

    if cfg.nproc > 1:
        c = _launch(cfg)
    else:
        trainer = Trainer(cfg)
        try:
            with stop_on_signals(trainer.request_stop):
                result = trainer.run()
        finally:
            trainer.close()
        if not context_from_env().is_main:
            return 0  # torchrun: rank 0 reports
        if result.stopped_by:
            print(f"stopped by {result.stopped_by} after {result.steps} steps; checkpoint written to "
                  f"{result.run_dir} (not calibrated yet): continue with `dualkd-edge train ... --out "
                  f"{result.run_dir} --resume`")
            return EXIT_CODES.get(result.stopped_by, 1)
        c = result.calibration
        print(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.run_dir}")
    print(f"calibration on {c.n_images} held-out normal images: local mu {c.local.mu:.4f} sigma {c.local.sigma:.4f}, "
          f"semantic mu {c.semantic.mu:.4f} sigma {c.semantic.sigma:.4f}, beta {c.beta}")
    return 0


def _launch(cfg: TrainConfig):
    """--nproc N: start N data-parallel processes and report rank 0's run; its calibration."""
    from dualkd_edge.artifacts.run_dirs import read_run_metadata
    from dualkd_edge.errors import UserError
    from dualkd_edge.train.distributed import context_from_env
    from dualkd_edge.train.launch import launch
    from dualkd_edge.train.loop import planned_run

    if context_from_env().active:
        raise UserError("--nproc: already running under torchrun; let torchrun start the processes")
    cfg.validate()
    cfg.check_split(cfg.nproc)
    planned_run(cfg, Path(cfg.out))  # a wrong --out / --resume is reported before processes start
    launch(cfg)
    meta = read_run_metadata(cfg.out)
    t = meta.training
    print(f"trained {t['step']} steps in {t['seconds']:.0f} s on {t['processes']} processes "
          f"({t['process_group']}, {t['batch_per_process']} images each per step) -> {cfg.out}")
    return meta.calibration
