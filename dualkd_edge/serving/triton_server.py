"""`dualkd-edge serve`: run Triton Inference Server from PyPI's `nvidia-pytriton` wheel (the
`[serve]` extra) on a model repository, without Docker. That wheel ships `tritonserver` 2.51 with
the Python backend only (no onnxruntime / tensorrt backends: those are in NVIDIA's containers),
so it serves repositories written with `dualkd-edge triton --backend python`, on CPU or GPU.

What the wheel leaves to its user, done here:
- the Python-backend stub for this interpreter's version must sit in the backend directory next
  to `libtriton_python.so` (the wheel keeps one stub per Python version elsewhere): a temporary
  backend directory of links is made per run;
- the stub is started by the server and finds the model's packages (numpy, onnxruntime,
  dualkd-edge) through PATH: this environment's `bin` goes first;
- the stub links `libpython3.X.so`: a Python not installed by the system (pyenv, conda) puts its
  own `lib` on LD_LIBRARY_PATH so the stub loads the matching one;
- the 2.51 stub reads numpy arrays with numpy 1.x's layout: under numpy 2 every response comes
  back empty, without an error. nvidia-pytriton pins numpy<2 for that reason; we check it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dualkd_edge.errors import MissingDependencyError, UserError

log = logging.getLogger("dualkd_edge")

INSTALL_HINT = "pip install 'dualkd-edge[serve]' (PyPI's nvidia-pytriton wheel ships tritonserver; Linux x86-64/arm64, glibc >= 2.35)"


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None  # None: metrics off
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                raise UserError(f"--{name.replace('_', '-')}: expected a TCP port 1..65535, got {port}")


def tritonserver_home() -> Path:
    """The wheel's tritonserver folder (bin/, backends/, python_backend_stubs/)."""
    try:
        import pytriton
    except ImportError:
        raise MissingDependencyError(f"tritonserver is not installed: {INSTALL_HINT}") from None
    home = Path(pytriton.__file__).parent / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise MissingDependencyError(f"{home}: no bin/tritonserver in this nvidia-pytriton install: {INSTALL_HINT}")
    return home


def check_numpy_for_stub() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise UserError(f"numpy {numpy.__version__} in {sys.prefix}: Triton 2.51's Python-backend stub needs numpy < 2 "
                        "(its responses come back empty otherwise); serve from an environment made with "
                        "`pip install 'dualkd-edge[serve]'`, which pins it")


def make_backend_directory(home: Path, into: Path) -> Path:
    """`into`/python/ with the backend library, its utilities and this Python's stub, linked."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (home / "python_backend_stubs").iterdir())
        raise UserError(f"nvidia-pytriton has no Python-backend stub for Python {version} (it has {', '.join(have)})")
    folder = into / "python"
    folder.mkdir(parents=True, exist_ok=True)
    for src in (home / "backends" / "python" / "libtriton_python.so",
                home / "backends" / "python" / "triton_python_backend_utils.py", stub):
        (folder / src.name).symlink_to(src)
    return into


def server_environment() -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH for the stub to run this environment's Python (see the module doc)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def warn_if_exposed(host: str) -> None:
    """Triton's HTTP/gRPC APIs have no authentication: model control, shared-memory registration and
    repository endpoints answer anyone who can connect; and the wheel's tritonserver is 2.51."""
    from dualkd_edge.stream.dashboard.http_guard import is_loopback

    if not is_loopback(host):
        log.warning("serve --host %s: Triton's HTTP and gRPC APIs have no authentication (inference, shared-memory "
                    "registration, repository and model control are open to anyone who can connect), and the "
                    "tritonserver 2.51 in nvidia-pytriton 0.7.0 predates the fixes for CVE-2025-23310/23311 "
                    "(HTTP chunked requests) and CVE-2025-23319/23320/23334 (Python backend); keep it on 127.0.0.1, "
                    "or for production use the Triton container 25.07 (2.59.1) or newer behind an authenticating "
                    "proxy (docs/security.md)", host)


def server_command(home: Path, repo: Path, backends: Path, opts: ServeOptions) -> list[str]:
    cmd = [str(home / "bin" / "tritonserver"), "--model-repository", str(repo.resolve()),
           "--backend-directory", str(backends), "--http-address", opts.host, "--http-port", str(opts.http_port),
           "--grpc-address", opts.host, "--grpc-port", str(opts.grpc_port), f"--log-verbose={opts.log_verbose}"]
    if opts.metrics_port is None:
        cmd.append("--allow-metrics=false")
    else:
        cmd += ["--metrics-address", opts.host, "--metrics-port", str(opts.metrics_port)]
    return cmd + opts.extra_args


def serve(repo: Path, opts: ServeOptions) -> int:
    """Run tritonserver in the foreground until it exits or SIGINT/SIGTERM ask it to stop; its exit code."""
    opts.validate()
    repo = Path(repo)
    if not repo.is_dir() or not any(p.joinpath("config.pbtxt").is_file() for p in repo.iterdir() if p.is_dir()):
        raise UserError(f"REPO: {repo} is not a model repository (no <name>/config.pbtxt); write one with "
                        "`dualkd-edge triton MODEL --out REPO --backend python`")
    home = tritonserver_home()
    check_numpy_for_stub()
    warn_if_exposed(opts.host)
    with tempfile.TemporaryDirectory(prefix="dualkd-triton-backends-") as tmp:
        cmd = server_command(home, repo, make_backend_directory(home, Path(tmp)), opts)
        log.info("starting %s", " ".join(cmd))
        proc = subprocess.Popen(cmd, env=server_environment())

        def forward(signum, _frame) -> None:  # noqa: ANN001 - the signal module's signature
            proc.send_signal(signum)  # tritonserver unloads the models and exits by itself

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_until_ready(url: str, model: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Block until the server at `url` (HOST:GRPC_PORT) has `model` ready; UserError on time-out or
    when `process` (the server, if we started it) exits first."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    t_end = time.monotonic() + timeout
    try:
        while time.monotonic() < t_end:
            if process is not None and process.poll() is not None:
                raise UserError(f"tritonserver exited with status {process.returncode} before {model} was ready")
            try:
                if client.is_model_ready(model):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.1)
    finally:
        client.close()
    raise UserError(f"{url}: model {model} not ready after {timeout:.0f} s")
