"""The `dualkd-edge` command line. Heavy imports live inside the commands so --help is instant."""

from __future__ import annotations

import logging
import math
import sys
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer

from dualkd_edge.errors import UserError

app = typer.Typer(
    name="dualkd-edge",
    help="Dual-student anomaly detection from training to NVIDIA Jetson: train, eval, export, "
    "quantize, build, infer, bench. Start with `dualkd-edge demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _finite(value: float | None) -> float | None:
    """nan and infinity pass float() but mean nothing as a time, a rate or a tolerance (and
    `bench --min-time nan` would never end): refuse them like any other bad number."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"expected a finite number, got {value}")
    return value


FloatOption = partial(typer.Option, callback=_finite)  # every float option of the CLI
Device = typer.Option("auto", "--device", help="auto | cpu | cuda (PyTorch run directories)")
EngineOnnx = typer.Option(None, "--onnx", help="for a TensorRT engine built outside dualkd-edge (trtexec): the ONNX file it "
                          "was built from; its metadata is used and the engine's sidecar written")
CudaGraph = typer.Option(False, "--cuda-graph", help="TensorRT engines with a static batch: replay the inference as "
                         "a CUDA graph (less launch overhead)")
Triton = typer.Option(None, "--triton", help="HOST:PORT/NAME: inference by a Triton server (gRPC port) serving a "
                      "repository from `dualkd-edge triton`, instead of a local MODEL")



# Options of `infer` declared once here (decisions, review, secrets and TLS: docs/commissioning.md, docs/review.md,
# docs/security.md), so the command's signature stays readable.
CalibrationOpt = typer.Option(None, "--calibration", help="NAME of a calibration stored in the model "
                                              "(`dualkd-edge info MODEL` lists them; default: the last one made, then "
                                              "'training'); a sources list may give `calibration=NAME SOURCE` per line")
WatchOpt = typer.Option(True, "--watch/--no-watch", help="take a model or calibration replaced on disk while "
                               "running (also on SIGHUP), between two frames")
ReviewOpt = typer.Option(None, "--review", help="DIR: keep every NG frame and a sample of OK ones with "
                                          "their decision and heat map for the operator's answers (the dashboard's "
                                          "/review page, `dualkd-edge improve`)")
ReviewOkRateOpt = FloatOption(0.02, "--review-ok-rate", help="with --review: the share of OK frames kept too "
                                        "(to find misses)")
DefectTypesOpt = typer.Option(None, "--defect-types", help="with --review: comma-separated defect types "
                                               "the review page offers, e.g. scratch,dent,missing")
HttpTokenFileOpt = typer.Option(None, "--http-token-file", help="lines TOKEN or NAME:TOKEN: the dashboard "
                                                   "asks for one on every route but /healthz (required beyond loopback: "
                                                   "without this file a token is made and printed once)")
MqttPasswordFileOpt = typer.Option(None, "--mqtt-password-file", help="the MQTT password (for the user "
                                                      "in --mqtt), kept off the command line; or $DUALKD_MQTT_PASSWORD")
MqttCafileOpt = typer.Option(None, "--mqtt-cafile", help="mqtts://: CA certificate(s) to verify the broker "
                                               "with (default: the system's)")
MqttCertOpt = typer.Option(None, "--mqtt-cert", help="mqtts://: client certificate (with --mqtt-key)")
MqttKeyOpt = typer.Option(None, "--mqtt-key", help="mqtts://: the client certificate's private key")
WebhookFileOpt = typer.Option(None, "--webhook-file", help="a file holding the --webhook URL (with its "
                                                "credentials or signed query), kept off the command line; or $DUALKD_WEBHOOK")
TritonCafileOpt = typer.Option(None, "--triton-cafile", help="with --triton: gRPC over TLS, the server "
                                                 "verified against this CA certificate (PEM)")


def _line_options(mqtt, mqtt_only_ng, modbus, webhook, http, http_token_file, mqtt_password_file, mqtt_tls,
                  webhook_file):
    """infer's line-side options (stream/line_outputs.py); `mqtt_tls`: (CA file, certificate, key)."""
    from dualkd_edge.stream.outputs.line import LineOptions

    cafile, cert, key = mqtt_tls
    return LineOptions(mqtt=mqtt, mqtt_only_ng=mqtt_only_ng, modbus=modbus, webhook=webhook, http=http,
                       http_token_file=http_token_file, mqtt_password_file=mqtt_password_file, mqtt_cafile=cafile,
                       mqtt_cert=cert, mqtt_key=key, webhook_file=webhook_file)


def model_and_source(model: str, source: str | None, triton: str | None, triton_cafile: Path | None = None):
    """`infer MODEL SOURCE`, or `infer --triton HOST:PORT/NAME SOURCE` (the model is on the server)."""
    if triton_cafile is not None and triton is None:
        raise UserError("--triton-cafile: needs --triton HOST:PORT/NAME")
    if triton is None:
        if source is None:
            raise UserError("SOURCE: missing; usage: dualkd-edge infer MODEL SOURCE (or --triton HOST:PORT/NAME SOURCE)")
        return Path(model), source
    if source is not None:
        raise UserError(f"--triton: the model is on the server; pass only SOURCE, not {model!r} and {source!r}")
    from dataclasses import replace

    from dualkd_edge.runtime.triton_backend import parse_endpoint

    endpoint = parse_endpoint(triton)
    return (replace(endpoint, cafile=str(triton_cafile)) if triton_cafile else endpoint), model


@app.command()
def presets() -> None:
    """List the model presets: input geometry, default training steps, parameter counts and GMACs."""
    from dualkd_edge.commands.presets_cmd import run

    print(run())


@app.command()
def train(
    data: List[Path] = typer.Argument(..., help="MVTec-AD style root(s), category folder(s) or plain folders of good images; several make one multi-class model"),
    out: Path = typer.Option(..., "--out", help="run directory to write"),
    preset: str = typer.Option("tiny", "--preset", help="tiny | edge-s224 | paper-b392 (see `dualkd-edge presets`)"),
    weights: Optional[str] = typer.Option(None, "--weights", help="teacher weights: none | hub | PATH (.pth / .safetensors, official DINOv2 or timm keys); default: the preset's"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (default: the preset's, see `dualkd-edge presets`)"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = FloatOption(2e-3, "--lr", help="peak learning rate of the Encoder-Decoder student (warm-up, then cosine to 10%)"),
    ee_lr: float = FloatOption(5e-4, "--ee-lr", help="peak learning rate of the class-token student"),
    semantic_centring: Optional[bool] = typer.Option(None, "--semantic-centring/--no-semantic-centring", help="centre the teacher's class token (default: the preset's; the paper regresses the plain token)"),
    device: str = Device,
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out up to --steps"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="steps between checkpoints"),
    max_time: Optional[float] = FloatOption(None, "--max-time", help="stop after about this many seconds (the schedule is fitted to it)"),
    holdout: float = FloatOption(0.1, "--holdout", help="share of good images held out for calibration"),
    tau_local: float = FloatOption(1.0, "--tau-local", help="Noisy-OR temperature of the local branch"),
    tau_semantic: float = FloatOption(1.0, "--tau-semantic", help="Noisy-OR temperature of the semantic branch"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel processes (DistributedDataParallel): one per GPU "
                              "(NCCL), or CPU processes (gloo); the --batch-size images of a step are split over them"),
) -> None:
    """Train the dual-student model (frozen DINOv2 teacher, Noisy-OR objective) and calibrate it."""
    from dualkd_edge.commands.train_cmd import run
    from dualkd_edge.train.loop import TrainConfig

    raise typer.Exit(run(TrainConfig(data=list(data), out=out, preset=preset, weights=weights, steps=steps, batch_size=batch_size,
                    lr=lr, ee_lr=ee_lr, semantic_centring=semantic_centring, device=device, seed=seed, resume=resume,
                    checkpoint_every=checkpoint_every, max_time=max_time, holdout_fraction=holdout,
                    tau_local=tau_local, tau_semantic=tau_semantic, nproc=nproc)))


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="folder for the generated data and everything made from it"),
    max_time: float = FloatOption(120.0, "--max-time", help="training time budget in seconds"),
    steps: int = typer.Option(600, "--steps", help="training steps (fewer if --max-time runs out first)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Generate a multi-class dataset, train the tiny preset and report image AUROC (CPU, minutes)."""
    from dualkd_edge.commands.demo_cmd import run

    run(out, max_time, steps, seed)


@app.command(name="eval")
def eval_(
    paths: List[Path] = typer.Argument(..., help="MODEL [MODEL ...] DATA: run directories / .onnx / .engine files, then the dataset"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="write the table as Markdown"),
    per_image: Optional[Path] = typer.Option(None, "--per-image", help="write per-image scores as CSV"),
    tune_threshold: bool = typer.Option(False, "--tune-threshold", help="store a threshold in the model: at a false-alarm "
                                        "budget on the good test images (--max-fpr), or F1-optimal with --f1-max"),
    max_fpr: float = FloatOption(0.01, "--max-fpr", help="with --tune-threshold: the false-alarm budget on good parts"),
    f1_max: bool = typer.Option(False, "--f1-max", help="with --tune-threshold: the F1-optimal threshold instead (needs "
                                "labelled defects; tuned on the defects you have, not on the ones you will meet)"),
    save_overlays: Optional[Path] = typer.Option(None, "--save-overlays", help="folder for heat-map overlays of the worst cases"),
    worst: int = typer.Option(5, "--worst", help="how many worst false negatives / false positives to save"),
    save_masks: bool = typer.Option(False, "--save-masks", help="with --save-overlays: binary defect masks (PNG 0/255) beside them"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG with ROC curves per category and score histograms with the threshold (matplotlib)"),
    normal_classes: Optional[str] = typer.Option(None, "--normal-classes", help="class-folder layout: comma-separated normal classes; all others are anomalies"),
    batch_size: int = typer.Option(8, "--batch-size"),
    device: str = Device,
    onnx: Optional[Path] = EngineOnnx,
) -> None:
    """Image AUROC / AP / F1-max and pixel AUROC / AUPRO per category, several models side by side."""
    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.commands.eval_cmd import EvalRequest, run

    run(EvalRequest(models=list(paths[:-1]), data=[paths[-1]], json_out=json_out, markdown_out=markdown,
                    per_image=per_image, tune=tune_threshold, max_fpr=max_fpr, f1_max=f1_max, overlays=save_overlays, worst=worst,
                    save_masks=save_masks, normal_classes=normal_classes, batch_size=batch_size, plot=plot,
                    load=LoadOptions(device=device, onnx=onnx)))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="training run directory"),
    out: Path = typer.Option(..., "--out", help="ONNX file to write"),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="input size (must be the trained size)"),
    batch: str = typer.Option("1", "--batch", help="static batch N, or 'dynamic'"),
    input_dtype: str = typer.Option("float", "--input", help="float: NCHW normalised RGB | uint8: NHWC BGR camera frames, scaled inside the graph"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset 17..20"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 (mixed: norms, softmax and scoring stay FP32)"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip the ONNX Runtime vs PyTorch parity check"),
) -> None:
    """Export teacher + both students + Noisy-OR scoring as ONE ONNX graph, verified against PyTorch."""
    from dualkd_edge.commands.export_cmd import run_export
    from dualkd_edge.trace.onnx_export import ExportOptions

    run_export(run_dir, out, ExportOptions(img_size, batch, input_dtype, opset, precision, not no_verify))


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="FP32 ONNX file from `dualkd-edge export`"),
    calib: Path = typer.Option(Path("calib_data"), "--calib", help="folder of normal calibration images"),
    out: Path = typer.Option(..., "--out", help="INT8 (Q/DQ) ONNX file to write"),
    method: str = typer.Option("minmax", "--method", help="minmax | percentile | entropy (KL over 2048-bin histograms, "
                               "minutes) | auto (with --val: the gate picks between minmax and percentile)"),
    samples: int = typer.Option(256, "--samples", help="calibration images to use"),
    target: str = typer.Option("tensorrt", "--target", help="tensorrt: symmetric INT8, FP16 in between (TensorRT) | "
                               "cpu: UINT8 activations, FP32 in between (ONNX Runtime CPU fast path)"),
    val: Optional[Path] = typer.Option(None, "--val", help="labelled data (MVTec layout) for the accuracy gate and "
                                       "the mixed-precision search"),
    max_drop: float = FloatOption(0.5, "--max-drop", help="largest allowed AUROC drop in points (image and pixel)"),
    max_disagree: Optional[float] = FloatOption(None, "--max-disagree", help="largest share of images whose OK/NG "
                                                 "decision may change (default 0.03)"),
    keep_float: Optional[str] = typer.Option(None, "--keep-float", help="auto (default with --val: return the most "
                                             "sensitive layer groups to float until the gate passes) | none | "
                                             "group names, e.g. teacher.blocks.0,ee_student"),
    smooth: Optional[float] = FloatOption(None, "--smooth", help="SmoothQuant alpha (e.g. 0.5): move activation "
                                           "outliers into the weights, folded into the LayerNorms"),
    high_precision: Optional[str] = typer.Option(None, "--high-precision", help="what the unquantized layers run in: "
                                                 "fp16 (default for --target tensorrt) | fp32 (default for cpu)"),
) -> None:
    """Static INT8 (Q/DQ, per-channel) with accuracy-driven mixed precision and a gate against FP32."""
    from dualkd_edge.commands.export_cmd import QuantizeRequest, run_quantize

    if method not in ("minmax", "percentile", "entropy", "auto"):
        raise UserError(f"--method: expected minmax, percentile, entropy or auto, got {method!r}")
    raise typer.Exit(run_quantize(QuantizeRequest(model, calib, out, method, samples, target, high_precision, val,
                                                  max_drop, max_disagree, keep_float, smooth)))


