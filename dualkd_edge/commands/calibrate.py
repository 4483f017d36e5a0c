"""`dualkd-edge calibrate`: commission a station on its own camera (decision/commissioning.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from dualkd_edge.commands.options import Decoder, Device, EngineOnnx, FloatOption, Providers, load_options, value
from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")

MIN_FRAMES = 20  # below this no spread, and no budget, can be estimated


def command(
    model: Path = typer.Argument(..., help="run directory, .onnx file or TensorRT engine to store the calibration in"),
    source: str = typer.Argument(..., help="the station's camera, stream, GStreamer pipeline, video or folder, "
                                 "showing good parts (a commissioning run)"),
    frames: int = typer.Option(300, "--frames", help="frames to read (a 1% budget needs about 300 for a stable threshold)"),
    max_fpr: float = FloatOption(0.01, "--max-fpr", help="false-alarm budget on good parts: the threshold keeps the "
                                 "rate below it with --confidence"),
    name: Optional[str] = typer.Option(None, "--name", help="STATION name of the calibration (default: from the source); "
                                       "the same name replaces it"),
    confidence: float = FloatOption(0.95, "--confidence", help="confidence of the false-alarm bound"),
    decoder: Decoder = typer.Option("opencv", "--decoder", help="rtsp:// URLs: opencv (FFmpeg) | gstreamer"),
    read_timeout: float = FloatOption(5.0, "--read-timeout", help="seconds without a frame before a stream counts as lost"),
    providers: Providers = None,
    device: Device = "auto",
    onnx: EngineOnnx = None,
) -> None:
    """Commission a station: score good parts from its own camera through infer's capture path, set aside
    outliers, store a named calibration (score statistics, heat-map range, threshold at a false-alarm budget)."""
    raise typer.Exit(run_calibrate(CalibrateRequest(
        model=model, source=source, frames=frames, max_fpr=max_fpr, name=name, confidence=confidence,
        decoder=value(decoder), read_timeout=read_timeout,
        load=load_options(device=device, providers=providers, onnx=onnx))))


@dataclass
class CalibrateRequest:
    model: Path
    source: str
    frames: int = 300
    max_fpr: float = 0.01
    name: str | None = None
    confidence: float = 0.95
    decoder: str = "opencv"
    read_timeout: float = 5.0
    load: object = None  # artifacts.LoadOptions

    def validate(self) -> None:
        from dualkd_edge.decision.calibrations import check_calibration_name

        if self.frames < MIN_FRAMES:
            raise UserError(f"--frames: at least {MIN_FRAMES} frames of good parts are needed, got {self.frames}")
        if not 0 < self.max_fpr < 1:
            raise UserError(f"--max-fpr: expected a false-alarm rate in (0, 1), e.g. 0.01, got {self.max_fpr}")
        if not 0.5 <= self.confidence < 1:
            raise UserError(f"--confidence: expected a level in [0.5, 1), e.g. 0.95, got {self.confidence}")
        if self.name is not None:
            check_calibration_name(self.name)


def default_name(spec) -> str:
    """A name from the source: the video's or folder's stem, the camera's index, the stream's path."""
    import re

    from dualkd_edge.decision.calibrations import check_calibration_name

    stem = Path(spec.target).stem if spec.kind in ("video", "images", "image") else spec.name.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64] or "station"
    try:
        return check_calibration_name(name)
    except UserError:
        return "station"


def run_calibrate(req: CalibrateRequest) -> int:
    from dualkd_edge.artifacts import LoadOptions, kind_of, metadata_file, update_metadata
    from dualkd_edge.commands.signals import stop_on_signals
    from dualkd_edge.decision.calibrations import store_calibration
    from dualkd_edge.decision.commissioning import CommissioningFrames, fit_station_calibration
    from dualkd_edge.detector import Detector
    from dualkd_edge.metadata import TRAINING_CALIBRATION
    from dualkd_edge.output_paths import check_outputs
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    req.validate()
    kind_of(req.model)
    specs = parse_source(req.source)
    if len(specs) != 1:
        raise UserError(f"SOURCE: a calibration is made on one camera or stream; {req.source} names {len(specs)} "
                        "(calibrate each with its own --name, then pick them per source in the list)")
    name = req.name or default_name(specs[0])
    check_outputs(files={"MODEL": metadata_file(req.model)})
    with Detector.load(req.model, options=req.load or LoadOptions(), calibration=TRAINING_CALIBRATION) as det:
        frames = CommissioningFrames(spec=det.meta.input)
        opts = StreamOptions(max_frames=req.frames, decoder=req.decoder,
                             retry=RetryPolicy.from_options(3, req.read_timeout))
        runner = StreamRunner(det, specs, opts, sinks=[frames])
        print(f"calibrating {req.model} on {specs[0].name}: reading {req.frames} frames of good parts")
        with stop_on_signals(lambda _name: runner.request_stop()):
            summary = runner.run()
        model_id = det.model_id
        beta = det.meta.calibration.beta
    if frames.count < MIN_FRAMES:
        raise UserError(f"SOURCE: only {frames.count} frame(s) could be read from {specs[0].name}; a calibration "
                        f"needs at least {MIN_FRAMES}" + (f" ({'; '.join(summary.errors)})" if summary.errors else ""))
    if frames.count < req.frames:
        log.warning("SOURCE %s gave %d of the %d frames asked for; calibrating on those", specs[0].name,
                    frames.count, req.frames)
    station = fit_station_calibration(frames, name, req.max_fpr, req.confidence, beta, specs[0].name, model_id)
    previous = update_metadata(req.model, lambda meta: store_calibration(meta, station.named, "calibrate"))
    print(describe_calibration(req.model, station, previous))
    return 0


def describe_calibration(model: Path, station, previous_default: str) -> str:
    n = station.named
    aside = station.set_aside
    lines = [f"calibration '{n.name}' stored in {model}: {n.frames} frames of {n.source}",
             f"  set aside as probably not good parts: {len(aside)}"
             + (f" (frames {', '.join(map(str, aside[:20]))}{' ...' if len(aside) > 20 else ''})" if aside else ""),
             f"  threshold {n.threshold:.6g} (score_logit {station.budget.threshold_logit:.4g}) at a false-alarm budget "
             f"of {n.max_fpr:g}",
             f"  {station.budget.describe()}",
             f"  it is now the default calibration of `dualkd-edge infer` (was '{previous_default}'); "
             f"a running infer on this model picks it up within seconds"]
    return "\n".join(lines)
