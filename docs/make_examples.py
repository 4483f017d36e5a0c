"""Redraw the example pictures of docs/pictures.md (docs/*.png) from a model trained here.

    python docs/make_examples.py [--work DIR]

Trains `tiny` (random-init teacher, 200 steps, as tests/conftest.py's `separating_run`) on generated
parts unless DIR/run exists, then draws an overlay of a good and of a scratched part, runs
`eval --plot` on the generated test split and `bench --plot` on the run, its ONNX export and an
INT8 (CPU) quantization. Minutes on 2 CPU cores; the bench timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2

DOCS = Path(__file__).resolve().parent


def shrink_png(path: Path) -> None:
    """A plot as a 256-colour palette PNG, about a third of the size and no visible change (Pillow
    comes with matplotlib). Overlays stay full colour: a palette would band their colour bar."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def colour_counts(det, painter) -> str:
    """What the scale shows on parts the model never saw (the cases of tests/test_overlay_model.py)."""
    from dualkd_edge.data.synth import PART_KINDS, render_part

    goods = det.predict([render_part(kind, 200_000 + i)[0] for i in range(20) for kind in PART_KINDS])
    red_goods = [p for p in goods if painter.red_pixels(p.anomaly_map).any()]
    outlined = sum(bool(painter.defect_mask(p.anomaly_map).any()) for p in goods)
    cases = [render_part(kind, 300_000 + i, defect=d) for kind in PART_KINDS for d in ("spot", "scratch", "missing")
             for i in range(4)]
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (33, 33))  # one 16-px patch around the defect
    red, inside = 0, True
    for (_, mask), p in zip(cases, det.predict([c[0] for c in cases])):
        r = painter.red_pixels(p.anomaly_map)
        red += bool(r.any())
        inside &= not r[cv2.dilate(mask, near) == 0].any()
    return (f"{len(goods)} unseen good parts: {len(red_goods)} with red pixels ({sum(p.is_anomaly for p in red_goods)} "
            f"of them scored NG), {outlined} with an outline; {len(cases)} painted defects: {red} with red pixels, "
            f"{'all' if inside else 'NOT all'} of them within one patch of the defect")


def main() -> None:
    from dualkd_edge.bench.runner import BenchOptions
    from dualkd_edge.compile.int8.calibration_images import sample_calibration_set
    from dualkd_edge.commands.bench import BenchOutputs, run_bench
    from dualkd_edge.commands.eval import EvalRequest
    from dualkd_edge.commands.eval import run as run_eval
    from dualkd_edge.compile.int8.quantize import quantize_int8
    from dualkd_edge.data.synth import generate_dataset, render_part
    from dualkd_edge.detector import Detector
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx
    from dualkd_edge.pictures.overlay import OverlayPainter
    from dualkd_edge.train.loop import TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dualkd-edge-docs",
                        help="folder for data and models (kept: a second run skips training)")
    work = parser.parse_args().work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # relative paths: the plots name the models as `run`, `m.onnx`, `m.int8.onnx`
    data, run = Path("data"), Path("run")
    if not (run / "run.json").exists():
        generate_dataset(data, n_train=60, n_test_good=12, n_test_defect=6, seed=3)
        train(TrainConfig(data=[data], out=run, steps=200, progress=False, seed=0))

    with Detector.load(run, device="cpu") as det:
        painter = OverlayPainter.for_model(det.meta, str(run), det.threshold)
        for name, (image, _) in (("overlay_good", render_part("washer", 200_001)),
                                 ("overlay_defect", render_part("washer", 300_000, defect="scratch"))):
            p = det.predict([image])[0]
            cv2.imwrite(str(DOCS / f"{name}.png"), painter.draw(image, p.anomaly_map, p.score, p.is_anomaly,
                                                                 caption="washer"), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(colour_counts(det, painter))

    run_eval(EvalRequest([run], [data], plot=DOCS / "eval_plot.png", progress=False))
    onnx_path = export_onnx(run, Path("m.onnx"), ExportOptions(batch="dynamic")).path
    sample_calibration_set([data], 32, Path("calib"))
    int8 = quantize_int8(onnx_path, Path("calib"), Path("m.int8.onnx"), samples=32, target="cpu").path
    run_bench([run, onnx_path, int8], BenchOptions(batches=[1, 4], warmup=5, iters=40),
              BenchOutputs(plot=DOCS / "bench_plot.png"))
    for name in ("eval_plot", "bench_plot"):
        shrink_png(DOCS / f"{name}.png")


if __name__ == "__main__":
    main()