@app.command(name="calib-sample")
def calib_sample(
    data: List[Path] = typer.Argument(..., help="dataset root(s): normal training images are sampled"),
    n: int = typer.Option(256, "--n", help="how many images to copy"),
    out: Path = typer.Option(Path("calib_data"), "--out", help="folder to copy them into"),
) -> None:
    """Copy a spread sample (every category, the whole brightness range) of normal images for INT8 calibration."""
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set

    files = sample_calibration_set(list(data), n, out)
    print(f"copied {len(files)} calibration images to {out}")


@app.command()
def build(
    model: Path = typer.Argument(..., help="ONNX file from `dualkd-edge export` or `quantize`"),
    out: Path = typer.Option(..., "--out", help="engine file to write (.engine / .plan); a .json sidecar goes beside it"),
    precision: str = typer.Option("fp16", "--precision", help="fp32 | fp16 | int8 | best"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="calibration images for INT8 (when the model has no Q/DQ)"),
    batch: Optional[str] = typer.Option(None, "--batch", help="MIN:OPT:MAX batch profile for dynamic-batch models"),
    workspace: float = FloatOption(4.0, "--workspace", help="builder workspace limit in GiB"),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="timing cache file, read and updated"),
    dla: Optional[int] = typer.Option(None, "--dla", help="DLA core (Jetson Orin/Xavier), with GPU fallback"),
    opt_level: int = typer.Option(3, "--opt-level", help="builder optimization level 0..5"),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="INT8 calibration cache to read/write "
                                               "(default: beside the engine, named after the model's content)"),
    no_check: bool = typer.Option(False, "--no-check", help="skip the offline TensorRT rules (`dualkd-edge check`)"),
    cuda_graph: bool = CudaGraph,
    print_trtexec: bool = typer.Option(False, "--print-trtexec", help="print the equivalent trtexec command"),
) -> None:
    """Build a TensorRT engine (strongly typed; implicit INT8 calibration only before TensorRT 10.12),
    then compare it with its ONNX on real images before it replaces --out."""
    from dualkd_edge.commands.build_cmd import run_build
    from dualkd_edge.compile.tensorrt.plan import BuildOptions

    raise typer.Exit(run_build(model, out, BuildOptions(precision, calib, batch, workspace, timing_cache, dla, opt_level,
                                                        calib_cache, not no_check, cuda_graph), print_trtexec))


