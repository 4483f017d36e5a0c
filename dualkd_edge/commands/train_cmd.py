"""`dualkd-edge train`: thin wrapper that prints where the run went and its calibration; with
--nproc N it starts N data-parallel processes (train/distributed.py) and reports rank 0's run."""

from __future__ import annotations

from dualkd_edge.train.loop import TrainConfig, train


def run(cfg: TrainConfig) -> None:
    from dualkd_edge.train.distributed import context_from_env, launch

    if cfg.nproc > 1:
        if context_from_env().active:
            from dualkd_edge.errors import UserError

            raise UserError("--nproc: already running under torchrun; let torchrun start the processes")
        from pathlib import Path

        from dualkd_edge.train.loop import planned_run

        cfg.validate()
        cfg.check_split(cfg.nproc)
        planned_run(cfg, Path(cfg.out))  # a wrong --out / --resume is reported before processes start
        launch(cfg)
        from dualkd_edge.artifacts.run_dirs import read_run_metadata

        meta = read_run_metadata(cfg.out)
        t = meta.training
        print(f"trained {t['step']} steps in {t['seconds']:.0f} s on {t['processes']} processes "
              f"({t['process_group']}, {t['batch_per_process']} images each per step) -> {cfg.out}")
        c = meta.calibration
    else:
        result = train(cfg)
        if not context_from_env().is_main:
            return  # torchrun: rank 0 reports
        c = result.calibration
        print(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.run_dir}")
    print(f"calibration on {c.n_images} held-out normal images: local mu {c.local.mu:.4f} sigma {c.local.sigma:.4f}, "
          f"semantic mu {c.semantic.mu:.4f} sigma {c.semantic.sigma:.4f}, beta {c.beta}")
