"""Export to one fused ONNX graph, FP16 / INT8 variants, and the accuracy checks that guard them."""