@app.command()
def check(
    model: Path = typer.Argument(..., help="ONNX file to check"),
    tensorrt: str = typer.Option("all", "--tensorrt", help="10.3 | 10.13 | 11 | all, or a version like 10.3.0.30"),
    dla: bool = typer.Option(False, "--dla", help="also DLA's rules (static shapes, FP16/INT8, TensorRT <= 10.7)"),
) -> None:
    """TensorRT's ONNX-parser and builder rules, offline: one line per violation (exit 1), silence when clean."""
    from dualkd_edge.commands.check_cmd import run_check

    raise typer.Exit(run_check(model, tensorrt, dla))


@app.command()
def compare(
    models: List[Path] = typer.Argument(..., help="A B [C ...]: run directories, .onnx files or engines; each is "
                                        "compared with the first"),
    images: Path = typer.Option(..., "--images", help="folder of images; an MVTec-style dataset adds the AUROC of each"),
    atol: Optional[float] = FloatOption(None, "--atol", help="largest absolute difference of any output (default: "
                                         "by precision; INT8 is judged by decisions and AUROC only)"),
    max_disagree: Optional[float] = FloatOption(None, "--max-disagree", help="largest share of images whose OK/NG "
                                                 "decision may differ (default 0, INT8 0.03)"),
    max_auroc_drop: Optional[float] = FloatOption(None, "--max-auroc-drop", help="largest image AUROC drop in points "
                                                   "on labelled images (default 0.5)"),
    max_images: int = typer.Option(200, "--max-images", help="images to use at most (spread over the folder)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON"),
    providers: Optional[List[str]] = typer.Option(None, "--providers", help="ONNX Runtime providers: tensorrt, cuda, cpu"),
    device: str = Device,
    onnx: Optional[Path] = EngineOnnx,
    cuda_graph: bool = CudaGraph,
) -> None:
    """Polygraphy-style comparison of artifacts on real images: output differences, NaN/inf, score ranking,
    OK/NG agreement, AUROC; exit 1 past the tolerances."""
    from dualkd_edge.commands.compare_cmd import run_compare

    raise typer.Exit(run_compare(list(models), images, atol, max_disagree, max_auroc_drop, max_images, json_out,
                                 providers, device, onnx, cuda_graph))


