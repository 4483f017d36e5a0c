"""`dualkd-edge build`: a TensorRT engine from a dualkd-edge ONNX file, with a JSON sidecar.

TensorRT >= 10.12: strongly-typed networks; precision comes from the graph (INT8 from the Q/DQ
model of `dualkd-edge quantize`, FP16 from the mixed-precision export, converted here when given an
FP32 file). Older TensorRT 10 (JetPack 6 ships 10.3): builder precision flags, LayerNorm pinned to
FP32, and for INT8 without Q/DQ an entropy calibrator fed from calib_data/ with a calibration cache.
API per the TensorRT 10 Python reference (Builder, IBuilderConfig, OnnxParser, ICudaEngine)."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.fileio import atomic_path, write_bytes_atomic

log = logging.getLogger("dualkd_edge")

PRECISIONS = ("fp32", "fp16", "int8", "best")
STRONG_TYPING_SINCE = (10, 12)


@dataclass
class BuildOptions:
    precision: str = "fp16"
    calib: Path | None = None
    batch: str | None = None  # "MIN:OPT:MAX" for dynamic-batch models
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    dla_core: int | None = None
    optimization_level: int = 3
    calib_cache: Path | None = None

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workspace_gib <= 0:
            raise UserError(f"--workspace: must be > 0 GiB, got {self.workspace_gib}")
        if not 0 <= self.optimization_level <= 5:
            raise UserError(f"--opt-level: expected 0..5, got {self.optimization_level}")
        if self.dla_core is not None and self.precision == "fp32":
            raise UserError("--dla: DLA runs FP16 or INT8 only; choose --precision fp16, int8 or best")
        self.batch_profile()

    def batch_profile(self) -> tuple[int, int, int] | None:
        if self.batch is None:
            return None
        try:
            lo, opt, hi = (int(v) for v in self.batch.split(":"))
        except ValueError:
            raise UserError(f"--batch: expected MIN:OPT:MAX (e.g. 1:4:8), got {self.batch!r}") from None
        if not 1 <= lo <= opt <= hi:
            raise UserError(f"--batch: need 1 <= MIN <= OPT <= MAX, got {self.batch!r}")
        return lo, opt, hi


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def uses_strong_typing(tensorrt_version: str) -> bool:
    return parse_version(tensorrt_version) >= STRONG_TYPING_SINCE


def input_shapes(meta, opts: BuildOptions, static_batch: int | None) -> tuple[tuple, tuple, tuple]:
    spec = meta.input
    per_image = (spec.height, spec.width, 3) if spec.dtype == "uint8" else (3, spec.height, spec.width)
    if static_batch is not None:
        s = (static_batch, *per_image)
        return s, s, s
    lo, opt, hi = opts.batch_profile() or (1, 1, 8)
    return (lo, *per_image), (opt, *per_image), (hi, *per_image)


def trtexec_command(onnx_path: Path, engine: Path, opts: BuildOptions, shapes: tuple[tuple, tuple, tuple],
                    strong: bool, input_name: str = "images") -> str:
    """The equivalent command line for NVIDIA's trtexec."""
    dims = ["x".join(map(str, s)) for s in shapes]
    cmd = [f"trtexec --onnx={onnx_path} --saveEngine={engine}"]
    if shapes[0] != shapes[2]:
        cmd.append(f"--minShapes={input_name}:{dims[0]} --optShapes={input_name}:{dims[1]} --maxShapes={input_name}:{dims[2]}")
    if strong:
        cmd.append("--stronglyTyped")
    elif opts.precision in ("fp16", "best"):
        cmd.append("--fp16")
    if not strong and opts.precision in ("int8", "best"):
        cmd.append("--int8" + (f" --calib={opts.calib_cache}" if opts.calib_cache else ""))
    cmd.append(f"--memPoolSize=workspace:{int(opts.workspace_gib * 1024)}M")
    cmd.append(f"--builderOptimizationLevel={opts.optimization_level}")
    if opts.timing_cache:
        cmd.append(f"--timingCacheFile={opts.timing_cache}")
    if opts.dla_core is not None:
        cmd.append(f"--useDLACore={opts.dla_core} --allowGPUFallback")
    return " ".join(cmd)


def has_qdq(proto) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


def prepare_onnx_for_strong_typing(onnx_path: Path, proto, meta, opts: BuildOptions, workdir: Path) -> Path:
    """Strongly-typed builds take precision from the graph: make the graph carry it."""
    precision = meta.export.get("precision", "fp32")
    if meta.export.get("quantization", {}).get("target") == "cpu":
        raise UserError(f"{onnx_path}: quantized for the CPU (UINT8 activations), which TensorRT rejects; "
                        "quantize with --target tensorrt")
    want = opts.precision
    if want == "best":
        want = "int8" if precision == "int8" or opts.calib else "fp16"
    if want == "int8" and precision != "int8":
        if opts.calib is None:
            raise UserError("--precision int8: give a Q/DQ model from `dualkd-edge quantize`, or --calib DIR to quantize now")
        from dualkd_edge.export.quantize import quantize_int8

        log.info("quantizing %s to Q/DQ INT8 for the strongly-typed build", onnx_path.name)
        return quantize_int8(onnx_path, opts.calib, workdir / "int8.onnx").path
    if want == "fp16" and precision == "fp32":
        from dualkd_edge.export.fp16 import to_mixed_fp16
        from dualkd_edge.model_files import save_onnx_atomic

        log.info("converting %s to mixed FP16 for the strongly-typed build", onnx_path.name)
        out = workdir / "fp16.onnx"
        save_onnx_atomic(to_mixed_fp16(proto), out)
        return out
    if want == "fp32" and precision != "fp32":
        raise UserError(f"--precision fp32: {onnx_path} is a {precision} model; build from the FP32 export")
    return onnx_path


