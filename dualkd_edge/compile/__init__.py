"""Torch-free steps that turn an exported ONNX graph into a deployable one, and the checks that
guard them (TensorRT conformance, FP16/INT8 lowering)."""
