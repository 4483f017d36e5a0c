"""dualkd-edge on DeepStream: N cameras -> nvstreammux -> nvinfer (config_infer_dualkd.txt) ->
fakesink, with a probe on nvinfer's output that reads our output tensors per frame, applies the
threshold and calibration of dualkd_meta.json, and prints one JSON line per frame.

    python3 dualkd_probe.py rtsp://camera-1/stream rtsp://camera-2/stream ...

Needs DeepStream 6.3+/7.x with its Python bindings (pyds) and python3-gi, on a Jetson (JetPack) or
a dGPU machine; nothing else from dualkd-edge (this file and dualkd_meta.json are self-contained).
The decision logic (`decide`) is plain numpy: dualkd-edge's tests run it against its own runtime.
Written by `dualkd-edge deepstream`; the number of cameras must equal nvinfer's batch-size."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def decide(outputs: dict[str, np.ndarray], meta: dict) -> dict:
    """One frame's tensors -> its decision. The graph's `score` is the Noisy-OR probability
    already; the calibration gives each branch's own probability (which branch raised the alarm)
    and `score_logit` for exports made before that output existed."""
    cal = meta["calibration"]
    local = float(np.asarray(outputs["local_score"]).reshape(-1)[0])
    semantic = float(np.asarray(outputs["semantic_score"]).reshape(-1)[0])
    z_local = (local - cal["local"]["mu"]) / cal["local"]["sigma"] - cal["beta"]
    z_semantic = (semantic - cal["semantic"]["mu"]) / cal["semantic"]["sigma"] - cal["beta"]
    p_local, p_semantic = 1 / (1 + math.exp(-z_local)), 1 / (1 + math.exp(-z_semantic))
    score = float(np.asarray(outputs["score"]).reshape(-1)[0])
    logit = (float(np.asarray(outputs["score_logit"]).reshape(-1)[0]) if "score_logit" in outputs
             else _softplus(z_local) + _softplus(z_semantic))
    return {"score": score, "score_logit": logit, "p_local": p_local, "p_semantic": p_semantic,
            "local_score": local, "semantic_score": semantic, "is_anomaly": score >= meta["threshold"]}


def _layer_array(pyds, layer) -> np.ndarray:
    import ctypes

    dims = [layer.inferDims.d[i] for i in range(layer.inferDims.numDims)]
    ptr = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(ptr, shape=(int(np.prod(dims)),)).reshape(dims).copy()


def _probe(pad, info, meta):  # noqa: ANN001 - GStreamer's signature
    import pyds
    from gi.repository import Gst

    batch = pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))
    frames = batch.frame_meta_list
    while frames is not None:
        frame = pyds.NvDsFrameMeta.cast(frames.data)
        users = frame.frame_user_meta_list
        while users is not None:
            user = pyds.NvDsUserMeta.cast(users.data)
            if user.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
                tensors = pyds.NvDsInferTensorMeta.cast(user.user_meta_data)
                outputs = {}
                for i in range(tensors.num_output_layers):
                    layer = pyds.get_nvds_LayerInfo(tensors, i)
                    outputs[layer.layerName] = _layer_array(pyds, layer)
                record = decide(outputs, meta)
                record.update(source=frame.pad_index, frame=frame.frame_num, pts_ns=frame.buf_pts)
                print(json.dumps(record), flush=True)
            users = users.next
        frames = frames.next
    return Gst.PadProbeReturn.OK


def main(uris: list[str]) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import GLib, Gst

    meta = json.loads((HERE / "dualkd_meta.json").read_text())
    if len(uris) != meta["sources"]:
        print(f"error: nvinfer was configured for {meta['sources']} camera(s), got {len(uris)} "
              "(re-run `dualkd-edge deepstream --sources N`)", file=sys.stderr)
        return 2
    Gst.init(None)
    pipeline = Gst.Pipeline()
    mux = Gst.ElementFactory.make("nvstreammux", "mux")
    mux.set_property("batch-size", len(uris))
    mux.set_property("live-source", 1)
    mux.set_property("batched-push-timeout", 33000)  # one frame at 30 FPS: a dead camera never holds a batch
    mux.set_property("width", 1280)
    mux.set_property("height", 720)
    infer = Gst.ElementFactory.make("nvinfer", "infer")
    infer.set_property("config-file-path", str(HERE / meta["nvinfer_config"]))
    sink = Gst.ElementFactory.make("fakesink", "sink")
    sink.set_property("sync", 0)
    for element in (mux, infer, sink):
        pipeline.add(element)
    for i, uri in enumerate(uris):
        source = Gst.ElementFactory.make("nvurisrcbin", f"cam{i}")  # reconnects RTSP by itself
        source.set_property("uri", uri)
        source.set_property("rtsp-reconnect-interval", 10)
        pipeline.add(source)
        mux_pad = mux.request_pad_simple(f"sink_{i}")
        source.connect("pad-added", lambda _src, pad, target=mux_pad: pad.link(target))
    mux.link(infer)
    infer.link(sink)
    infer.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _probe, meta)
    loop = GLib.MainLoop()
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::eos", lambda *_: loop.quit())
    bus.connect("message::error", lambda _bus, msg: (print(f"error: {msg.parse_error()[0]}", file=sys.stderr),
                                                     loop.quit()))
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