@app.command()
def infer(
    model: str = typer.Argument(..., help="run directory, .onnx file or TensorRT engine (left out with --triton)"),
    source: Optional[str] = typer.Argument(None, help="image, folder, glob, video file, webcam index, rtsp:// or http(s):// URL, GStreamer pipeline, or a .txt list of sources"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for overlays, videos and summary.json"),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="one JSON line per frame, flushed as it goes"),
    save_video: bool = typer.Option(False, "--save-video", help="write overlay videos (one per source) to --out/video"),
    save_images: str = typer.Option("none", "--save-images", help="anomalies | all | none (to --out/images)"),
    save_masks: bool = typer.Option(False, "--save-masks", help="binary defect masks (PNG 0/255, frame size) beside the saved images"),
    show: bool = typer.Option(False, "--show", help="show overlays in a window (needs an OpenCV GUI build)"),
    threshold: Optional[float] = FloatOption(None, "--threshold", help="decision threshold (default: the calibration's)"),
    calibration: Optional[str] = CalibrationOpt,
    review: Optional[Path] = ReviewOpt,
    review_ok_rate: float = ReviewOkRateOpt,
    defect_types: Optional[str] = DefectTypesOpt,
    watch: bool = WatchOpt,
    batch: int = typer.Option(1, "--batch", help="frames per inference call: the newest frame of up to N live sources "
                              "(a dynamic-batch model), or the next frames of files"),
    batch_timeout_ms: float = FloatOption(33.0, "--batch-timeout-ms", help="with --batch: how long a batch waits for "
                                          "the other sources after its first frame (stalled sources are not waited for)"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="stop after this many frames"),
    fps_limit: Optional[float] = FloatOption(None, "--fps-limit", help="process at most this many frames per second"),
    retries: int = typer.Option(5, "--retries", help="reconnection attempts for a lost live stream"),
    read_timeout: float = FloatOption(5.0, "--read-timeout", help="seconds without a frame after which a network "
                                       "stream (FFmpeg: RTSP, HTTP) counts as lost and is reopened"),
    decoder: str = typer.Option("opencv", "--decoder", help="rtsp:// URLs: opencv (FFmpeg) | gstreamer (nvv4l2decoder on a Jetson, else avdec_h264); pipelines always run in GStreamer"),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="mqtt\\[s]://\\[user:pw@]HOST\\[:PORT]/TOPIC: one JSON message per decision (QoS 1), retained TOPIC/status"),
    mqtt_only_ng: bool = typer.Option(False, "--mqtt-only-ng", help="publish NG decisions only"),
    modbus: Optional[str] = typer.Option(None, "--modbus", help="HOST:PORT\\[/UNIT]: write each decision to a PLC (coil 0 = NG, registers 0-2 = score x 1000, counter, source)"),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="URL: POST each NG decision as JSON, retried with backoff"),
    http: Optional[str] = typer.Option(None, "--http", help="\\[HOST:]PORT: operator dashboard, /metrics (Prometheus), /healthz, /api/summary (default host 127.0.0.1)"),
    http_token_file: Optional[Path] = HttpTokenFileOpt,
    mqtt_password_file: Optional[Path] = MqttPasswordFileOpt,
    mqtt_cafile: Optional[Path] = MqttCafileOpt,
    mqtt_cert: Optional[Path] = MqttCertOpt,
    mqtt_key: Optional[Path] = MqttKeyOpt,
    webhook_file: Optional[Path] = WebhookFileOpt,
    providers: Optional[List[str]] = typer.Option(None, "--providers", help="ONNX Runtime providers: tensorrt, cuda, cpu"),
    device: str = Device,
    onnx: Optional[Path] = EngineOnnx,
    cuda_graph: bool = CudaGraph,
    triton: Optional[str] = Triton,
    triton_cafile: Optional[Path] = TritonCafileOpt,
) -> None:
    """Run the model on cameras, streams, videos or folders: JSONL, overlays, per-stage latency; decisions
    to the line (MQTT, Modbus TCP, webhook) and a live dashboard."""
    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.commands.infer_cmd import run_infer
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.pipeline import StreamOptions

    opts = StreamOptions(out=out, jsonl=jsonl, save_video=save_video, save_images=save_images, save_masks=save_masks,
                         show=show, batch=batch, batch_timeout_ms=batch_timeout_ms, max_frames=max_frames,
                         fps_limit=fps_limit, retry=RetryPolicy.from_options(retries, read_timeout), decoder=decoder,
                         calibration=calibration, review=review, review_ok_rate=review_ok_rate,
                         defect_types=tuple(t.strip() for t in (defect_types or "").split(",") if t.strip()))
    line = _line_options(mqtt, mqtt_only_ng, modbus, webhook, http, http_token_file, mqtt_password_file,
                         (mqtt_cafile, mqtt_cert, mqtt_key), webhook_file)
    load = LoadOptions(device=device, providers=providers, cuda_graph=cuda_graph, onnx=onnx)
    model_arg, source = model_and_source(model, source, triton, triton_cafile)
    raise typer.Exit(run_infer(model_arg, source, opts, load, threshold, line, watch))


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="run directory, .onnx file or TensorRT engine to store the calibration in"),
    source: str = typer.Argument(..., help="the station's camera, stream, GStreamer pipeline, video or folder, "
                                 "showing good parts (a commissioning run)"),
    frames: int = typer.Option(300, "--frames", help="frames to read (a 1% budget needs about 300 for a stable threshold)"),
    max_fpr: float = FloatOption(0.01, "--max-fpr", help="false-alarm budget on good parts: the threshold keeps the "
                                 "rate below it with --confidence"),
    name: Optional[str] = typer.Option(None, "--name", help="STATION name of the calibration (default: from the source); "
                                       "the same name replaces it"),
    confidence: float = FloatOption(0.95, "--confidence", help="confidence of the false-alarm bound"),
    decoder: str = typer.Option("opencv", "--decoder", help="rtsp:// URLs: opencv (FFmpeg) | gstreamer"),
    read_timeout: float = FloatOption(5.0, "--read-timeout", help="seconds without a frame before a stream counts as lost"),
    providers: Optional[List[str]] = typer.Option(None, "--providers", help="ONNX Runtime providers: tensorrt, cuda, cpu"),
    device: str = Device,
    onnx: Optional[Path] = EngineOnnx,
) -> None:
    """Commission a station: score good parts from its own camera through infer's capture path, set aside
    outliers, store a named calibration (score statistics, heat-map range, threshold at a false-alarm budget)."""
    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.commands.calibrate_cmd import CalibrateRequest, run_calibrate

    raise typer.Exit(run_calibrate(CalibrateRequest(model, source, frames, max_fpr, name, confidence, decoder, read_timeout,
                                                    LoadOptions(device=device, providers=providers, onnx=onnx))))