def _make_calibrator(trt, batcher, cache: Path):
    """IInt8EntropyCalibrator2 fed by a CalibrationBatcher, with a reusable calibration cache."""
    from dualkd_edge.runtime.cuda_buffers import DeviceBuffer, check, import_cudart

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            first = batcher.next_batch()
            batcher.reset()
            if first is None:
                raise UserError("--calib: fewer calibration images than one batch")
            self.buffer = DeviceBuffer(first.shape, first.dtype)

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names):  # noqa: ANN001 - TensorRT's signature
            batch = batcher.next_batch()
            if batch is None:
                return None
            np_view = self.buffer.view(batch.shape)
            np_view[...] = batch
            self.buffer.to_device(0, batch.nbytes)
            check(import_cudart().cudaStreamSynchronize(0))
            return [int(self.buffer.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            write_bytes_atomic(cache, bytes(data))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, engine_path: Path, opts: BuildOptions) -> dict:
    from dualkd_edge.model_files import load_onnx_model, onnx_metadata
    from dualkd_edge.runtime.tensorrt_backend import import_tensorrt

    opts.validate()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"MODEL: not found: {onnx_path}")
    if onnx_path.suffix.lower() != ".onnx":
        raise UserError(f"MODEL: {onnx_path} is not an .onnx file")
    proto = load_onnx_model(onnx_path)
    meta = onnx_metadata(proto, onnx_path)
    trt = import_tensorrt()  # after the cheap checks: a bad file is reported even without TensorRT
    from dualkd_edge.runtime.cuda_buffers import gpu_identity

    strong = uses_strong_typing(trt.__version__)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    static_batch = dim0.dim_value if dim0.HasField("dim_value") else None
    shapes = input_shapes(meta, opts, static_batch)
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    with tempfile.TemporaryDirectory() as tmp:
        source = prepare_onnx_for_strong_typing(onnx_path, proto, meta, opts, Path(tmp)) if strong else onnx_path
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
        config.builder_optimization_level = opts.optimization_level
        input_name = network.get_input(0).name
        if static_batch is None:
            profile = builder.create_optimization_profile()
            profile.set_shape(input_name, *shapes)
            config.add_optimization_profile(profile)
        path_taken = "strongly-typed" if strong else "weak-typed (builder flags)"
        if not strong:
            _configure_weak_typing(trt, network, config, opts, meta, proto, shapes, builder)
        if opts.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = opts.dla_core
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        cache = None
        if opts.timing_cache:
            blob = opts.timing_cache.read_bytes() if opts.timing_cache.is_file() else b""
            cache = config.create_timing_cache(blob)
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT messages above)")
    with atomic_path(engine_path) as tmp_engine:
        tmp_engine.write_bytes(bytes(serialized))
    if cache is not None:
        write_bytes_atomic(opts.timing_cache, bytes(cache.serialize()))
    from dualkd_edge.runtime.engine_sidecar import write_sidecar

    build_options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    build_options["input_shapes"] = {"min": shapes[0], "opt": shapes[1], "max": shapes[2]}
    meta_dict = meta.to_dict()
    meta_dict["export"] = dict(meta_dict["export"], engine_precision=opts.precision)
    write_sidecar(engine_path, tensorrt_version=trt.__version__, gpu=gpu_identity(), precision=opts.precision,
                  path_taken=path_taken, build_options=build_options, metadata=meta_dict)
    return {"engine": str(engine_path), "seconds": time.perf_counter() - t0, "path_taken": path_taken,
            "tensorrt_version": trt.__version__, "trtexec": trtexec_command(onnx_path, engine_path, opts, shapes, strong)}


def _configure_weak_typing(trt, network, config, opts: BuildOptions, meta, proto, shapes, builder) -> None:
    """TensorRT < 10.12: precision by builder flags; norms and softmax pinned to FP32."""
    if opts.precision in ("fp16", "best"):
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE,
                              trt.LayerType.TOPK):
                layer.precision = trt.float32
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.float32)
    if opts.precision in ("int8", "best"):
        config.set_flag(trt.BuilderFlag.INT8)
        if not has_qdq(proto):  # implicit quantization needs a calibrator
            if opts.calib is None:
                raise UserError("--precision int8 on TensorRT < 10.12: give --calib DIR or a Q/DQ model")
            from dualkd_edge.export.calibration_batches import CalibrationBatcher

            batcher = CalibrationBatcher(opts.calib, meta.input, shapes[1][0], max_images=512)
            cache = opts.calib_cache or Path(str(opts.calib).rstrip("/") + ".calib_cache")
            config.int8_calibrator = _make_calibrator(trt, batcher, Path(cache))
            if shapes[0] != shapes[2]:
                profile = builder.create_optimization_profile()
                profile.set_shape(network.get_input(0).name, shapes[1], shapes[1], shapes[1])
                config.set_calibration_profile(profile)
