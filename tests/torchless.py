"""Run code in a subprocess where `import torch` (and timm) fail, as on a Jetson without PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import sys

    class _NoTorch:
        blocked = ("torch", "timm", "torchvision", "safetensors.torch")

        def find_spec(self, name, path=None, target=None):
            if name in self.blocked or name.split(".")[0] in ("torch", "timm", "torchvision"):
                raise ImportError(f"{name} is blocked: this test runs as if PyTorch were not installed")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def run_torchless(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code) + textwrap.dedent("""
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
    """)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)


def run_cli_torchless(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    code = f"""
        sys.argv = ["dualkd-edge", *{[str(a) for a in args]!r}]
        from dualkd_edge.cli import main
        try:
            main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    """
    return run_torchless(code, timeout)
