"""Shared fixtures: a generated MVTec-layout dataset and a briefly trained tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch_available = True
try:  # the runtime tests must also run where torch is absent
    import torch  # noqa: F401
except ImportError:
    torch_available = False

needs_torch = pytest.mark.skipif(not torch_available, reason="needs PyTorch (pip install '.[train]')")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    from dualkd_edge.data.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "parts", n_train=40, n_test_good=6,
                            n_test_defect=3, seed=1)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_dataset) -> Path:
    """A tiny model trained for a few steps: enough to exercise every path, not to be accurate."""
    from dualkd_edge.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(data=[small_dataset], out=out, preset="tiny", weights="none", steps=12,
                      batch_size=8, seed=0, progress=False))
    return out


@pytest.fixture(scope="session")
def separating_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run, data): a tiny model trained long enough (200 steps, ~1 min on 2 cores) to separate and
    localise the generated defects. Random-init teacher: it shows the pipeline works, nothing more."""
    from dualkd_edge.data.synth import generate_dataset
    from dualkd_edge.train.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("sep")
    data = generate_dataset(root / "data", n_train=60, n_test_good=12, n_test_defect=6, seed=3)
    train(TrainConfig(data=[data], out=root / "run", steps=200, progress=False, seed=0))
    return root / "run", data


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `dualkd-edge` entry point in a subprocess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "dualkd_edge.cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, input=input)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1, proc.stderr
    for needle in needles:
        assert needle in err_lines[0], err_lines[0]


def assert_real_png(path: Path, min_size: tuple[int, int]):
    """Decodes with OpenCV, is at least `min_size` (w, h), and has drawn content, not one colour."""
    import cv2
    import numpy as np

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None, path
    assert img.shape[1] >= min_size[0] and img.shape[0] >= min_size[1], img.shape
    assert (img < 250).mean() > 0.02 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # lines, bars, text
    return img
