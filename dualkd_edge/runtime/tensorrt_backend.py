"""Native TensorRT backend for `.engine` / `.plan` files (TensorRT 10 API, cuda-python buffers).

Tensors are addressed by name (`num_io_tensors`, `get_tensor_name`, `set_input_shape`,
`set_tensor_address`) and run with `execute_async_v3` on our own stream. For engines with a
static input shape the launch can be captured once into a CUDA graph and replayed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.metadata import ArtifactMetadata
from dualkd_edge.runtime.base import Backend, model_outputs

log = logging.getLogger("dualkd_edge")

INSTALL_HINT = ("TensorRT is not installed: on a desktop GPU `pip install tensorrt cuda-python` "
                "(or `pip install 'dualkd-edge[tensorrt]'`); on a Jetson it comes with JetPack")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return trt


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, cuda_graph: bool = False, **_: object) -> None:
        super().__init__()
        from dualkd_edge.runtime.engine_sidecar import check_compatible, read_sidecar

        path = Path(path)
        sidecar = read_sidecar(path)
        self.meta = ArtifactMetadata.from_dict(sidecar["metadata"], str(path))
        trt = import_tensorrt()
        try:
            from dualkd_edge.runtime.cuda_buffers import check, gpu_identity, import_cudart

            cudart = import_cudart()
        except ImportError:
            raise MissingDependencyError("cuda-python is not installed: `pip install cuda-python`") from None
        check_compatible(path, sidecar, trt.__version__, gpu_identity())
        self.precision = sidecar.get("precision", "?")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"{path}: TensorRT could not deserialize the engine; rebuild it with `dualkd-edge build`")
        self.context = self.engine.create_execution_context()
        self.stream = check(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = model_outputs(set(names), f"{path} (engine)")
        # Allocate for the largest batch the engine accepts (profile 0 max, or its static shape).
        in_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if in_shape[0] == -1:
            max_shape = tuple(self.engine.get_tensor_profile_shape(self.input_name, 0)[2])
            self.max_batch = int(max_shape[0])
        else:
            max_shape = in_shape
            self.max_batch = self.fixed_batch = int(in_shape[0])
        self.context.set_input_shape(self.input_name, max_shape)
        from dualkd_edge.runtime.cuda_buffers import DeviceBuffer, StageTimer

        self.buffers = {}
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = trt.nptype(self.engine.get_tensor_dtype(n))
            self.buffers[n] = DeviceBuffer(shape, dtype)
            self.context.set_tensor_address(n, int(self.buffers[n].device))
        self.timer = StageTimer()
        self.use_cuda_graph = cuda_graph and in_shape[0] != -1
        self._graph_exec = None

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _capture_graph(self) -> None:
        """Capture one launch into a CUDA graph (static shapes only); later calls replay it."""
        from dualkd_edge.runtime.cuda_buffers import check, import_cudart

        cudart = import_cudart()
        self._launch()  # TensorRT needs one regular launch before capture
        check(cudart.cudaStreamSynchronize(self.stream))
        check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        self._launch()
        graph = check(cudart.cudaStreamEndCapture(self.stream))
        self._graph_exec = check(cudart.cudaGraphInstantiate(graph, 0))

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
        return f"tensorrt {self._trt.__version__} ({self.precision})"

    def close(self) -> None:
        from dualkd_edge.runtime.cuda_buffers import check, import_cudart

        for buf in getattr(self, "buffers", {}).values():
            buf.free()
        self.buffers = {}
        if getattr(self, "stream", None) is not None:
            check(import_cudart().cudaStreamDestroy(self.stream))
            self.stream = None
