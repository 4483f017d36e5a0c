"""What machine a benchmark ran on: CPU, memory, GPU and driver, runtime versions, Jetson power mode."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tensorrt_version() -> str | None:
    """From the module itself: JetPack installs TensorRT's bindings with apt, without pip metadata."""
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe_machine() -> dict:
    import onnxruntime as ort

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "tensorrt": _tensorrt_version(),
        "torch": _version("torch"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
    }
    gpu = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    info["gpu"] = gpu
    cuda = _run(["nvcc", "--version"])
    info["cuda"] = cuda.splitlines()[-1] if cuda else None
    if os.path.exists("/etc/nv_tegra_release"):  # a Jetson
        with open("/etc/nv_tegra_release") as f:
            info["jetson_release"] = f.readline().strip()
        info["jetson_power_mode"] = _run(["nvpmodel", "-q"])
    return info


def matmul_reference(n: int = 2048):
    """The reference compute rate: a plain float32 n x n matrix product through numpy's BLAS, as a
    contender timed in the same rounds as the models. Returns it and its FLOPs per run."""
    import numpy as np

    from dualkd_edge.bench.timing import Contender

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return Contender(lambda: a @ b, required_runs=5), 2.0 * n**3
