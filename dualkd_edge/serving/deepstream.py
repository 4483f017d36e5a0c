"""`dualkd-edge deepstream`: what a DeepStream pipeline on a Jetson needs to run one exported model
on N cameras batched by nvstreammux into one TensorRT call.

nvinfer feeds a network planar float pixels as `net-scale-factor * (x - offsets[c])`: one scale
for all channels, so ImageNet's per-channel std cannot be expressed there, and uint8 NHWC inputs
not at all. The graph is therefore rewritten to take what nvinfer gives with net-scale-factor=1
and offsets=0 (RGB pixels 0..255, NCHW) and to do the normalisation of the model itself: exact,
for float and uint8 exports alike. Presets that centre-crop get the frame at their resize size
and crop inside the graph, as the host does. Files written to DIR:

    model.deepstream.onnx          the rewritten graph (metadata: pixels in, the rest unchanged)
    config_infer_dualkd.txt        nvinfer: network-type=100, output-tensor-meta=1, batch, precision
    deepstream_app_config.txt      deepstream-app: N RTSP sources -> nvstreammux -> nvinfer (throughput)
    dualkd_probe.py                a pyds pipeline + probe that reads our output tensors and decides
    dualkd_meta.json               threshold and calibration the probe applies

DeepStream cannot run on our development machines: the tests check that these files parse,
agree with the model's metadata, and that the rewritten graph scores as the original does."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.artifacts import INPUT_NAME, ONNX, kind_of
from dualkd_edge.artifacts.contract import static_batch_of
from dualkd_edge.errors import UserError
from dualkd_edge.fileio import write_bytes_atomic, write_json_atomic
from dualkd_edge.metadata import ArtifactMetadata

GRAPH_FILE = "model.deepstream.onnx"
NVINFER_FILE = "config_infer_dualkd.txt"
APP_FILE = "deepstream_app_config.txt"
PROBE_FILE = "dualkd_probe.py"
META_FILE = "dualkd_meta.json"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}


@dataclass
class DeepStreamOptions:
    sources: int = 1
    precision: str = "fp16"  # fp32 | fp16 | int8 (int8: a Q/DQ graph from `quantize --target tensorrt`)
    width: int = 1280  # nvstreammux's batch resolution
    height: int = 720
    gpu: int = 0

    def validate(self) -> None:
        if self.sources < 1:
            raise UserError(f"--sources: must be >= 1, got {self.sources}")
        if self.precision not in NETWORK_MODES:
            raise UserError(f"--precision: expected fp32, fp16 or int8, got {self.precision!r}")


def _const(name: str, values: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, np.float32) if values.dtype.kind == "f" else values, name)


def _pixel_prefix(model, meta: ArtifactMetadata) -> tuple[list, str]:
    """Nodes from the new pixel input (RGB 0..255 NCHW at the resize size) to what the original
    graph's first consumer expects; returns (nodes, the tensor that replaces the old input)."""
    from onnx import helper

    spec = meta.input
    nodes, x = [], INPUT_NAME
    if spec.crop is not None and spec.resize and spec.resize != spec.height:
        from dualkd_edge.preprocess import crop_offsets

        top, left = crop_offsets(spec)
        starts, ends = [top, left], [top + spec.height, left + spec.width]
        model.graph.initializer.extend([_const("ds_crop_starts", np.array(starts, np.int64)),
                                        _const("ds_crop_ends", np.array(ends, np.int64)),
                                        _const("ds_crop_axes", np.array([2, 3], np.int64))])
        nodes.append(helper.make_node("Slice", [x, "ds_crop_starts", "ds_crop_ends", "ds_crop_axes"], ["ds_cropped"]))
        x = "ds_cropped"
    if spec.dtype == "uint8":  # the graph wants NHWC BGR and converts it itself
        model.graph.initializer.append(_const("ds_bgr", np.array([2, 1, 0], np.int64)))
        nodes += [helper.make_node("Gather", [x, "ds_bgr"], ["ds_bgr_nchw"], axis=1),
                  helper.make_node("Transpose", ["ds_bgr_nchw"], ["ds_pixels_nhwc"], perm=[0, 2, 3, 1])]
        return nodes, "ds_pixels_nhwc"
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1) * 255.0)
    model.graph.initializer.extend([_const("ds_mean255", mean), _const("ds_inv_std255", inv_std)])
    nodes += [helper.make_node("Sub", [x, "ds_mean255"], ["ds_centred"]),
              helper.make_node("Mul", ["ds_centred", "ds_inv_std255"], ["ds_normalised"])]
    return nodes, "ds_normalised"