@app.command()
def improve(
    model: Path = typer.Argument(..., help="the model the review folder's frames came from (.onnx, run directory, engine)"),
    review: Path = typer.Option(..., "--review", help="DIR of `infer --review DIR`, with the operators' answers"),
    out: Path = typer.Option(..., "--out", help="NEW model, written only when it is not worse (else NEW.rejected)"),
    data: Optional[Path] = typer.Option(None, "--data", help="training data: also fine-tune the students on it plus "
                                        "the frames confirmed good (needs the run MODEL came from, and PyTorch)"),
    run: Optional[Path] = typer.Option(None, "--run", help="the run directory MODEL was exported from (default: the "
                                       "one its metadata names)"),
    test: Optional[Path] = typer.Option(None, "--test", help="the original test split to compare on (default: --data)"),
    steps: int = typer.Option(100, "--steps", help="fine-tuning steps"),
    max_fpr: Optional[float] = FloatOption(None, "--max-fpr", help="false-alarm budget of the new calibration "
                                           "(default: the base calibration's)"),
    tolerance: float = FloatOption(2.0, "--tolerance", help="points by which the new model may be worse on any "
                                   "measure (false alarms, catch rate, AUROC) and still be written"),
    name: Optional[str] = typer.Option(None, "--name", help="name of the new calibration (default: BASE-reviewed)"),
) -> None:
    """Learn from the operators' answers: recalibrate (and with --data fine-tune), compare old and new on
    held-out answers and the test split, write NEW only if it is not worse."""
    from dualkd_edge.review import improve as improving

    raise typer.Exit(improving.run(improving.ImproveRequest(model, review, out, data, run, test, steps, max_fpr,
                                                            tolerance, name)))


