"""The table of artifact kinds: how a path is recognised, where its metadata lives, which backend
runs it and which install that backend needs. `Detector`, `eval --tune-threshold`, `build`, the
backends and the CLI all go through it (in the spirit of Ultralytics' export_formats + AutoBackend)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import ArtifactMetadata

T = TypeVar("T")


@dataclass
class LoadOptions:
    """How to open an artifact. `providers`/`threads`: ONNX files; `device`: run directories;
    `cuda_graph` and `onnx` (the file an engine built outside dualkd-edge came from): engines."""

    device: str = "auto"
    providers: Sequence[str] | None = None
    threads: int | None = None
    cuda_graph: bool = False
    onnx: Path | None = None

    def for_path(self, path: str | Path) -> "LoadOptions":
        """These options, minus the engine-only ones when `path` is not an engine (commands that
        take several models apply --onnx / --cuda-graph to the engines among them)."""
        if Path(path).suffix.lower() in TensorRTEngine.suffixes:
            return self
        return replace(self, cuda_graph=False, onnx=None)


class ArtifactKind(ABC):
    name: str
    description: str
    suffixes: tuple[str, ...] = ()
    extra: str | None = None  # the pip extra its backend needs (None: the base install)

    @abstractmethod
    def matches(self, path: Path) -> bool: ...

    @abstractmethod
    def read_metadata(self, path: Path) -> ArtifactMetadata: ...

    @abstractmethod
    def metadata_file(self, path: Path) -> Path:
        """The file that holds the metadata (what a threshold update rewrites)."""

    @abstractmethod
    def write_metadata(self, path: Path, meta: ArtifactMetadata) -> None: ...

    @abstractmethod
    def open(self, path: Path, options: LoadOptions): ...


class RunDirectory(ArtifactKind):
    name = "run"
    description = "training run directory: model.safetensors + run.json (PyTorch)"
    extra = "train"

    def matches(self, path: Path) -> bool:
        return path.is_dir()

    def metadata_file(self, path: Path) -> Path:
        from dualkd_edge.artifacts.run_dirs import META_FILE

        return path / META_FILE

    def read_metadata(self, path: Path) -> ArtifactMetadata:
        from dualkd_edge.artifacts.run_dirs import read_run_metadata

        return read_run_metadata(path)

    def write_metadata(self, path: Path, meta: ArtifactMetadata) -> None:
        from dualkd_edge.artifacts.run_dirs import write_run_metadata

        write_run_metadata(path, meta)

    def open(self, path: Path, options: LoadOptions):
        from dualkd_edge.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device=options.device)


class OnnxFile(ArtifactKind):
    name = "onnx"
    description = "one fused ONNX graph, metadata in metadata_props (ONNX Runtime)"
    suffixes = (".onnx",)

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.suffixes

    def metadata_file(self, path: Path) -> Path:
        return path

    def read_metadata(self, path: Path) -> ArtifactMetadata:
        from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata

        return onnx_metadata(load_onnx_model(path), path)

    def write_metadata(self, path: Path, meta: ArtifactMetadata) -> None:
        from dualkd_edge.artifacts.onnx_files import (
            load_onnx_model,
            save_onnx_atomic,
            set_onnx_metadata,
        )

        model = load_onnx_model(path, load_weights=True)
        set_onnx_metadata(model, meta)
        save_onnx_atomic(model, path)

    def open(self, path: Path, options: LoadOptions):
        from dualkd_edge.runtime.onnx_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers=options.providers, threads=options.threads)


class TensorRTEngine(ArtifactKind):
    name = "engine"
    description = "TensorRT engine + <engine>.json sidecar (TensorRT, cuda-python; tied to its GPU and TensorRT)"
    suffixes = (".engine", ".plan", ".trt")
    extra = "tensorrt"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.suffixes

    def metadata_file(self, path: Path) -> Path:
        from dualkd_edge.artifacts.engines import sidecar_path

        return sidecar_path(path)

    def read_metadata(self, path: Path) -> ArtifactMetadata:
        from dualkd_edge.artifacts.engines import read_sidecar, sidecar_path

        return ArtifactMetadata.from_dict(read_sidecar(path)["metadata"], str(sidecar_path(path)))

    def write_metadata(self, path: Path, meta: ArtifactMetadata) -> None:
        from dualkd_edge.artifacts.engines import read_sidecar, write_sidecar

        fields = read_sidecar(path)
        fields.pop("schema_version", None)
        write_sidecar(path, {**fields, "metadata": meta.to_dict()})

    def open(self, path: Path, options: LoadOptions):
        from dualkd_edge.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, cuda_graph=options.cuda_graph, onnx=options.onnx)


RUN, ONNX, ENGINE = RunDirectory(), OnnxFile(), TensorRTEngine()
KINDS: tuple[ArtifactKind, ...] = (RUN, ONNX, ENGINE)
ENGINE_SUFFIXES = ENGINE.suffixes


def kind_of(path: str | Path, what: str = "MODEL") -> ArtifactKind:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what}: not found: {path}")
    for kind in KINDS:
        if kind.matches(path):
            return kind
    expected = "; ".join(f"{k.description} ({', '.join(k.suffixes) or 'a folder'})" for k in KINDS)
    raise UserError(f"{what}: {path} is not a dualkd-edge artifact; expected one of: {expected}")


def read_metadata(path: str | Path) -> ArtifactMetadata:
    return kind_of(path).read_metadata(Path(path))


def metadata_file(path: str | Path) -> Path:
    """The file a metadata update of `path` rewrites: through symlinks (`current.onnx -> v1.onnx`
    updates v1.onnx and keeps the link)."""
    real = Path(os.path.realpath(path))
    return kind_of(path).metadata_file(real)


def update_metadata(path: str | Path, change: Callable[[ArtifactMetadata], T]) -> T:
    """Read the artifact's metadata, let `change` edit it, write it back atomically; return what
    `change` returned.

    A symlinked artifact is updated where it points (the link stays); the file keeps its mode and
    owner; the metadata is read again under an exclusive lock on its file, so two updates at the
    same time are applied one after the other and neither is lost."""
    from dualkd_edge.fileio import locked

    kind = kind_of(path)
    real = Path(os.path.realpath(path))
    with locked(kind.metadata_file(real)):
        meta = kind.read_metadata(real)
        result = change(meta)
        kind.write_metadata(real, meta)
    return result


def update_threshold(path: str | Path, threshold: float, calibration: str | None = None,
                     history: dict | None = None) -> float:
    """Write a new decision threshold into the artifact's metadata (of the named calibration, else
    the training one); append `history` (decision/history.py) when given; return the old threshold."""
    from dualkd_edge.metadata import TRAINING_CALIBRATION

    def change(meta: ArtifactMetadata) -> float:
        if calibration in (None, TRAINING_CALIBRATION):
            old, meta.threshold = meta.threshold, float(threshold)
        else:
            named = next((c for c in meta.calibrations if c.name == calibration), None)
            if named is None:
                raise UserError(f"{path}: no calibration {calibration!r} to update")
            old, named.threshold = named.threshold, float(threshold)
        if history is not None:
            meta.history.append({**history, "threshold": {"from": old, "to": float(threshold)}})
        return old

    return update_metadata(path, change)


def open_backend(path: str | Path, options: LoadOptions | None = None, **overrides: object):
    """The backend for whatever `path` is (LoadOptions fields may be given as keywords)."""
    options = options or LoadOptions()
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise TypeError(f"open_backend: unknown option {key!r}")
        setattr(options, key, value)
    path = Path(path)
    kind = kind_of(path)
    if kind is not ENGINE:
        if options.cuda_graph:
            raise UserError(f"--cuda-graph: replays TensorRT engines only; {path} is not one")
        if options.onnx is not None:
            raise UserError(f"--onnx: names the source of a TensorRT engine; {path} is not an engine")
    return kind.open(path, options)
