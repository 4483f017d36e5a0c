"""Shared fixtures: a generated MVTec-layout dataset, briefly trained tiny models, their ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    # Loaded before any test runs GStreamer in this process: importing matplotlib.pyplot for the first
    # time AFTER GStreamer has loaded its plugins (with numpy already imported) aborts the interpreter
    # on our Debian 12 machines (test_gstreamer's in-process pipelines, then test_plots). The cause is
    # a native-library conflict we have not pinned down; the CLI never does both in one process.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
except ImportError:
    pass


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


@pytest.fixture(scope="session")
def dynamic_onnx(trained_run, tmp_path_factory) -> Path:
    """`trained_run` exported with a dynamic batch (FP32, float input)."""
    from dualkd_edge.export.onnx_export import ExportOptions, export_onnx

    return export_onnx(trained_run, tmp_path_factory.mktemp("onnx") / "m.onnx", ExportOptions(batch="dynamic")).path
