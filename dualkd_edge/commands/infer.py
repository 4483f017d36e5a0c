"""`dualkd-edge infer`: run a stream, stop cleanly on Ctrl-C / SIGTERM, print and write its summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from dualkd_edge.commands.options import (
    Choice,
    CudaGraph,
    Decoder,
    Device,
    EngineOnnx,
    FloatOption,
    Providers,
    Threads,
    load_options,
    value,
)
from dualkd_edge.commands.signals import reload_on_sighup, stop_on_signals
from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")


class SaveImages(Choice):
    """`--save-images`: which frames go to --out/images (stream/outputs/sinks.py)."""

    ANOMALIES = "anomalies"
    ALL = "all"
    NONE = "none"


# infer's options about decisions, review, line outputs, secrets and TLS, declared here so that the
# signature stays readable (docs/commissioning.md, docs/review.md, docs/security.md).
Calibration = Annotated[Optional[str], typer.Option(
    "--calibration", help="NAME of a calibration stored in the model (`dualkd-edge info MODEL` lists them; default: "
    "the last one made, then 'training'); a sources list may give `calibration=NAME SOURCE` per line")]
Watch = Annotated[bool, typer.Option(
    "--watch/--no-watch", help="take a model or calibration replaced on disk while running (also on SIGHUP), "
    "between two frames")]
Review = Annotated[Optional[Path], typer.Option(
    "--review", help="DIR: keep every NG frame and a sample of OK ones with their decision and heat map for the "
    "operator's answers (the dashboard's /review page, `dualkd-edge improve`)")]
ReviewOkRate = Annotated[float, FloatOption(
    "--review-ok-rate", help="with --review: the share of OK frames kept too (to find misses)")]
DefectTypes = Annotated[Optional[str], typer.Option(
    "--defect-types", help="with --review: comma-separated defect types the review page offers, e.g. "
    "scratch,dent,missing")]
HttpTokenFile = Annotated[Optional[Path], typer.Option(
    "--http-token-file", help="lines TOKEN or NAME:TOKEN: the dashboard asks for one on every route but /healthz "
    "(required beyond loopback: without this file a token is made and printed once)")]
MqttPasswordFile = Annotated[Optional[Path], typer.Option(
    "--mqtt-password-file", help="the MQTT password (for the user in --mqtt), kept off the command line; or "
    "$DUALKD_MQTT_PASSWORD")]
MqttCafile = Annotated[Optional[Path], typer.Option(
    "--mqtt-cafile", help="mqtts://: CA certificate(s) to verify the broker with (default: the system's)")]
MqttCert = Annotated[Optional[Path], typer.Option("--mqtt-cert", help="mqtts://: client certificate (with --mqtt-key)")]
MqttKey = Annotated[Optional[Path], typer.Option("--mqtt-key", help="mqtts://: the client certificate's private key")]
WebhookFile = Annotated[Optional[Path], typer.Option(
    "--webhook-file", help="a file holding the --webhook URL (with its credentials or signed query), kept off the "
    "command line; or $DUALKD_WEBHOOK")]
Triton = Annotated[Optional[str], typer.Option(
    "--triton", help="HOST:PORT/NAME: inference by a Triton server (gRPC port) serving a repository from "
    "`dualkd-edge triton`, instead of a local MODEL")]
TritonCafile = Annotated[Optional[Path], typer.Option(
    "--triton-cafile", help="with --triton: gRPC over TLS, the server verified against this CA certificate (PEM)")]


def command(
    model: str = typer.Argument(..., help="run directory, .onnx file or TensorRT engine (left out with --triton)"),
    source: Optional[str] = typer.Argument(None, help="image, folder, glob, video file, webcam index, rtsp:// or http(s):// URL, GStreamer pipeline, or a .txt list of sources"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for overlays, videos and summary.json"),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="one JSON line per frame, flushed as it goes"),
    save_video: bool = typer.Option(False, "--save-video", help="write overlay videos (one per source) to --out/video"),
    save_images: SaveImages = typer.Option("none", "--save-images", help="anomalies | all | none (to --out/images)"),
    save_masks: bool = typer.Option(False, "--save-masks", help="binary defect masks (PNG 0/255, frame size) beside the saved images"),
    show: bool = typer.Option(False, "--show", help="show overlays in a window (needs an OpenCV GUI build)"),
    threshold: Optional[float] = FloatOption(None, "--threshold", help="decision threshold (default: the calibration's)"),
    calibration: Calibration = None,
    review: Review = None,
    review_ok_rate: ReviewOkRate = 0.02,
    defect_types: DefectTypes = None,
    watch: Watch = True,
    batch: int = typer.Option(1, "--batch", help="frames per inference call: the newest frame of up to N live sources "
                              "(a dynamic-batch model), or the next frames of files"),
    batch_timeout_ms: float = FloatOption(33.0, "--batch-timeout-ms", help="with --batch: how long a batch waits for "
                                          "the other sources after its first frame (stalled sources are not waited for)"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="stop after this many frames"),
    fps_limit: Optional[float] = FloatOption(None, "--fps-limit", help="process at most this many frames per second"),
    retries: int = typer.Option(5, "--retries", help="reconnection attempts for a lost live stream"),
    read_timeout: float = FloatOption(5.0, "--read-timeout", help="seconds without a frame after which a network "
                                       "stream (FFmpeg: RTSP, HTTP) counts as lost and is reopened"),
    decoder: Decoder = typer.Option("opencv", "--decoder", help="rtsp:// URLs: opencv (FFmpeg) | gstreamer (nvv4l2decoder on a Jetson, else avdec_h264); pipelines always run in GStreamer"),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="mqtt\\[s]://\\[user:pw@]HOST\\[:PORT]/TOPIC: one JSON message per decision (QoS 1), retained TOPIC/status"),
    mqtt_only_ng: bool = typer.Option(False, "--mqtt-only-ng", help="publish NG decisions only"),
    modbus: Optional[str] = typer.Option(None, "--modbus", help="HOST:PORT\\[/UNIT]: write each decision to a PLC (coil 0 = NG, registers 0-2 = score x 1000, counter, source)"),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="URL: POST each NG decision as JSON, retried with backoff"),
    http: Optional[str] = typer.Option(None, "--http", help="\\[HOST:]PORT: operator dashboard, /metrics (Prometheus), /healthz, /api/summary (default host 127.0.0.1)"),
    http_token_file: HttpTokenFile = None,
    mqtt_password_file: MqttPasswordFile = None,
    mqtt_cafile: MqttCafile = None,
    mqtt_cert: MqttCert = None,
    mqtt_key: MqttKey = None,
    webhook_file: WebhookFile = None,
    providers: Providers = None,
    threads: Threads = None,
    device: Device = "auto",
    onnx: EngineOnnx = None,
    cuda_graph: CudaGraph = False,
    triton: Triton = None,
    triton_cafile: TritonCafile = None,
) -> None:
    """Run the model on cameras, streams, videos or folders: JSONL, overlays, per-stage latency; decisions
    to the line (MQTT, Modbus TCP, webhook) and a live dashboard."""
    raise typer.Exit(run(InferRequest(**locals())))  # one field per option, by the same name


@dataclass
class InferRequest:
    """`dualkd-edge infer` as the user asked for it: one field per option of `command`, same names."""

    model: str
    source: str | None
    out: Path | None
    jsonl: Path | None
    save_video: bool
    save_images: str
    save_masks: bool
    show: bool
    threshold: float | None
    calibration: str | None
    review: Path | None
    review_ok_rate: float
    defect_types: str | None  # comma-separated
    watch: bool
    batch: int
    batch_timeout_ms: float
    max_frames: int | None
    fps_limit: float | None
    retries: int
    read_timeout: float
    decoder: str
    mqtt: str | None
    mqtt_only_ng: bool
    modbus: str | None
    webhook: str | None
    http: str | None
    http_token_file: Path | None
    mqtt_password_file: Path | None
    mqtt_cafile: Path | None
    mqtt_cert: Path | None
    mqtt_key: Path | None
    webhook_file: Path | None
    providers: list[str] | None
    threads: int | None
    device: str
    onnx: Path | None
    cuda_graph: bool
    triton: str | None
    triton_cafile: Path | None

    def stream_options(self):
        """stream.pipeline.StreamOptions: what is read, scored and written where."""
        from dualkd_edge.stream.capture.threads import RetryPolicy
        from dualkd_edge.stream.pipeline import StreamOptions

        return StreamOptions(
            out=self.out, jsonl=self.jsonl, save_video=self.save_video, save_images=value(self.save_images),
            save_masks=self.save_masks, show=self.show, batch=self.batch, batch_timeout_ms=self.batch_timeout_ms,
            max_frames=self.max_frames, fps_limit=self.fps_limit,
            retry=RetryPolicy.from_options(self.retries, self.read_timeout), decoder=value(self.decoder),
            calibration=self.calibration, review=self.review, review_ok_rate=self.review_ok_rate,
            defect_types=tuple(t.strip() for t in (self.defect_types or "").split(",") if t.strip()))

    def line_options(self):
        """stream.outputs.line.LineOptions: the line-side outputs (MQTT, Modbus, webhook, dashboard)."""
        from dualkd_edge.stream.outputs.line import LineOptions

        return LineOptions(mqtt=self.mqtt, mqtt_only_ng=self.mqtt_only_ng, modbus=self.modbus, webhook=self.webhook,
                           http=self.http, http_token_file=self.http_token_file,
                           mqtt_password_file=self.mqtt_password_file, mqtt_cafile=self.mqtt_cafile,
                           mqtt_cert=self.mqtt_cert, mqtt_key=self.mqtt_key, webhook_file=self.webhook_file)

    def model_and_source(self):
        """`infer MODEL SOURCE`, or `infer --triton HOST:PORT/NAME SOURCE` (the model is on the server)."""
        if self.triton_cafile is not None and self.triton is None:
            raise UserError("--triton-cafile: needs --triton HOST:PORT/NAME")
        if self.triton is None:
            if self.source is None:
                raise UserError("SOURCE: missing; usage: dualkd-edge infer MODEL SOURCE (or --triton HOST:PORT/NAME "
                                "SOURCE)")
            return Path(self.model), self.source
        if self.source is not None:
            raise UserError(f"--triton: the model is on the server; pass only SOURCE, not {self.model!r} and "
                            f"{self.source!r}")
        from dualkd_edge.runtime.triton_backend import parse_endpoint

        endpoint = parse_endpoint(self.triton)
        return (replace(endpoint, cafile=str(self.triton_cafile)) if self.triton_cafile else endpoint), self.model


def run(req: InferRequest) -> int:
    opts, line = req.stream_options(), req.line_options()
    load = load_options(device=req.device, providers=req.providers, onnx=req.onnx, cuda_graph=req.cuda_graph,
                        threads=req.threads)
    model, source = req.model_and_source()
    return run_infer(model, source, opts, load, req.threshold, line, req.watch)


def source_files(specs) -> list[Path]:
    """The files a run reads (images, videos), which no output may overwrite."""
    return [f for s in specs for f in s.files] + [Path(s.target) for s in specs if s.kind == "video"]


def open_detector(model, load, threshold: float | None, calibration: str | None = None):
    """A local artifact, or a model on a Triton server (`model` is then a triton_backend.Endpoint)."""
    from dualkd_edge.detector import Detector

    if isinstance(model, Path):
        return Detector.load(model, threshold, load, calibration=calibration)
    from dualkd_edge.runtime.triton_backend import TritonBackend

    backend = TritonBackend(model)
    try:
        return Detector(backend, threshold, f"triton:{model}", calibration)
    except BaseException:
        backend.close()
        raise


def share_cores_with_file_outputs(det, load, opts, specs, model, reopen):
    """(detector, load options) for the run. Overlay images and video are painted and encoded on their
    own thread; without --threads, a run of files only (throughput first) gives that thread a core of
    its own when, measured on the first frame, painting and encoding cost more than the core would
    give the model (stream/outputs/core_share.py has the rule and the numbers). A live camera keeps every core for the
    model: each decision's latency is what counts there, and its pace leaves the outputs room."""
    from dualkd_edge.stream.outputs.core_share import (
        first_frame,
        leaves_a_core,
        model_ms_per_image,
        outputs_ms_per_frame,
        physical_cores,
        runs_on_cpu,
    )

    onnx_file = isinstance(model, Path) and model.suffix == ".onnx"  # threads are ONNX Runtime's only
    if not onnx_file or load.threads is not None or not opts.paints_files or any(s.live for s in specs):
        return det, load
    if not runs_on_cpu(det):
        return det, load  # on a GPU the model's CPU threads are not what sets its pace
    if (cores := physical_cores()) < 2 or (frame := first_frame(specs)) is None:
        return det, load
    model_ms = model_ms_per_image(det, frame, opts.batch)
    outputs_ms = outputs_ms_per_frame(det, frame, int(opts.save_video) + int(opts.save_images != "none"))
    if not leaves_a_core(model_ms, outputs_ms, cores):
        log.info("model: every CPU core (%.2f ms per image; the overlays' %.2f ms per frame share them)",
                 model_ms, outputs_ms)
        return det, load
    load = replace(load, threads=cores - 1)
    log.info("model: %d CPU thread(s), one core left for the overlays (%.2f ms per frame beside the model's "
             "%.2f ms per image; --threads to choose)", load.threads, outputs_ms, model_ms)
    det.close()
    return reopen(load), load


