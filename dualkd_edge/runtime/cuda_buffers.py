"""CUDA memory and streams through cuda-python (what NVIDIA's TensorRT samples use): no torch,
no pycuda. Every call returns (error, result...); `check` turns errors into exceptions."""

from __future__ import annotations

import numpy as np


def import_cudart():
    """cuda-python >= 12.6 ships `cuda.bindings.runtime`; older releases `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]
    return cudart


def driver_mismatch_hint() -> str:
    from importlib import metadata

    try:
        version = metadata.version("cuda-python")
    except metadata.PackageNotFoundError:
        version = "?"
    return (f"cuda-python {version} needs a newer NVIDIA driver than this machine has (cudaErrorInsufficientDriver): "
            "install the cuda-python of your CUDA major version: on JetPack 6 (CUDA 12) "
            "`pip install 'cuda-python>=12.2,<13'`; cuda-python 13 needs driver >= 580")


def check(result):
    cudart = import_cudart()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
            from dualkd_edge.errors import UserError

            raise UserError(driver_mismatch_hint())
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


class DeviceBuffer:
    """A device allocation with a pinned host mirror of the same shape and type."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        cudart = import_cudart()
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.device = check(cudart.cudaMalloc(self.nbytes))
        host_ptr = check(cudart.cudaMallocHost(self.nbytes))
        self._host_ptr = host_ptr
        import ctypes

        buf = (ctypes.c_byte * self.nbytes).from_address(host_ptr)
        self.host = np.frombuffer(buf, dtype=self.dtype).reshape(self.shape)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        return self.host.reshape(-1)[:n].reshape(shape)

    def to_device(self, stream, nbytes: int) -> None:
        cudart = import_cudart()
        check(cudart.cudaMemcpyAsync(self.device, self._host_ptr, nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, stream, nbytes: int) -> None:
        cudart = import_cudart()
        check(cudart.cudaMemcpyAsync(self._host_ptr, self.device, nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def free(self) -> None:
        cudart = import_cudart()
        if self.device:
            check(cudart.cudaFree(self.device))
            check(cudart.cudaFreeHost(self._host_ptr))
            self.device = 0


class StageTimer:
    """CUDA events around host-to-device, compute and device-to-host on one stream."""

    def __init__(self) -> None:
        cudart = import_cudart()
        self.events = [check(cudart.cudaEventCreate()) for _ in range(4)]

    def record(self, i: int, stream) -> None:
        check(import_cudart().cudaEventRecord(self.events[i], stream))

    def elapsed_ms(self) -> dict[str, float]:
        cudart = import_cudart()
        e = self.events
        return {"h2d_ms": check(cudart.cudaEventElapsedTime(e[0], e[1])),
                "compute_ms": check(cudart.cudaEventElapsedTime(e[1], e[2])),
                "d2h_ms": check(cudart.cudaEventElapsedTime(e[2], e[3]))}

    def destroy(self) -> None:
        cudart = import_cudart()
        for ev in self.events:
            check(cudart.cudaEventDestroy(ev))
        self.events = []


def gpu_identity(device: int = 0) -> dict:
    cudart = import_cudart()
    props = check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}
