"""`dualkd-edge train`: thin wrapper that prints where the run went and its calibration."""

from __future__ import annotations

from dualkd_edge.train.loop import TrainConfig, train


def run(cfg: TrainConfig) -> None:
    result = train(cfg)
    c = result.calibration
    print(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.run_dir}")
    print(f"calibration on {c.n_images} held-out normal images: local mu {c.local.mu:.4f} sigma {c.local.sigma:.4f}, "
          f"semantic mu {c.semantic.mu:.4f} sigma {c.semantic.sigma:.4f}, beta {c.beta}")