def open_for_run(model, load, threshold: float | None, opts, specs):
    """(detector, load options): the model opened with the CPU threads this run gives it."""
    det = open_detector(model, load, threshold, opts.calibration)
    try:
        return share_cores_with_file_outputs(det, load, opts, specs, model,
                                             lambda load: open_detector(model, load, threshold, opts.calibration))
    except BaseException:
        det.close()  # closing twice (after a failed reopen) is harmless
        raise


def run_infer(model, source: str, opts, load, threshold: float | None = None, line=None, watch: bool = True) -> int:
    """Exit code: 0; 1 when a source failed, was lost for good or gave nothing usable; 2 (an
    error) when an output failed: the run then stops, and says what it kept. `model`: a Path, or a
    Triton endpoint; `line`: LineOptions (MQTT, Modbus, webhook, dashboard)."""
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.output_paths import ResultNotWritten, check_outputs, write_result
    from dualkd_edge.stream.capture.sources import parse_source
    from dualkd_edge.stream.outputs.credentials import warn_source_credentials
    from dualkd_edge.stream.outputs.line import LineOptions

    line = line or LineOptions()
    opts.validate()
    line.resolve_secrets()
    line.validate()
    warn_source_credentials(source)
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError(f"--threshold: expected a probability in [0, 1], got {threshold}")
    specs = parse_source(source)
    folders, appends = opts.output_locations()
    inputs = {"SOURCE": [Path(s.target) for s in specs if s.kind == "images"] + source_files(specs)}
    if isinstance(model, Path):
        inputs["MODEL"] = model
    check_outputs(folders=folders, appends=appends, inputs=inputs)
    det, load = open_for_run(model, load, threshold, opts, specs)
    runner = None
    try:
        runner = start_runner(det, specs, opts, line)
        if isinstance(model, Path) and watch:  # hot swap (decision/hot_swap.py)
            runner.watch(lambda: open_detector(model, load, threshold, opts.calibration))
        with stop_on_signals(lambda _name: runner.request_stop()), \
                reload_on_sighup(runner.watcher.request_reload if runner.watcher else None):
            summary = runner.run()
        det = runner.det  # the model that decided last (a hot swap closed the one before)
        record = summary.to_dict()
        print(summary.format())
        if hasattr(det.backend, "server_report"):  # Triton: where the inference time went
            from dualkd_edge.runtime.triton_backend import format_server_report

            record["triton"] = det.backend.server_report()
            print(format_server_report(record["triton"]))
        review = next((s for s in runner.sinks if getattr(s, "store", None) is not None), None)
        if review is not None:
            record["review"] = review.stats.summary()
    finally:
        (runner.det if runner is not None else det).close()
    problems = list(summary.output_errors)
    if opts.out is not None:
        try:
            write_result(opts.out / "summary.json", json_bytes(record), "--out")
            print(f"summary written to {opts.out / 'summary.json'}")
        except ResultNotWritten as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))
    return 1 if summary.errors else 0


def start_runner(det, specs, opts, line):
    """The stream runner with the file sinks and the line-side ones (closed again if it cannot start)."""
    from dualkd_edge.stream.pipeline import StreamRunner
    from dualkd_edge.stream.outputs.sinks import new_run_id

    run_id = new_run_id()
    line_sinks = line.open_sinks(det.name, det.threshold)
    if opts.review is not None:
        from dualkd_edge.review.sink import ReviewSink

        line_sinks.append(ReviewSink(opts.review, run_id, det, opts.review_ok_rate, opts.defect_types))
    try:
        runner = StreamRunner(det, specs, opts, opts.sinks(run_id) + line_sinks, run_id=run_id)
    except BaseException:
        for sink in line_sinks:
            sink.close()
        raise
    for sink in line_sinks:
        if hasattr(sink, "bind"):  # the dashboard shows the capture threads' and the other sinks' counts
            sink.bind(runner)
    return runner