@app.command()
def info(
    model: Path = typer.Argument(..., help="run directory, .onnx file or TensorRT engine"),
    json_out: bool = typer.Option(False, "--json", help="print JSON: model_id, calibrations, history, ..."),
) -> None:
    """An artifact's identity (model_id), preset, input contract, calibrations, thresholds and history."""
    from dualkd_edge.commands.info_cmd import run_info

    raise typer.Exit(run_info(model, json_out))


@app.command()
def bench(
    models: Optional[List[Path]] = typer.Argument(None, help="run directories, .onnx files or engines, compared side by side"),
    batch: str = typer.Option("1", "--batch", help="comma-separated batch sizes, e.g. 1,4,8"),
    warmup: int = typer.Option(10, "--warmup", help="untimed iterations first"),
    iters: Optional[int] = typer.Option(None, "--iters", help="timed runs per model, at least (default 50); several models are timed in alternating rounds"),
    min_time: Optional[float] = FloatOption(None, "--min-time", help="time each model at least this many seconds instead"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (ONNX Runtime intra-op / PyTorch)"),
    providers: Optional[List[str]] = typer.Option(None, "--providers", help="ONNX Runtime providers: tensorrt, cuda, cpu"),
    source: Optional[str] = typer.Option(None, "--source", help="video or stream for end-to-end timing of the infer pipeline"),
    val: Optional[Path] = typer.Option(None, "--val", help="labelled data: adds the accuracy of each model"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    csv_out: Optional[Path] = typer.Option(None, "--csv"),
    markdown: Optional[Path] = typer.Option(None, "--markdown"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG with latency percentiles and throughput (matplotlib)"),
    onnx: Optional[Path] = EngineOnnx,
    cuda_graph: bool = CudaGraph,
    triton: Optional[List[str]] = typer.Option(None, "--triton", help="HOST:PORT/NAME of a model on a Triton server, "
                                               "timed like the local models (repeatable); the round trip is split into "
                                               "network, server queue and compute with the server's statistics"),
) -> None:
    """Latency and throughput per model and batch size, machine description, end-to-end ratio."""
    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.bench.runner import BenchOptions
    from dualkd_edge.commands.bench_cmd import BenchOutputs, parse_batches, run_bench

    opts = BenchOptions(batches=parse_batches(batch), warmup=warmup,
                        iters=iters if iters is not None or min_time is not None else 50, min_time=min_time,
                        source=source, val=val, triton=list(triton or []),
                        load=LoadOptions(providers=providers, threads=threads, onnx=onnx, cuda_graph=cuda_graph))
    run_bench(list(models or []), opts, BenchOutputs(json_out, csv_out, markdown, plot))


@app.command(name="triton")
def triton_repo(
    model: Path = typer.Argument(..., help=".onnx file (dynamic batch for batching) or TensorRT engine"),
    out: Path = typer.Option(..., "--out", help="model repository folder (REPO/NAME/config.pbtxt, REPO/NAME/1/...)"),
    name: str = typer.Option("dualkd", "--name", help="model name on the server"),
    max_batch: int = typer.Option(8, "--max-batch", help="max_batch_size: the most images the server batches into one call"),
    backend: str = typer.Option("auto", "--backend", help="auto (onnxruntime for .onnx, tensorrt for engines) | onnxruntime | "
                                "tensorrt | python (our runtime inside Triton: runs anywhere, incl. `dualkd-edge serve`)"),
    queue_delay_us: int = typer.Option(2000, "--queue-delay-us", help="dynamic batching: how long a request may wait for others"),
    instances: int = typer.Option(1, "--instances", help="model instances (instance_group count)"),
) -> None:
    """Write a Triton Inference Server model repository: tensors, dynamic batching, instances, our metadata."""
    from dualkd_edge.commands.serving_cmd import run_triton
    from dualkd_edge.serving.triton_repository import TritonRepoOptions

    run_triton(model, out, TritonRepoOptions(name, max_batch, backend, queue_delay_us, instances))


@app.command()
def serve(
    repo: Path = typer.Argument(..., help="model repository from `dualkd-edge triton --backend python`"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    http_port: int = typer.Option(8000, "--http-port"),
    grpc_port: int = typer.Option(8001, "--grpc-port"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Prometheus metrics (off by default)"),
) -> None:
    """Run Triton Inference Server from PyPI's wheel (`[serve]` extra, Python backend) until Ctrl-C."""
    from dualkd_edge.commands.serving_cmd import run_serve
    from dualkd_edge.serving.triton_server import ServeOptions

    raise typer.Exit(run_serve(repo, ServeOptions(host, http_port, grpc_port, metrics_port)))


@app.command()
def deepstream(
    model: Path = typer.Argument(..., help=".onnx export (dynamic batch, or a static batch equal to --sources)"),
    out: Path = typer.Option(..., "--out", help="folder for the graph, the nvinfer and deepstream-app configs and the probe"),
    sources: int = typer.Option(1, "--sources", help="cameras batched by nvstreammux into one inference call"),
    precision: str = typer.Option("fp16", "--precision", help="fp32 | fp16 | int8 (a Q/DQ graph from quantize --target tensorrt)"),
) -> None:
    """DeepStream on a Jetson: nvinfer config (tensor output), deepstream-app config for N RTSP cameras, a pyds probe."""
    from dualkd_edge.commands.serving_cmd import run_deepstream
    from dualkd_edge.serving.deepstream import DeepStreamOptions

    run_deepstream(model, out, DeepStreamOptions(sources=sources, precision=precision))


def _click_exceptions():
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _fail(message: str, code: int) -> None:
    """One `error:` line (credentials in URLs hidden), then exit with `code`."""
    from dualkd_edge.stream.capture.sources import redact

    print(f"error: {redact(' '.join(message.split()))}", file=sys.stderr)
    sys.exit(code)


def _usage_error(exc) -> str:
    """Click's usage error (bad number, missing argument, unknown option) as one line naming it."""
    where = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) is not None else ""
    return f"{exc.format_message()}{where}"


def _raise_terminated(signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
    from dualkd_edge.errors import Terminated

    raise Terminated()


def main() -> None:
    """Every failure ends as one line on stderr: `error: ...` and exit 2 for what the user gave us
    (arguments, files, output locations: any OSError lands here as a last line of defence),
    130 for Ctrl-C, 143 for SIGTERM (after the same clean-up as Ctrl-C)."""
    import signal

    from dualkd_edge.errors import Terminated
    from dualkd_edge.output_paths import describe_os_error

    # Our messages at INFO; third-party libraries (quantization tools, timm) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("dualkd_edge").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_terminated)
    click_errors = _click_exceptions()
    try:
        code = app(standalone_mode=False, prog_name="dualkd-edge")
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        if exc.name != "cv2":
            raise
        # Not a base dependency on aarch64 Linux, where a Jetson's OpenCV comes with JetPack (pyproject.toml).
        _fail("OpenCV (cv2) is not installed: on a Jetson use JetPack's (python3-opencv; a venv made with "
              "--system-site-packages sees it), elsewhere pip install 'dualkd-edge[opencv]'", 2)
    except OSError as exc:
        _fail(describe_os_error(exc), 2)
    except click_errors.NoArgsIsHelpError:
        sys.exit(2)  # the help was shown
    except click_errors.UsageError as exc:
        _fail(_usage_error(exc), 2)
    except click_errors.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        sys.exit(Terminated.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
