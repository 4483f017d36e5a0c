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


@pytest.fixture(autouse=True)
def _servers_stop_at_teardown():
    """Every loopback server a test started (broker, PLC, camera, receiver) stops when the test ends,
    passed or failed."""
    yield
    from support import stop_all

    stop_all()


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
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    return export_onnx(trained_run, tmp_path_factory.mktemp("onnx") / "m.onnx", ExportOptions(batch="dynamic")).path


@pytest.fixture
def tmpfs(tmp_path):
    """A factory of real tmpfs mounts of a given size (KiB), unmounted after the test: a full disk
    is a real full disk. Needs root (and a kernel that lets us mount); skipped otherwise."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a real full disk) needs root")
    mounts = []

    def mount(size_kib: int, name: str = "fs") -> Path:
        point = tmp_path / f"{name}{len(mounts)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path, request):
    """(folder, seal): put files into `folder`, then `seal()` makes it read-only for real: a tmpfs
    remounted read-only where the tests run as root (root ignores permission bits), else the
    folder and its files chmod-ed to read-only."""
    import os
    import stat
    import subprocess

    if os.geteuid() == 0:
        folder = request.getfixturevalue("tmpfs")(65536, "ro")  # room for a model

        def seal() -> Path:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
            return folder
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()

        def seal() -> Path:
            for p in folder.rglob("*"):
                p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
            folder.chmod(0o555)
            return folder

        request.addfinalizer(lambda: folder.chmod(0o755))
    return folder, seal
