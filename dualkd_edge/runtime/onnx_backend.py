"""ONNX Runtime backend: TensorRT EP > CUDA EP > CPU, whichever the installed onnxruntime offers."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dualkd_edge.artifacts.contract import model_outputs
from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata
from dualkd_edge.errors import UserError
from dualkd_edge.runtime.base import Backend
from dualkd_edge.runtime.made_for import warn_if_mismatched

log = logging.getLogger("dualkd_edge")

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The providers to ask ONNX Runtime for, in priority order. CPU always closes the list so an
    op a GPU provider cannot take still runs."""
    if requested:
        names = [PROVIDER_ALIASES.get(r.lower(), r) for r in requested]
        missing = [n for n in names if n not in available]
        if missing:
            raise UserError(f"--providers: {', '.join(missing)} not available in this onnxruntime "
                            f"(available: {', '.join(available)})")
    else:
        names = [p for p in PREFERRED_PROVIDERS if p in available]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def tensorrt_ep_options(fp16: bool = False, int8: bool = False, cache_dir: str | None = None) -> dict:
    """TensorRT EP options: engine and timing caches, LayerNorm kept in FP32 under FP16."""
    opts: dict = {"trt_fp16_enable": fp16, "trt_int8_enable": int8, "trt_layer_norm_fp32_fallback": True}
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache_dir,
                    trt_timing_cache_enable=True, trt_timing_cache_path=cache_dir)
    return opts


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 trt_fp16: bool = False, trt_int8: bool = False, trt_cache_dir: str | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        path = Path(path)
        self.path = path
        self.cpu_threads = threads  # None: ONNX Runtime's default, a thread per physical core
        model = load_onnx_model(path)  # metadata only; ORT reads the weights itself
        self.meta = onnx_metadata(model, path)
        chosen = choose_providers(providers, ort.get_available_providers())
        provider_args = []
        for name in chosen:
            if name == "TensorrtExecutionProvider":
                cache = trt_cache_dir or str(path.with_suffix("")) + "_trt_cache"
                provider_args.append((name, tensorrt_ep_options(trt_fp16, trt_int8, cache)))
            else:
                provider_args.append(name)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=provider_args)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise UserError(f"{path}: ONNX Runtime could not load it ({str(exc).splitlines()[0][:200]})") from None
        self.providers = self.session.get_providers()
        warn_if_mismatched(str(path), self.meta, self.providers[0])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        batch_dim = inp.shape[0]
        if isinstance(batch_dim, int):
            self.max_batch = self.fixed_batch = batch_dim
        self.output_names = model_outputs({o.name for o in self.session.get_outputs()}, str(path))
        if "score_logit" not in self.output_names:
            log.info("%s: exported before the score_logit output; computing it from the branch scores", path)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outs))

    def describe(self) -> str:
        return f"onnxruntime ({self.providers[0].replace('ExecutionProvider', '')})"

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
