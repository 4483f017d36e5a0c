"""TensorRT: the offline conformance rules, the per-version build plan, the build, and the engine gate."""
