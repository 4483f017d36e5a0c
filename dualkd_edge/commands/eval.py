"""`dualkd-edge eval`: metrics tables for one or more models, threshold tuning, worst-case overlays."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from dualkd_edge.commands.options import BatchSize, Device, EngineOnnx, FloatOption, load_options
from dualkd_edge.errors import UserError

if TYPE_CHECKING:
    from dualkd_edge.artifacts import LoadOptions
    from dualkd_edge.data.discovery import Category
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.evaluate_splits import EvalReport
    from dualkd_edge.output_paths import ResultWrites
    from dualkd_edge.pictures.overlay import OverlayPainter

log = logging.getLogger("dualkd_edge")

COLUMNS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro")


def command(
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
    batch_size: BatchSize = 8,
    device: Device = "auto",
    onnx: EngineOnnx = None,
) -> None:
    """Image AUROC / AP / F1-max and pixel AUROC / AUPRO per category, several models side by side."""
    run(EvalRequest(models=list(paths[:-1]), data=[paths[-1]], json_out=json_out, markdown_out=markdown,
                    per_image=per_image, tune=tune_threshold, max_fpr=max_fpr, f1_max=f1_max, overlays=save_overlays,
                    worst=worst, save_masks=save_masks, normal_classes=normal_classes, batch_size=batch_size, plot=plot,
                    load=load_options(device=device, onnx=onnx)))


@dataclass
class EvalRequest:
    """`dualkd-edge eval` as the user asked for it."""

    models: list[Path]
    data: list[Path]
    json_out: Path | None = None
    markdown_out: Path | None = None
    per_image: Path | None = None
    tune: bool = False
    max_fpr: float = 0.01
    f1_max: bool = False
    overlays: Path | None = None
    worst: int = 5
    save_masks: bool = False
    normal_classes: str | None = None
    batch_size: int = 8
    plot: Path | None = None
    load: LoadOptions = field(default_factory=load_options)
    progress: bool = True

    def validate(self) -> None:
        """Cheap checks first: a typo in MODEL or an option should not wait for DATA."""
        if not self.models or not self.data:
            raise UserError("eval: give at least one MODEL and then DATA")
        for model_path in self.models:
            if not Path(model_path).exists():
                raise UserError(f"MODEL: not found: {model_path}")
        if not 0 < self.max_fpr < 1:
            raise UserError(f"--max-fpr: expected a false-alarm rate in (0, 1), e.g. 0.01, got {self.max_fpr}")
        if self.f1_max and not self.tune:
            raise UserError("--f1-max: chooses how --tune-threshold tunes; add --tune-threshold")
        if self.worst < 1 or self.batch_size < 1:
            raise UserError("--worst and --batch-size must be >= 1")
        if self.save_masks and self.overlays is None:
            raise UserError("--save-masks: masks are written beside the overlays; add --save-overlays DIR")
        if self.tune and len(self.models) != 1:
            raise UserError("--tune-threshold: give exactly one MODEL")
        if self.plot is not None:
            from dualkd_edge.pictures.plotting import check_plot_request

            check_plot_request("--plot", self.plot)
        self.check_outputs()

    def check_outputs(self) -> None:
        """Before the evaluation: every result can be written, and none lands on an input."""
        from dualkd_edge.artifacts import metadata_file
        from dualkd_edge.output_paths import check_outputs

        check_outputs(files={"--json": self.json_out, "--markdown": self.markdown_out, "--per-image": self.per_image,
                             "--plot": self.plot}, folders={"--save-overlays": self.overlays},
                      inputs={"MODEL": self.models, "DATA": self.data})
        if self.tune:
            check_outputs(files={"--tune-threshold": metadata_file(self.models[0])})


def report_rows(reports: list[EvalReport]) -> tuple[list[str], list[list[object]]]:
    """One row per (model, category) and a mean row per model; deltas against the first model."""
    headers = ["model", "category", "n", *COLUMNS, "local_auroc", "semantic_auroc", "img/s"]
    rows: list[list[object]] = []
    base = reports[0].mean_row()
    for i, rep in enumerate(reports):
        for cat, r in rep.rows.items():
            rows.append([rep.model, cat, r.get("n_images"), *(r.get(k) for k in COLUMNS),
                         r.get("local_auroc"), r.get("semantic_auroc"), ""])
        mean = rep.mean_row()
        cells: list[object] = []
        for k in COLUMNS + ("local_auroc", "semantic_auroc"):
            v = mean.get(k)
            if i > 0 and v is not None and base.get(k) is not None:
                cells.append(f"{v:.4f} ({v - base[k]:+.4f})")
            else:
                cells.append(v)
        rows.append([rep.model, "MEAN", len(rep.records), *cells, f"{rep.images_per_second:.1f}"])
    return headers, rows


def report_json(reports: list[EvalReport]) -> dict:
    return {"models": [{"model": r.model, "threshold": r.threshold, "images_per_second": r.images_per_second,
                        "categories": r.rows, "mean": r.mean_row(), "skipped": r.skipped,
                        "pixel_skipped": r.pixel_skipped} for r in reports]}


def per_image_csv(reports: list[EvalReport]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "path", "category", "defect", "label", "score", "score_logit", "local_score",
                "semantic_score", "is_anomaly"])
    for rep in reports:
        for r in rep.records:
            w.writerow([rep.model, r.path, r.category, r.defect, r.label, f"{r.score:.6f}", f"{r.score_logit:.6f}",
                        f"{r.local_score:.6f}", f"{r.semantic_score:.6f}", int(r.is_anomaly)])
    return buf.getvalue().encode()


def save_worst_overlays(out_dir: Path, detector: Detector, painter: OverlayPainter, report: EvalReport, worst: int,
                        masks: bool = False) -> int:
    """Overlays of the N lowest-scored anomalies (false negatives) and N highest-scored normals,
    with their binary defect masks beside them (`<name>_mask.png`) when `masks`."""
    from dualkd_edge.fileio import read_image, write_image_atomic

    anomalies = sorted((r for r in report.records if r.label == 1), key=lambda r: r.score_logit)[:worst]
    normals = sorted((r for r in report.records if r.label == 0), key=lambda r: -r.score_logit)[:worst]
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for kind, recs in (("false_negative", anomalies), ("false_positive", normals)):
        for rank, r in enumerate(recs):
            img = read_image(r.path)
            if img is None:
                continue
            p = detector.predict([img])[0]
            over = painter.draw(img, p.anomaly_map, p.score, p.is_anomaly, caption=f"{r.category}/{r.defect}")
            stem = f"{kind}_{rank:02d}_{r.category}_{r.defect}_{Path(r.path).stem}"
            write_image_atomic(out_dir / f"{stem}.png", over)
            if masks:
                write_image_atomic(out_dir / f"{stem}_mask.png", painter.defect_mask(p.anomaly_map))
            n += 1
    return n


def load_categories(data: list[Path], normal_classes: str | None) -> list[Category]:
    from dualkd_edge.data.discovery import discover_all

    if normal_classes:
        from dualkd_edge.data.class_folders import class_folder_categories

        return class_folder_categories(data, [c.strip() for c in normal_classes.split(",") if c.strip()])
    return discover_all(data)


def evaluate_model(req: EvalRequest, model_path: Path, categories: list[Category], results: ResultWrites) -> EvalReport:
    """One model over the test splits, with its worst cases drawn when asked (a failure to write
    them is collected in `results`, not allowed to lose the evaluation)."""
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.evaluate_splits import evaluate
    from dualkd_edge.output_paths import not_written

    with Detector.load(model_path, options=req.load.for_path(model_path)) as det:
        painter = None
        if req.overlays is not None:
            from dualkd_edge.pictures.overlay import OverlayPainter

            painter = OverlayPainter.for_model(det.meta, str(model_path), det.threshold)
            if req.save_masks:
                painter.require_calibrated("--save-masks", str(model_path))
        rep = evaluate(det, categories, batch_size=req.batch_size, progress=req.progress)
        rep.model = str(model_path)
        if painter is not None:
            def draw() -> None:
                try:
                    n = save_worst_overlays(req.overlays, det, painter, rep, req.worst, req.save_masks)
                except OSError as exc:
                    raise not_written("--save-overlays", Path(exc.filename or req.overlays), exc) from None
                log.info("wrote %d overlays to %s", n, req.overlays)

            results.run(draw)
    return rep


def write_outputs(req: EvalRequest, reports: list[EvalReport], results: ResultWrites) -> None:
    """The table, then every result file; one that cannot be written is kept in the fallback
    folder and reported once all others are written."""
    from dualkd_edge.console.tables import markdown_table, text_table
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.output_paths import write_result

    headers, rows = report_rows(reports)
    print(text_table(headers, rows))
    if reports[0].skipped:
        print(f"skipped {len(reports[0].skipped)} unreadable image(s): {', '.join(reports[0].skipped[:5])}")
    for rep in reports:
        if rep.pixel_skipped:
            print(f"{rep.model}: pixel metrics leave out {len(rep.pixel_skipped)} image(s) without a readable "
                  f"ground-truth mask: {', '.join(rep.pixel_skipped[:5])}")
    files = {"--json": (req.json_out, lambda: json_bytes(report_json(reports))),
             "--markdown": (req.markdown_out, lambda: (markdown_table(headers, rows) + "\n").encode()),
             "--per-image": (req.per_image, lambda: per_image_csv(reports))}
    for option, (path, content) in files.items():
        if path is not None:
            results.run(lambda option=option, path=path, content=content: write_result(path, content(), option))
    if req.plot:
        from dualkd_edge.evaluation.plot import plot_eval

        def plot() -> None:
            plot_eval(reports, req.plot)
            print(f"plot written to {req.plot}")

        results.run(plot)


def run(req: EvalRequest) -> list[EvalReport]:
    from dualkd_edge.evaluation.thresholds import tune_threshold
    from dualkd_edge.output_paths import ResultWrites

    req.validate()
    categories = load_categories(req.data, req.normal_classes)
    results = ResultWrites()
    reports = [evaluate_model(req, Path(m), categories, results) for m in req.models]
    write_outputs(req, reports, results)
    if req.tune:
        source = ", ".join(str(d) for d in req.data)
        results.run(lambda: print(tune_threshold(req.models[0], reports[0], req.max_fpr, req.f1_max, source=source)))
    results.finish()
    return reports
