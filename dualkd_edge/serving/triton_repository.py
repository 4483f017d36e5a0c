"""`dualkd-edge triton`: a Triton Inference Server model repository for one exported model.

    REPO/NAME/config.pbtxt        tensors, batching, instances, our metadata in `parameters`
    REPO/NAME/1/model.onnx        backend onnxruntime (NVIDIA's Triton containers)
    REPO/NAME/1/model.plan        backend tensorrt (+ model.plan.json, the engine's sidecar)
    REPO/NAME/1/model.py          backend python: our torch-free runtime inside Triton, beside
                                  the model file it runs (model.onnx or model.plan)

Everything a client needs to decide OK/NG travels in the config's `parameters` (the whole
metadata as JSON, plus threshold, calibration and version as readable keys), so `infer --triton`
needs nothing but the server's address."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from dualkd_edge.artifacts import ONNX, OUTPUT_NAMES, RUN, kind_of
from dualkd_edge.artifacts.contract import TensorSpec, input_tensor, output_tensors
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path, write_bytes_atomic
from dualkd_edge.metadata import ArtifactMetadata

log = logging.getLogger("dualkd_edge")

BACKENDS = ("auto", "onnxruntime", "tensorrt", "python")
METADATA_PARAMETER = "dualkd_edge_metadata"
TRITON_DTYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8"}
# What each backend finds in the version folder (Triton's default file names).
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan"}
PYTHON_MODEL = "model.py"
PYTHON_MODEL_SOURCE = '''"""dualkd-edge model for Triton's Python backend: runs {artifact} beside this file with
dualkd-edge's torch-free runtime (ONNX Runtime, or TensorRT for engines). The server's Python
environment needs `pip install dualkd-edge` (no extras; ONNX Runtime with GPU providers or
TensorRT + cuda-python to use a GPU). Written by `dualkd-edge triton`."""

from dualkd_edge.serving.triton_python_model import TritonPythonModel  # noqa: F401 - Triton looks it up here
'''


@dataclass
class TritonRepoOptions:
    name: str = "dualkd"
    max_batch: int = 8
    backend: str = "auto"  # auto | onnxruntime | tensorrt | python
    queue_delay_us: int = 2000
    instances: int = 1

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"--backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise UserError(f"--name: a model name without slashes or spaces, got {self.name!r}")
        if self.max_batch < 1:
            raise UserError(f"--max-batch: must be >= 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise UserError(f"--queue-delay-us: must be >= 0, got {self.queue_delay_us}")
        if self.instances < 1:
            raise UserError(f"--instances: must be >= 1, got {self.instances}")


@dataclass
class ServedModel:
    """What the repository is made from: the artifact, its metadata and graph facts."""

    path: Path
    kind_name: str  # "onnx" | "engine"
    meta: ArtifactMetadata
    static_batch: int | None  # None: dynamic batch
    outputs: tuple[str, ...]  # the graph's outputs, OUTPUT_NAMES order
    engine_max_batch: int | None = None  # a dynamic engine's profile maximum


def inspect_model(path: Path) -> ServedModel:
    kind = kind_of(path)
    if kind is RUN:
        raise UserError(f"MODEL: {path} is a run directory; Triton serves exported files: "
                        "`dualkd-edge export RUN --out m.onnx --batch dynamic` first")
    meta = kind.read_metadata(path)
    if kind is ONNX:
        from dualkd_edge.artifacts.contract import static_batch_of
        from dualkd_edge.artifacts.onnx_files import load_onnx_model

        proto = load_onnx_model(path)
        present = {o.name for o in proto.graph.output}
        return ServedModel(path, "onnx", meta, static_batch_of(proto), tuple(n for n in OUTPUT_NAMES if n in present))
    from dualkd_edge.artifacts.engines import read_sidecar

    sidecar = read_sidecar(path)
    shapes = sidecar.get("build_options", {}).get("input_shapes") or {}
    batch = meta.input.batch
    outputs = tuple(meta.export.get("outputs") or OUTPUT_NAMES[:4])
    return ServedModel(path, "engine", meta, None if batch == "dynamic" else int(batch), outputs,
                       int(shapes["max"][0]) if shapes.get("max") else None)


def choose_backend(model: ServedModel, requested: str) -> str:
    if requested == "auto":
        return "onnxruntime" if model.kind_name == "onnx" else "tensorrt"
    if requested == "onnxruntime" and model.kind_name != "onnx":
        raise UserError(f"--backend onnxruntime: serves .onnx files; {model.path} is a TensorRT engine "
                        "(use --backend tensorrt or python)")
    if requested == "tensorrt" and model.kind_name != "engine":
        raise UserError(f"--backend tensorrt: serves engines (.plan/.engine); {model.path} is ONNX: build one on "
                        "the server's GPU with `dualkd-edge build`, or use --backend onnxruntime or python")
    return requested


def served_max_batch(model: ServedModel, opts: TritonRepoOptions) -> int:
    """max_batch_size: --max-batch, within what the model accepts."""
    if model.static_batch is not None:
        if model.static_batch != 1:
            raise UserError(f"MODEL: {model.path} has a static batch of {model.static_batch}; Triton batches requests "
                            "itself: export with --batch dynamic (or --batch 1)")
        if opts.max_batch > 1:
            log.warning("%s has a static batch of 1: serving with max_batch_size 1, no dynamic batching "
                        "(export with --batch dynamic to batch requests)", model.path)
        return 1
    if model.engine_max_batch is not None and opts.max_batch > model.engine_max_batch:
        raise UserError(f"--max-batch: {opts.max_batch} exceeds the engine's batch profile maximum "
                        f"{model.engine_max_batch}; rebuild it with `--batch 1:{opts.max_batch}:{opts.max_batch}`")
    return opts.max_batch


def _dims(shape: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _tensor_block(t: TensorSpec) -> str:
    # A value per image has no dimension of its own besides the batch: Triton spells it
    # dims [1] with `reshape { shape: [ ] }` (the model sees [N], clients get [N, 1]).
    lines = [f'    name: "{t.name}"', f"    data_type: {TRITON_DTYPES[t.dtype]}"]
    if t.shape:
        lines.append(f"    dims: {_dims(t.shape)}")
    else:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def _text_string(value: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept as is; only quote and backslash escaped,
    and the line breaks JSON may not have escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _parameter(key: str, value: str) -> str:
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: {_text_string(value)} }}\n}}'


def metadata_parameters(meta: ArtifactMetadata) -> dict[str, str]:
    """Our metadata as Triton model parameters (string values): the whole of it for clients, and
    the keys a person reading the config looks for."""
    c = meta.calibration
    return {
        METADATA_PARAMETER: json.dumps(meta.to_dict(), separators=(",", ":"), ensure_ascii=False),
        "threshold": repr(float(meta.threshold)),
        "calibration": json.dumps({"local": vars(c.local), "semantic": vars(c.semantic), "beta": c.beta},
                                  separators=(",", ":")),
        "metadata_schema": str(meta.to_dict()["schema_version"]),
        "dualkd_edge_version": meta.tool_version,
        "preset": str(meta.preset.get("name", "?")),
    }


def render_config(model: ServedModel, backend: str, opts: TritonRepoOptions) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    spec = model.meta.input
    max_batch = served_max_batch(model, opts)
    # The python backend runs our runtime, which computes score_logit for exports made before it.
    outputs = OUTPUT_NAMES if backend == "python" else model.outputs
    kind = "KIND_CPU" if backend == "python" else "KIND_GPU"
    parts = [
        f'name: "{opts.name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch}",
        "input [\n" + _tensor_block(input_tensor(spec)) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t) for t in output_tensors(spec, outputs)) + "\n]",
    ]
    if max_batch > 1:
        preferred = sorted({b for b in (2, 4, 8, 16, 32) if b <= max_batch} | {max_batch})
        parts.append("dynamic_batching {\n"
                     f"  preferred_batch_size: {_dims(tuple(preferred))}\n"
                     f"  max_queue_delay_microseconds: {opts.queue_delay_us}\n"
                     "}")
    # python: one host process per instance; our runtime picks GPU providers itself where installed.
    parts.append(f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: {kind}\n  }}\n]")
    if backend == "python":
        parts.append(_parameter("artifact", MODEL_FILES["tensorrt" if model.kind_name == "engine" else "onnxruntime"]))
    parts += [_parameter(k, v) for k, v in metadata_parameters(model.meta).items()]
    return "\n".join(parts) + "\n"


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


@dataclass(frozen=True)
class WrittenModel:
    folder: Path  # REPO/NAME
    backend: str  # the backend the config names
    files: tuple[str, ...]  # what version 1 holds


def write_triton_repository(model_path: Path, repo: Path, opts: TritonRepoOptions) -> WrittenModel:
    """Write REPO/NAME (config and version 1)."""
    opts.validate()
    model = inspect_model(Path(model_path))
    backend = choose_backend(model, opts.backend)
    config = render_config(model, backend, opts)
    folder = Path(repo) / opts.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    artifact = MODEL_FILES["tensorrt" if model.kind_name == "engine" else "onnxruntime"]
    written = {artifact}
    _copy_atomic(model.path, version / artifact)
    if model.kind_name == "engine":
        from dualkd_edge.artifacts.engines import sidecar_path

        _copy_atomic(sidecar_path(model.path), sidecar_path(version / artifact))
        written.add(sidecar_path(version / artifact).name)
    if backend == "python":
        write_bytes_atomic(version / PYTHON_MODEL, PYTHON_MODEL_SOURCE.format(artifact=artifact).encode())
        written.add(PYTHON_MODEL)
    # A file a previous run left for another backend would be served by mistake or confuse readers.
    for stale in {*MODEL_FILES.values(), "model.plan.json", PYTHON_MODEL} - written:
        (version / stale).unlink(missing_ok=True)
    write_bytes_atomic(folder / "config.pbtxt", config.encode())
    return WrittenModel(folder, backend, tuple(sorted(written)))
