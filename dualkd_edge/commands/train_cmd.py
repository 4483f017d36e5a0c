"""`dualkd-edge train`: thin wrapper that prints where the run went and its calibration; with
--nproc N it starts N data-parallel processes (train/distributed.py) and reports rank 0's run."""

from __future__ import annotations

from dualkd_edge.commands.signals import EXIT_CODES, stop_on_signals
from dualkd_edge.train.loop import TrainConfig, Trainer


def run(cfg: TrainConfig) -> int:
    """Exit code 0; 130 / 143 when Ctrl-C / SIGTERM stopped it (after the step in flight and a
    checkpoint that `--resume` continues from)."""
    from dualkd_edge.train.distributed import context_from_env

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
    from pathlib import Path

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
