"""Every TensorRT Python API member our build and runtime code touch, grouped by the path that
touches it, with the releases each path runs on.

`tests/test_tensorrt_api.py` loads NVIDIA's real Python bindings of TensorRT 10.3, 10.13 and 11.4
(PyPI's tensorrt-cu12-bindings wheels, with stand-in shared libraries so they import without a GPU)
and checks that each member exists where its path runs, and reads our TensorRT code to check that
it touches nothing missing from this table. A renamed or removed API then fails here, not on a
Jetson. In code, TensorRT objects keep these variable names (`builder`, `config`, `network`, ...)."""

from __future__ import annotations

# variable name in our code -> TensorRT class it holds
VARIABLE_CLASSES = {
    "builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition", "parser": "OnnxParser",
    "profile": "IOptimizationProfile", "engine": "ICudaEngine", "context": "IExecutionContext",
    "runtime": "Runtime", "layer": "ILayer", "tensor": "ITensor", "timing_cache": "ITimingCache",
    "logger": "Logger",
}

COMMON = (  # every build and run, TensorRT 10.x and 11
    "__version__", "Logger", "Logger.WARNING", "Builder", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "OnnxParser", "OnnxParser.parse_from_file",
    "OnnxParser.num_errors", "OnnxParser.get_error", "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType.WORKSPACE", "IBuilderConfig.builder_optimization_level",
    "IBuilderConfig.add_optimization_profile", "IOptimizationProfile.set_shape",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "ITimingCache.serialize",
    "INetworkDefinition.get_input", "ITensor.name", "Runtime", "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_profile_shape",
    "ICudaEngine.create_execution_context", "IExecutionContext.set_input_shape",
    "IExecutionContext.get_tensor_shape", "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3", "TensorIOMode.INPUT", "nptype",
)
DLA = (  # --dla, on the TensorRT releases that have DLA (<= 10.7: JetPack 6's 10.3)
    "DeviceType.DLA", "IBuilderConfig.default_device_type", "IBuilderConfig.DLA_core", "BuilderFlag.GPU_FALLBACK",
    "Runtime.DLA_core",
)
WEAK_TYPING = (  # implicit INT8 calibration, TensorRT < 10.12 only
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "IBuilderConfig.set_flag",
    "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile", "IInt8EntropyCalibrator2",
    "INetworkDefinition.num_layers", "INetworkDefinition.get_layer", "ILayer.name", "ILayer.type",
    "ILayer.precision", "ILayer.num_inputs", "ILayer.get_input", "ILayer.num_outputs", "ILayer.get_output",
    "ILayer.set_output_type", "ITensor.dtype", "LayerType.NORMALIZATION", "LayerType.SOFTMAX", "LayerType.REDUCE",
    "LayerType.TOPK", "float32", "float16",
)

# Which groups run on which release of the bindings audited.
GROUPS_PER_RELEASE = {
    "10.3": {"common": COMMON, "dla": DLA, "weak_typing": WEAK_TYPING},
    "10.13": {"common": COMMON},
    "11.4": {"common": COMMON},
}


def resolve(module, dotted: str) -> bool:
    """Whether `module` (the imported tensorrt package) has the member `A.B.C`."""
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def missing_members(module, release: str) -> dict[str, list[str]]:
    """Members of each group used on `release` that its bindings lack."""
    return {group: [m for m in members if not resolve(module, m)]
            for group, members in GROUPS_PER_RELEASE[release].items()}


def all_members() -> set[str]:
    return set(COMMON) | set(DLA) | set(WEAK_TYPING)
