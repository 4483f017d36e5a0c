"""`dualkd-edge eval`: metrics tables for one or more models, threshold tuning, worst-case overlays."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dualkd_edge.data.discovery import Category, discover_all
from dualkd_edge.detector import ENGINE_SUFFIXES, Detector
from dualkd_edge.errors import UserError
from dualkd_edge.evaluation import EvalReport, evaluate
from dualkd_edge.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from dualkd_edge.tables import markdown_table, text_table

if TYPE_CHECKING:
    from dualkd_edge.overlay import OverlayPainter

log = logging.getLogger("dualkd_edge")

COLUMNS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro")


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
                        "categories": r.rows, "mean": r.mean_row(), "skipped": r.skipped} for r in reports]}


def write_per_image_csv(path: Path, reports: list[EvalReport]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "path", "category", "defect", "label", "score", "score_logit", "local_score",
                    "semantic_score", "is_anomaly"])
        for rep in reports:
            for r in rep.records:
                w.writerow([rep.model, r.path, r.category, r.defect, r.label, f"{r.score:.6f}", f"{r.score_logit:.6f}",
                            f"{r.local_score:.6f}", f"{r.semantic_score:.6f}", int(r.is_anomaly)])


def tune_threshold(model_path: Path, report: EvalReport, max_fpr: float | None) -> str:
    """Pick the F1-optimal threshold (or the one at a false-alarm rate) on score_logit, which does not
    saturate, and store it in the model as the probability threshold for `score`."""
    from dualkd_edge import metrics
    from dualkd_edge.model_files import update_threshold
    from dualkd_edge.scoring import probability_threshold

    labels = np.array([r.label for r in report.records])
    logits = np.array([r.score_logit for r in report.records])
    try:
        if max_fpr is not None:
            logit_threshold = metrics.threshold_at_fpr(labels, logits, max_fpr)
            how = f"false-alarm rate <= {max_fpr:g}"
        else:
            logit_threshold = metrics.f1_max(labels, logits)[1]
            how = "F1-max"
    except ValueError as exc:
        raise UserError(f"--tune-threshold: {exc} in DATA's test split") from None
    new = probability_threshold(logit_threshold, logits, np.array([r.score for r in report.records]))
    old = update_threshold(model_path, new)
    return f"{model_path}: threshold {old:.4f} -> {new:.4f} ({how})"


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
    if normal_classes:
        from dualkd_edge.data.class_folders import class_folder_categories

        return class_folder_categories(data, [c.strip() for c in normal_classes.split(",") if c.strip()])
    return discover_all(data)


def run(models: list[Path], data: list[Path], json_out: Path | None = None, markdown_out: Path | None = None,
        per_image: Path | None = None, tune: bool = False, max_fpr: float | None = None,
        overlays: Path | None = None, worst: int = 5, normal_classes: str | None = None,
        batch_size: int = 8, device: str = "auto", progress: bool = True, save_masks: bool = False,
        plot: Path | None = None, onnx: Path | None = None) -> list[EvalReport]:
    for model_path in models:  # cheap checks first: a typo in MODEL should not wait for DATA
        if not Path(model_path).exists():
            raise UserError(f"MODEL: not found: {model_path}")
    if plot is not None:
        from dualkd_edge.plotting import check_plot_request

        check_plot_request("--plot", plot)
    categories = load_categories(data, normal_classes)
    if tune and len(models) != 1:
        raise UserError("--tune-threshold: give exactly one MODEL")
    reports = []
    for model_path in models:
        engine_onnx = onnx if Path(model_path).suffix.lower() in ENGINE_SUFFIXES else None
        with Detector.load(model_path, device=device, onnx=engine_onnx) as det:
            painter = None
            if overlays is not None:
                from dualkd_edge.overlay import OverlayPainter

                painter = OverlayPainter.for_model(det.meta, str(model_path), det.threshold)
                if save_masks:
                    painter.require_calibrated("--save-masks", str(model_path))
            rep = evaluate(det, categories, batch_size=batch_size, progress=progress)
            rep.model = str(model_path)
            reports.append(rep)
            if overlays is not None:
                n = save_worst_overlays(overlays, det, painter, rep, worst, save_masks)
                log.info("wrote %d overlays to %s", n, overlays)
    headers, rows = report_rows(reports)
    print(text_table(headers, rows))
    if reports[0].skipped:
        print(f"skipped {len(reports[0].skipped)} unreadable image(s): {', '.join(reports[0].skipped[:5])}")
    if json_out:
        write_json_atomic(json_out, report_json(reports))
    if markdown_out:
        write_bytes_atomic(markdown_out, (markdown_table(headers, rows) + "\n").encode())
    if per_image:
        write_per_image_csv(per_image, reports)
    if plot:
        from dualkd_edge.eval_plot import plot_eval

        plot_eval(reports, plot)
        print(f"plot written to {plot}")
    if tune:
        print(tune_threshold(models[0], reports[0], max_fpr))
    return reports


