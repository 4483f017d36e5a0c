"""A training run directory run by PyTorch (for parity checks against exported models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualkd_edge.errors import MissingDependencyError
from dualkd_edge.runtime.base import Backend


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from dualkd_edge.errors import UserError

        raise UserError("--device cuda: no CUDA device is available to PyTorch here")
    return device


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(self, run_dir: Path, device: str = "auto") -> None:
        super().__init__()
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                f"{run_dir}: a run directory needs PyTorch (pip install 'dualkd-edge[train]'); "
                "export it to ONNX to run without torch"
            ) from None
        from dualkd_edge.model.checkpoint import inference_model, load_run

        self.device = resolve_device(device)
        model, self.meta = load_run(Path(run_dir), self.device)
        self.module = inference_model(model, self.meta)
        self.meta.input.dtype = "float"

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        from dualkd_edge.artifacts.contract import OUTPUT_NAMES

        with torch.inference_mode():
            outs = self.module(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return {name: t.float().cpu().numpy() for name, t in zip(OUTPUT_NAMES, outs)}

    def describe(self) -> str:
        return f"pytorch ({self.device})"
