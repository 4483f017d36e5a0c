"""`dualkd-edge build`: checks that need no TensorRT first, then the build."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.detector import ENGINE_SUFFIXES


def run_build(model: Path, out: Path, opts, print_trtexec: bool) -> None:
    from dualkd_edge.export.tensorrt_build import build_engine, input_shapes, trtexec_command, uses_strong_typing
    from dualkd_edge.model_files import load_onnx_model, onnx_metadata

    opts.validate()
    if not model.is_file():
        raise UserError(f"MODEL: not found: {model}")
    if model.suffix.lower() != ".onnx":
        raise UserError(f"MODEL: {model} is not an .onnx file (export one with `dualkd-edge export`)")
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"--out: expected an engine file name ending in {', '.join(ENGINE_SUFFIXES)}, got {out}")
    proto = load_onnx_model(model)
    meta = onnx_metadata(proto, model)
    if print_trtexec:
        try:
            import tensorrt

            strong_options = [uses_strong_typing(tensorrt.__version__)]
        except ImportError:
            strong_options = [True, False]
        dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
        shapes = input_shapes(meta, opts, dim0.dim_value if dim0.HasField("dim_value") else None)
        for strong in strong_options:
            label = "TensorRT >= 10.12" if strong else "TensorRT < 10.12 (JetPack 6)"
            print(f"# {label}\n{trtexec_command(model, out, opts, shapes, strong)}")
            if strong and opts.precision != meta.export.get("precision", "fp32"):
                print(f"# strongly typed: precision comes from the graph; for {opts.precision} pass the "
                      "--precision fp16 export or the `dualkd-edge quantize` Q/DQ model as --onnx")
        if len(strong_options) == 2:
            return
    result = build_engine(model, out, opts)
    print(f"built {result['engine']} with TensorRT {result['tensorrt_version']} ({result['path_taken']}) "
          f"in {result['seconds']:.0f} s")