def pixel_input_graph(model, meta: ArtifactMetadata):
    """The export rewritten for nvinfer (see the module doc); `model` is changed in place."""
    from onnx import TensorProto, helper

    graph = model.graph
    old = next(i for i in graph.input if i.name == INPUT_NAME)
    batch_dim = old.type.tensor_type.shape.dim[0]
    spec = meta.input
    prefix, replacement = _pixel_prefix(model, meta)
    if spec.dtype == "uint8":  # drop the graph's own uint8 -> float Cast: the pixels arrive as float
        cast = next((n for n in graph.node if n.op_type == "Cast" and list(n.input) == [INPUT_NAME]), None)
        if cast is None:
            raise UserError("MODEL: a uint8 export whose input is not cast to float first; re-export it")
        graph.node.remove(cast)
        renamed_from = cast.output[0]
    else:
        renamed_from = INPUT_NAME
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == renamed_from:
                node.input[k] = replacement
    rh, rw = spec.resize_hw
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, 3, rh, rw])
    new_input.type.tensor_type.shape.dim[0].CopyFrom(batch_dim)
    graph.input.remove(old)
    graph.input.insert(0, new_input)
    for node in reversed(prefix):
        graph.node.insert(0, node)
    return model


def pixel_metadata(meta: ArtifactMetadata, source: Path) -> ArtifactMetadata:
    """The rewritten graph's metadata: float RGB pixels at the resize size (mean 0, std 1/255 is
    x -> x, so our own runtime feeds it correctly too); the anomaly map still covers the crop."""
    new = copy.deepcopy(meta)
    rh, rw = meta.input.resize_hw
    new.input.dtype, new.input.layout, new.input.color = "float", "NCHW", "RGB"
    new.input.mean, new.input.std = (0.0, 0.0, 0.0), (1 / 255.0,) * 3
    new.input.height, new.input.width, new.input.resize, new.input.crop = rh, rw, None, None
    new.export = {**meta.export, "deepstream": {"source": source.name, "pixels": "RGB 0..255 NCHW, resize size",
                                                 "model_input": vars(meta.input) | {"mean": list(meta.input.mean),
                                                                                    "std": list(meta.input.std)}}}
    return new


def nvinfer_config(meta: ArtifactMetadata, outputs: list[str], opts: DeepStreamOptions) -> str:
    rh, rw = meta.input.resize_hw
    engine = f"{GRAPH_FILE}_b{opts.sources}_gpu{opts.gpu}_{opts.precision}.engine"
    lines = [
        "# nvinfer for a dualkd-edge model (written by `dualkd-edge deepstream`).",
        "# Pixels go in as nvinfer scales them (RGB 0..255, net-scale-factor 1, offsets 0);",
        "# the graph normalises (and crops, for cropping presets) itself, as the host does.",
        "[property]",
        f"gpu-id={opts.gpu}",
        f"onnx-file={GRAPH_FILE}",
        "# built by nvinfer on first start, reused afterwards (tied to this GPU and TensorRT)",
        f"model-engine-file={engine}",
        f"batch-size={opts.sources}",
        "# 0 FP32, 1 INT8 (Q/DQ graphs), 2 FP16",
        f"network-mode={NETWORK_MODES[opts.precision]}",
        "# 100: no parser, the output tensors are attached to each frame (output-tensor-meta)",
        "network-type=100",
        "output-tensor-meta=1",
        "process-mode=1",
        "# 0 RGB",
        "model-color-format=0",
        "net-scale-factor=1.0",
        "offsets=0;0;0",
        f"infer-dims=3;{rh};{rw}",
        "# the whole frame, scaled bilinearly (as our presets resize it; no letterbox)",
        "maintain-aspect-ratio=0",
        "scaling-filter=1",
        f"output-blob-names={';'.join(outputs)}",
        "gie-unique-id=1",
        "interval=0",
    ]
    return "\n".join(lines) + "\n"


