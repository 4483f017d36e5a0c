"""Native TensorRT backend for `.engine` / `.plan` files (TensorRT 10/11 API, cuda-python buffers).

Tensors are addressed by name (`num_io_tensors`, `get_tensor_name`, `set_input_shape`,
`set_tensor_address`) and run with `execute_async_v3` on our own stream. For engines with a
static input shape the launch can be captured once into a CUDA graph and replayed
(`--cuda-graph`), which removes the per-layer launch overhead of small batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dualkd_edge.artifacts.contract import model_outputs
from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.metadata import ArtifactMetadata
from dualkd_edge.runtime.base import Backend

log = logging.getLogger("dualkd_edge")

INSTALL_HINT = ("TensorRT is not installed: on a desktop GPU `pip install 'dualkd-edge[tensorrt]'` "
                "(TensorRT + cuda-python for CUDA 12); on a Jetson it comes with JetPack")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return trt


def _cuda():
    try:
        from dualkd_edge.runtime import cuda_buffers

        cuda_buffers.import_cudart()
    except ImportError:
        raise MissingDependencyError("cuda-python is not installed: `pip install 'cuda-python>=12.2,<13'` "
                                     "(CUDA 12, JetPack 6) or `pip install cuda-python` (CUDA 13)") from None
    return cuda_buffers


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, cuda_graph: bool = False, onnx: Path | None = None, **_: object) -> None:
        super().__init__()
        from dualkd_edge.artifacts.engines import check_compatible, read_sidecar

        path = Path(path)
        self._graph = self._graph_exec = None
        self.buffers: dict = {}
        self.stream = None
        self.timer = None
        sidecar = read_sidecar(path, onnx)  # before TensorRT: a missing sidecar is reported anywhere
        trt = import_tensorrt()
        cuda = _cuda()
        self._trt = trt
        if sidecar.get("adopted"):
            sidecar = self._adopt(path, onnx, sidecar, trt, cuda)
        else:
            check_compatible(path, sidecar, trt.__version__, cuda.gpu_identity())
        self.meta = ArtifactMetadata.from_dict(sidecar["metadata"], str(path))
        self.precision = sidecar.get("precision", "?")
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        dla_core = sidecar.get("build_options", {}).get("dla_core")
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)  # the engine's DLA layers run on the core it was built for
        self._runtime = runtime
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise UserError(f"{path}: TensorRT could not deserialize the engine; rebuild it with `dualkd-edge build`")
        self.engine = engine
        context = engine.create_execution_context()
        self.context = context
        self.stream = cuda.check(cuda.import_cudart().cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = model_outputs(set(names), f"{path} (engine)")
        # Allocate for the largest batch the engine accepts (profile 0 max, or its static shape).
        in_shape = tuple(engine.get_tensor_shape(self.input_name))
        if in_shape[0] == -1:
            max_shape = tuple(engine.get_tensor_profile_shape(self.input_name, 0)[2])
            self.max_batch = int(max_shape[0])
        else:
            max_shape = in_shape
            self.max_batch = self.fixed_batch = int(in_shape[0])
        if cuda_graph and in_shape[0] == -1:
            raise UserError(f"--cuda-graph: {path} has a dynamic batch; CUDA graphs replay static shapes only "
                            "(export and build with a fixed --batch)")
        context.set_input_shape(self.input_name, max_shape)
        for n in names:
            shape = tuple(context.get_tensor_shape(n))
            self.buffers[n] = cuda.DeviceBuffer(shape, trt.nptype(engine.get_tensor_dtype(n)))
            context.set_tensor_address(n, int(self.buffers[n].device))
        self.timer = cuda.StageTimer()
        self.use_cuda_graph = cuda_graph

    @staticmethod
    def _adopt(path: Path, onnx: Path, sidecar: dict, trt, cuda) -> dict:
        """An engine built outside dualkd-edge (trtexec): metadata from the ONNX it came from; the
        sidecar is written once it is known to deserialize here, so later loads need no --onnx."""
        from dualkd_edge.artifacts.engines import write_sidecar

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if runtime.deserialize_cuda_engine(path.read_bytes()) is None:
            raise UserError(f"{path}: TensorRT {trt.__version__} cannot deserialize it (built by another TensorRT "
                            f"or GPU?); rebuild it here with `dualkd-edge build {onnx} --out {path.name}`")
        fields = {k: v for k, v in sidecar.items() if k != "adopted"}
        fields.update(tensorrt_version=trt.__version__, gpu=cuda.gpu_identity())
        write_sidecar(path, fields)
        log.info("%s: wrote its sidecar from %s (engine built outside dualkd-edge)", path.name, onnx)
        return fields

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _capture_graph(self) -> None:
        """Capture one launch into a CUDA graph (static shapes only); later calls replay it."""
        from dualkd_edge.runtime.cuda_buffers import check, import_cudart

        cudart = import_cudart()
        self._launch()  # TensorRT needs one regular launch before capture (deferred allocations)
        check(cudart.cudaStreamSynchronize(self.stream))
        check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        self._launch()
        self._graph = check(cudart.cudaStreamEndCapture(self.stream))
        self._graph_exec = check(cudart.cudaGraphInstantiate(self._graph, 0))

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from dualkd_edge.runtime.cuda_buffers import check, import_cudart

        cudart = import_cudart()
        n = batch.shape[0]
        shape = tuple(batch.shape)
        self.context.set_input_shape(self.input_name, shape)
        inp = self.buffers[self.input_name]
        np.copyto(inp.view(shape), batch.astype(inp.dtype, copy=False))
        self.timer.record(0, self.stream)
        inp.to_device(self.stream, batch.size * inp.dtype.itemsize)
        self.timer.record(1, self.stream)
        if self.use_cuda_graph:
            if self._graph_exec is None:
                self._capture_graph()
            check(cudart.cudaGraphLaunch(self._graph_exec, self.stream))
        else:
            self._launch()
        self.timer.record(2, self.stream)
        out_shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}
        for name in self.output_names:
            buf = self.buffers[name]
            buf.to_host(self.stream, int(np.prod(out_shapes[name])) * buf.dtype.itemsize)
        self.timer.record(3, self.stream)
        check(cudart.cudaStreamSynchronize(self.stream))
        self.last_timings.update(self.timer.elapsed_ms())
        return {name: self.buffers[name].view(out_shapes[name])[:n].astype(np.float32) for name in self.output_names}

    def describe(self) -> str:
        graph = ", CUDA graph" if self.use_cuda_graph else ""
        return f"tensorrt {self._trt.__version__} ({self.precision}{graph})"

    def close(self) -> None:
        """Free what the backend holds on the device: buffers, events, the CUDA graph, the stream."""
        from dualkd_edge.runtime.cuda_buffers import check, import_cudart

        cudart = import_cudart()
        for buf in self.buffers.values():
            buf.free()
        self.buffers = {}
        if self.timer is not None:
            self.timer.destroy()
            self.timer = None
        if self._graph_exec is not None:
            check(cudart.cudaGraphExecDestroy(self._graph_exec))
            check(cudart.cudaGraphDestroy(self._graph))
            self._graph_exec = self._graph = None
        if self.stream is not None:
            check(cudart.cudaStreamDestroy(self.stream))
            self.stream = None
