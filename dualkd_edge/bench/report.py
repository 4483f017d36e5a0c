"""Bench reports: terminal table, Markdown (with the machine), CSV, JSON, and an optional plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from dualkd_edge.bench.timing import speedup
from dualkd_edge.console.tables import markdown_table, text_table

HEADERS = ["model", "backend", "made for", "batch", "mean ms", "std", "p50 ms", "p90", "p99 ms", "max", "p99/p50", "img/s",
           "speed-up", "pre ms/img", "post ms/img", "GFLOP/s"]


def table_rows(report: dict) -> list[list[object]]:
    """One row per model x batch; speed-up against the first model timed at the same batch."""
    base: dict[int, dict] = {}
    rows = []
    for r in report["rows"]:
        lat = r["latency_ms"]
        if lat is None:
            rows.append([Path(r["model"]).name, r["backend"], r.get("made_for", ""), r["batch"], *["-"] * 11, r["note"]])
            continue
        base.setdefault(r["batch"], r)
        gflops = r["achieved_gflops"]
        rows.append([Path(r["model"]).name, r["backend"], r.get("made_for", ""), r["batch"], f"{lat['mean_ms']:.2f}", f"{lat['std_ms']:.2f}",
                     f"{lat['p50_ms']:.2f}", f"{lat['p90_ms']:.2f}", f"{lat['p99_ms']:.2f}", f"{lat['max_ms']:.2f}",
                     f"{lat['p99_over_p50']:.2f}", f"{lat['throughput_ips']:.1f}",
                     f"{speedup(base[r['batch']], r):.2f}x", f"{r['host_ms']['preprocess_ms']:.2f}",
                     f"{r['host_ms']['postprocess_ms']:.2f}", f"{gflops:.1f}" if gflops else "n/a"])
    return rows


def extra_lines(report: dict) -> list[str]:
    lines = ["models (and the reference matmul) were timed in alternating rounds; speed-up is the median of "
             "the per-round latency ratios against the first model"]
    ref = report["machine"].get("reference_matmul_gflops")
    if ref:
        lines.append(f"reference: float32 2048x2048 matrix product (numpy BLAS) {ref:.1f} GFLOP/s")
        for r in report["rows"]:
            if r["achieved_gflops"]:
                lines.append(f"  {Path(r['model']).name} batch {r['batch']}: {r['achieved_gflops']:.1f} GFLOP/s = "
                             f"{100 * r['achieved_gflops'] / ref:.0f}% of it ({r['gmacs_per_image']:.2f} GMACs/image)")
    for model, e in report["end_to_end"].items():
        lines.append(f"end to end on {report['options']['source']}: {Path(model).name} {e['e2e_fps']:.1f} FPS vs "
                     f"model-only {e['model_only_fps']:.1f} FPS = {e['ratio']:.2f}x ({e['frames']} frames, "
                     f"{e['dropped']} dropped)")
    if report.get("triton"):
        from dualkd_edge.runtime.triton_backend import format_server_report

        lines += [format_server_report(r) for r in report["triton"].values()]
    for model, f in report.get("footprint", {}).items():
        lines.append(f"footprint of {Path(model).name}: " + (f["error"] if "error" in f else
                     f"peak RSS {f['peak_rss_mib']:.0f} MiB, first decision {f['first_decision_cold_s']:.2f} s cold / "
                     f"{f['first_decision_warm_s']:.2f} s warm from process start (fresh processes; OS file cache "
                     "not dropped)"))
    for model, acc in report["accuracy"].items():
        lines.append(f"accuracy of {Path(model).name}: image AUROC {acc.get('image_auroc') or float('nan'):.4f}, "
                     f"pixel AUROC {acc.get('pixel_auroc') or float('nan'):.4f}")
    for r in report["rows"]:
        rounds = r.get("round_p50_ms") or []
        if len(rounds) > 1:  # how much the machine drifted while this row was timed
            lines.append(f"  {Path(r['model']).name} batch {r['batch']}: {len(rounds)} rounds, per-round p50 "
                         f"{min(rounds):.2f} to {max(rounds):.2f} ms")
        for stage, s in r["stages_ms"].items():
            lines.append(f"  {Path(r['model']).name} batch {r['batch']} {stage}: p50 {s['p50_ms']:.3f} ms")
    return lines


def machine_lines(machine: dict) -> list[str]:
    keys = ["cpu", "cpu_cores", "memory_gib", "gpu", "cuda", "os", "python", "onnxruntime", "onnxruntime_providers",
            "tensorrt", "torch", "jetson_release", "jetson_power_mode", "date"]
    return [f"- {k}: {machine[k]}" for k in keys if machine.get(k) not in (None, [])]


def to_text(report: dict) -> str:
    return "\n".join([text_table(HEADERS, table_rows(report)), *extra_lines(report)])


def to_markdown(report: dict) -> str:
    parts = ["## Machine", *machine_lines(report["machine"]), "", "## Latency", markdown_table(HEADERS, table_rows(report)),
             "", *[f"- {line.strip()}" for line in extra_lines(report)]]
    return "\n".join(parts) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "backend", "batch", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                "max_ms", "throughput_ips", "preprocess_ms", "postprocess_ms", "gmacs", "gflops", "note"])
    for r in report["rows"]:
        lat = r["latency_ms"] or {}
        w.writerow([r["model"], r["backend"], r["batch"], *(lat.get(k, "") for k in (
            "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_ips")),
            r["host_ms"].get("preprocess_ms", ""), r["host_ms"].get("postprocess_ms", ""), r["gmacs_per_image"] or "",
            r["achieved_gflops"] or "", r["note"]])
    return buf.getvalue()


def write_reports(report: dict, json_out: Path | None, csv_out: Path | None, markdown_out: Path | None,
                  plot_out: Path | None) -> None:
    """Every report asked for; one that cannot be written is kept in the fallback folder and
    reported (outputs.ResultNotWritten) once the others are written."""
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.output_paths import ResultWrites, write_result

    results = ResultWrites()
    for option, path, render in (("--json", json_out, lambda: json_bytes(report)),
                                 ("--csv", csv_out, lambda: to_csv(report).encode()),
                                 ("--markdown", markdown_out, lambda: to_markdown(report).encode())):
        if path:
            results.run(lambda option=option, path=path, render=render: write_result(path, render(), option))
    if plot_out:
        from dualkd_edge.bench.plot import plot

        results.run(lambda: plot(report, plot_out))
    results.finish()
