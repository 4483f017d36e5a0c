"""`dualkd-edge build`: a TensorRT engine from a dualkd-edge ONNX file, with a JSON sidecar.

The path (strongly typed or, for implicit INT8 on TensorRT < 10.12 only, weak typed) is decided
by `build_plan.py`; the graph TensorRT parses is checked against its rules first
(`tensorrt_rules.py`); the built engine is compared with its ONNX on real images before it
replaces anything at `--out`. API per the TensorRT 10/11 Python reference (Builder,
IBuilderConfig, OnnxParser, ICudaEngine); every member used is listed in `tensorrt_api.py`."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from dualkd_edge.compile.tensorrt.plan import (
    FP32_SCOPE,
    BuildOptions,
    BuildPlan,
    calibration_cache_path,
    input_shapes,
    pinned_fp32_nodes,
    plan_build,
    trtexec_command,
)
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_bytes_atomic

log = logging.getLogger("dualkd_edge")


def static_batch_of(proto) -> int | None:
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim0.dim_value if dim0.HasField("dim_value") else None


def prepare_graph(onnx_path: Path, proto, plan: BuildPlan, opts: BuildOptions, workdir: Path) -> Path:
    """The ONNX file TensorRT parses: the given one, its mixed-FP16 form, or its Q/DQ INT8 form."""
    if plan.graph == "to-fp16":
        from dualkd_edge.artifacts.onnx_files import load_onnx_model, save_onnx_atomic
        from dualkd_edge.compile.fp16 import to_mixed_fp16

        log.info("converting %s to mixed FP16 for the strongly-typed build", onnx_path.name)
        out = workdir / "fp16.onnx"
        save_onnx_atomic(to_mixed_fp16(load_onnx_model(onnx_path, load_weights=True)), out)
        return out
    if plan.graph == "quantize":
        from dualkd_edge.compile.int8.quantize import quantize_int8

        log.info("quantizing %s to Q/DQ INT8 for the strongly-typed build", onnx_path.name)
        return quantize_int8(onnx_path, opts.calib, workdir / "int8.onnx", target="tensorrt").path
    return onnx_path


def check_for_tensorrt(graph_path: Path, tensorrt_version: str, dla: bool, shown_as: Path) -> None:
    from dualkd_edge.artifacts.onnx_files import load_onnx_model
    from dualkd_edge.compile.tensorrt.rules import check_graph, profile_for_version

    profile = profile_for_version(tensorrt_version)
    violations = check_graph(load_onnx_model(graph_path), profile, dla)
    if violations:
        lines = "; ".join(v.format(profile) for v in violations[:5])
        more = f" (and {len(violations) - 5} more; run `dualkd-edge check {shown_as}`)" if len(violations) > 5 else ""
        raise UserError(f"{shown_as}: TensorRT would refuse this graph: {lines}{more} (--no-check builds anyway)")


def build_engine(onnx_path: Path, engine_path: Path, opts: BuildOptions) -> dict:
    from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata
    from dualkd_edge.runtime.tensorrt_backend import import_tensorrt

    opts.validate()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UserError(f"MODEL: not found: {onnx_path}")
    if onnx_path.suffix.lower() != ".onnx":
        raise UserError(f"MODEL: {onnx_path} is not an .onnx file")
    proto = load_onnx_model(onnx_path)
    meta = onnx_metadata(proto, onnx_path)
    trt = import_tensorrt()  # after the cheap checks: a bad file is reported even without TensorRT
    from dualkd_edge.runtime.cuda_buffers import gpu_identity

    static_batch = static_batch_of(proto)
    plan = plan_build(meta, opts, trt.__version__, static_batch, onnx_path)
    for note in plan.notes:
        log.info("build: %s", note)
    shapes = input_shapes(meta, opts, static_batch)
    if plan.calibrator and opts.calib_cache is None:
        opts.calib_cache = calibration_cache_path(onnx_path, opts.calib, engine_path)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        graph_path = prepare_graph(onnx_path, proto, plan, opts, Path(tmp))
        if opts.check:
            check_for_tensorrt(graph_path, trt.__version__, opts.dla_core is not None, onnx_path)
        serialized, timing_cache = _build_serialized(trt, graph_path, plan, opts, meta, shapes, static_batch)
    if timing_cache is not None:
        write_bytes_atomic(opts.timing_cache, bytes(timing_cache.serialize()))
    build_options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    build_options["input_shapes"] = {"min": shapes[0], "opt": shapes[1], "max": shapes[2]}
    meta_dict = meta.to_dict()
    meta_dict["export"] = dict(meta_dict["export"], engine_precision=plan.precision)
    sidecar = {"tensorrt_version": trt.__version__, "gpu": gpu_identity(), "precision": plan.precision,
               "path_taken": plan.path_taken, "build_options": build_options, "metadata": meta_dict,
               "onnx": str(onnx_path.resolve())}
    from dualkd_edge.compile.tensorrt.engine_gate import install_engine

    comparison, final = install_engine(bytes(serialized), engine_path, sidecar, onnx_path, opts)
    return {"engine": str(final), "seconds": time.perf_counter() - t0, "path_taken": plan.path_taken,
            "tensorrt_version": trt.__version__, "comparison": comparison,
            "trtexec": trtexec_command(onnx_path, engine_path, opts, shapes, plan, pinned=pinned_fp32_nodes(proto))}


def _build_serialized(trt, graph_path: Path, plan: BuildPlan, opts: BuildOptions, meta, shapes, static_batch):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{graph_path.name}: TensorRT's ONNX parser failed: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    config.builder_optimization_level = opts.optimization_level
    input_name = network.get_input(0).name
    if static_batch is None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, *shapes)
        config.add_optimization_profile(profile)
    calibrator = None
    if not plan.strongly_typed:
        calibrator = _configure_weak_typing(trt, builder, network, config, opts, meta, shapes)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_cache = None
    if opts.timing_cache:
        blob = opts.timing_cache.read_bytes() if opts.timing_cache.is_file() else b""
        timing_cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
            log.warning("--timing-cache: %s does not fit this TensorRT / GPU; starting a new one", opts.timing_cache)
            timing_cache = config.create_timing_cache(b"")
            config.set_timing_cache(timing_cache, ignore_mismatch=False)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise UserError(f"{graph_path.name}: TensorRT could not build an engine (see the TensorRT messages above)")
    return serialized, timing_cache


def _configure_weak_typing(trt, builder, network, config, opts: BuildOptions, meta, shapes):
    """TensorRT < 10.12, INT8 without Q/DQ: builder flags, an entropy calibrator, and FP32 pinned
    wherever FP16 overflows or loses too much."""
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = _pin_fp32_layers(trt, network)
    log.info("build: %d layers pinned to FP32 (norms, softmax, reductions, TopK, scoring)", pinned)
    from dualkd_edge.compile.int8.calibration_batches import CalibrationBatches

    batches = CalibrationBatches.from_folder(opts.calib, meta.input, shapes[1][0], max_images=512)
    calibrator = make_entropy_calibrator(trt, batches, Path(opts.calib_cache))
    config.int8_calibrator = calibrator
    if shapes[0] != shapes[2]:
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, shapes[1], shapes[1], shapes[1])
        config.set_calibration_profile(profile)
    return calibrator


def _pin_fp32_layers(trt, network) -> int:
    """Norms, softmax, reductions, TopK and every layer of the scoring head (its cosine multiplies
    squared norms of ~1e5: inf in FP16) compute and output FP32. Only float outputs get an output
    type: TopK's indices, shape tensors and booleans keep theirs."""
    float_types = (trt.float32, trt.float16)
    pinned_types = (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.TOPK)
    n = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in pinned_types and not layer.name.startswith(FP32_SCOPE):
            continue
        float_in = [layer.get_input(k) for k in range(layer.num_inputs) if layer.get_input(k) is not None]
        if not any(tensor.dtype in float_types for tensor in float_in):
            continue
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            if layer.get_output(k).dtype in float_types:
                layer.set_output_type(k, trt.float32)
        n += 1
    return n


def make_entropy_calibrator(trt, batches, cache: Path):
    """IInt8EntropyCalibrator2 fed by CalibrationBatches, with a calibration cache keyed by the
    model's content (build_plan.calibration_cache_path)."""
    from dualkd_edge.runtime.cuda_buffers import DeviceBuffer, check, import_cudart

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            first = batches.next_batch()
            batches.reset()
            if first is None:
                raise UserError("--calib: fewer calibration images than one batch")
            self.buffer = DeviceBuffer(first.shape, first.dtype)

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names):  # noqa: ANN001 - TensorRT's signature
            batch = batches.next_batch()
            if batch is None:
                return None
            self.buffer.view(batch.shape)[...] = batch
            self.buffer.to_device(0, batch.nbytes)
            check(import_cudart().cudaStreamSynchronize(0))
            return [int(self.buffer.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            write_bytes_atomic(cache, bytes(data))

        def free(self) -> None:
            self.buffer.free()

    return EntropyCalibrator()