def app_config(opts: DeepStreamOptions) -> str:
    """deepstream-app: N RTSP cameras batched into nvinfer; measures throughput (the decisions are
    made by dualkd_probe.py, which deepstream-app cannot load)."""
    parts = ["# deepstream-app -c deepstream_app_config.txt   (replace the rtsp:// addresses)",
             "[application]", "enable-perf-measurement=1", "perf-measurement-interval-sec=5", "",
             "[tiled-display]", "enable=0", ""]
    for i in range(opts.sources):
        parts += [f"[source{i}]", "enable=1", "# 4: RTSP", "type=4", f"uri=rtsp://CAMERA-{i}/stream",
                  "num-sources=1", f"gpu-id={opts.gpu}", "# 4: RTP over TCP", "select-rtp-protocol=4",
                  "latency=200", ""]
    parts += ["[streammux]", f"gpu-id={opts.gpu}", "live-source=1", f"batch-size={opts.sources}",
              "# microseconds a batch waits for the other cameras (one frame at 30 FPS)",
              "batched-push-timeout=33000", f"width={opts.width}", f"height={opts.height}", "enable-padding=0", "",
              "[primary-gie]", "enable=1", f"gpu-id={opts.gpu}", f"batch-size={opts.sources}", "gie-unique-id=1",
              f"config-file={NVINFER_FILE}", "",
              "[sink0]", "enable=1", "# 1: fakesink", "type=1", "sync=0", "", "[osd]", "enable=0", ""]
    return "\n".join(parts)


def write_deepstream(model_path: Path, out: Path, opts: DeepStreamOptions) -> list[Path]:
    import onnx

    from dualkd_edge.artifacts.onnx_files import load_onnx_model, onnx_metadata, save_onnx_atomic, set_onnx_metadata

    opts.validate()
    model_path = Path(model_path)
    if kind_of(model_path) is not ONNX:
        raise UserError(f"MODEL: {model_path}: DeepStream builds its engine from ONNX; give the .onnx export "
                        "(nvinfer writes the engine itself)")
    model = load_onnx_model(model_path, load_weights=True)
    meta = onnx_metadata(model, model_path)
    batch = static_batch_of(model)
    if batch is not None and batch != opts.sources:
        raise UserError(f"MODEL: static batch {batch}, but --sources {opts.sources}: nvinfer runs batch-size = "
                        "the number of cameras; export with --batch dynamic")
    if opts.precision == "int8" and not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise UserError("--precision int8: needs a Q/DQ graph from `dualkd-edge quantize --target tensorrt`")
    outputs = [o.name for o in model.graph.output]
    pixel_input_graph(model, meta)
    ds_meta = pixel_metadata(meta, model_path)
    set_onnx_metadata(model, ds_meta)
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    save_onnx_atomic(model, out / GRAPH_FILE)
    write_bytes_atomic(out / NVINFER_FILE, nvinfer_config(meta, outputs, opts).encode())
    write_bytes_atomic(out / APP_FILE, app_config(opts).encode())
    write_bytes_atomic(out / PROBE_FILE, (Path(__file__).parent / "deepstream_probe.py").read_bytes())
    c = meta.calibration
    write_json_atomic(out / META_FILE, {
        "threshold": meta.threshold, "outputs": outputs,
        "calibration": {"local": vars(c.local), "semantic": vars(c.semantic), "beta": c.beta},
        "model_input": {"height": meta.input.height, "width": meta.input.width},
        "sources": opts.sources, "nvinfer_config": NVINFER_FILE, "tool_version": meta.tool_version})
    return [out / f for f in (GRAPH_FILE, NVINFER_FILE, APP_FILE, PROBE_FILE, META_FILE)]
