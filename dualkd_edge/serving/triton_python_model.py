"""The model Triton's Python backend runs (`model.py` of a repository written with `--backend
python` re-exports it): dualkd-edge's torch-free runtime on the artifact beside it.

Triton's dynamic batcher hands `execute` several requests at once; they are concatenated into
one batch (split where the model's batch is limited), run in one call and split back per request,
so concurrent clients share inference calls. `triton_python_backend_utils` only exists inside
Triton's Python-backend stub, so it is imported there, not at module level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dualkd_edge.artifacts import OUTPUT_NAMES, INPUT_NAME


def split_rows(outputs: dict[str, np.ndarray], counts: list[int]) -> list[dict[str, np.ndarray]]:
    """One batch's outputs -> one dict per request, `counts` images each, in order."""
    edges = np.cumsum([0, *counts])
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(edges[:-1], edges[1:])]


def run_in_chunks(backend, batch: np.ndarray) -> dict[str, np.ndarray]:
    """`backend.infer` over a batch larger than the model may take at once."""
    step = backend.max_batch or len(batch)
    parts = [backend.infer(backend.pad_to_fixed_batch(batch[i:i + step]))
             for i in range(0, len(batch), step)]
    counts = [min(step, len(batch) - i) for i in range(0, len(batch), step)]
    return {k: np.concatenate([p[k][:n] for p, n in zip(parts, counts)]) for k in parts[0]}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from dualkd_edge.artifacts import open_backend

        config = json.loads(args["model_config"])
        artifact = config["parameters"]["artifact"]["string_value"]
        path = Path(args["model_repository"]) / args["model_version"] / artifact
        self.backend = open_backend(path)
        self.outputs = [o["name"] for o in config["output"] if o["name"] in OUTPUT_NAMES]

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        inputs = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        try:
            outputs = run_in_chunks(self.backend, np.concatenate(inputs))
        except Exception as exc:  # noqa: BLE001 - every request gets the error instead of a dead model
            error = pb_utils.TritonError(f"dualkd-edge: {type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for rows in split_rows(outputs, [len(x) for x in inputs]):
            # The config gives one-value-per-image outputs the model-side shape [N] (`reshape`).
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(rows[name], dtype=np.float32))
                       for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.backend.close()
