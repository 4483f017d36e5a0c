"""`dualkd-edge train`: thin wrapper that prints where the run went and its calibration."""

from __future__ import annotations

from dualkd_edge.commands.signals import EXIT_CODES, stop_on_signals
from dualkd_edge.train.loop import TrainConfig, Trainer


def run(cfg: TrainConfig) -> int:
    """Exit code 0; 130 / 143 when Ctrl-C / SIGTERM stopped it (after the step in flight and a
    checkpoint that `--resume` continues from)."""
    trainer = Trainer(cfg)
    with stop_on_signals(trainer.request_stop):
        result = trainer.run()
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} after {result.steps} steps; checkpoint written to {result.run_dir} "
              f"(not calibrated yet): continue with `dualkd-edge train ... --out {result.run_dir} --resume`")
        return EXIT_CODES.get(result.stopped_by, 1)
    c = result.calibration
    print(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.run_dir}")
    print(f"calibration on {c.n_images} held-out normal images: local mu {c.local.mu:.4f} sigma {c.local.sigma:.4f}, "
          f"semantic mu {c.semantic.mu:.4f} sigma {c.semantic.sigma:.4f}, beta {c.beta}")
    return 0
