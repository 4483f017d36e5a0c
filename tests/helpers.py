"""What the tests share besides fixtures: the CLI in a subprocess, error and picture assertions,
generated part images, a run with one network broken."""

from __future__ import annotations

import os
import shutil
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


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# A broker test needs the OS server AND the client library: either may be missing on a user's machine.
needs_broker = pytest.mark.skipif(shutil.which("mosquitto") is None or _missing("paho"),
                                  reason="needs mosquitto (OS package) and paho-mqtt (pip install '.[line]')")
needs_paho = pytest.mark.skipif(_missing("paho"), reason="needs paho-mqtt (pip install '.[line]')")


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `dualkd-edge` entry point in a subprocess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "dualkd_edge.cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, input=input)


def run_cli_without(blocked: tuple[str, ...], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in a subprocess where importing `blocked` modules (and their submodules) fails, as on
    a machine where an optional package is not installed."""
    code = (
        "import sys\n"
        "class _Blocker:\n"
        f"    blocked = {tuple(blocked)!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.blocked:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Blocker())\n"
        f"sys.argv = ['dualkd-edge', *{[str(a) for a in args]!r}]\n"
        "from dualkd_edge.cli import main\n"
        "main()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


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


def parts(n: int = 4, seed: int = 700, defect_every: int = 4):
    """Generated BGR part images (washer / bracket in turn, a spot on every `defect_every`-th)."""
    from dualkd_edge.data.synth import render_part

    return [render_part("washer" if i % 2 else "bracket", seed + i,
                        defect="spot" if i % defect_every == defect_every - 1 else None)[0] for i in range(n)]


def altered_run(trained_run: Path, tmp_path: Path, prefix: str) -> Path:
    """A copy of the run whose weights under `prefix` (e.g. "ed_student.blocks") are zeroed, biases
    set to 0.37: the same files, a different model."""
    from safetensors.torch import load_file, save_file

    dst = tmp_path / prefix
    shutil.copytree(trained_run, dst)
    w = load_file(str(dst / "model.safetensors"))
    for k in w:
        if k.startswith(prefix):
            w[k] = w[k] * 0.0 + (0.37 if k.endswith("bias") else 0.0)
    save_file(w, str(dst / "model.safetensors"))
    return dst


# Reference formulas of the method (docs/method.md), written plainly for the tests to
# check the graph and the training objective against.
def calibrated_probability(score, mu: float, sigma: float, beta: float):
    """p_k = sigmoid((s_k - mu_k) / sigma_k - beta)."""
    import numpy as np

    z = (np.asarray(score, dtype=np.float64) - mu) / sigma - beta
    return 1.0 / (1.0 + np.exp(-z))


def noisy_or(p_local, p_semantic):
    """P = 1 - (1 - p_L)(1 - p_S)."""
    import numpy as np

    return 1.0 - (1.0 - np.asarray(p_local)) * (1.0 - np.asarray(p_semantic))


def noisy_or_nll(d_local: float, d_semantic: float, tau_local: float, tau_semantic: float) -> float:
    """-log P(normal) with p_k = 1 - exp(-d_k / tau_k)."""
    return d_local / tau_local + d_semantic / tau_semantic


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """The real `dualkd-edge` entry point (cli.main) in this process: no interpreter start-up, for
    the many checks that stop before any work. Returns what `run_cli` returns."""
    import signal

    from dualkd_edge.cli import main

    argv, on_term = sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv = ["dualkd-edge", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, on_term)  # main() installs its own
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def fill_disk(folder: Path, leave_kib: int = 0) -> Path:
    """Fill the filesystem of `folder` (a small tmpfs) with one file, then free about `leave_kib`."""
    filler = folder / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave_kib * 1024))
    return filler


def scrape(exposition: str) -> dict[tuple[str, tuple], float]:
    """/metrics text -> {(sample name, sorted label pairs): value}, read by prometheus_client's own
    parser (so a format mistake fails here as it would in Prometheus)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}
