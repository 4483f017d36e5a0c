"""`bench --plot`: what a reader compares, at a glance.

Three panels: latency percentiles per model, throughput (against batch size when several were
timed, else a bar per model) and the speed-up against the first model; the machine in the title."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualkd_edge.bench.timing import speedup
from dualkd_edge.errors import UserError
from dualkd_edge.pictures.plotting import pyplot, save_figure

PERCENTILES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"))


def model_labels(rows: list[dict]) -> dict[str, str]:
    """Short names: the file name (the whole path where two names collide) and the backend."""
    backends = {r["model"]: r["backend"] for r in rows}
    paths = list(backends)
    names = [Path(p).name for p in paths]
    return {p: f"{n if names.count(n) == 1 else p}\n{backends[p]}" for p, n in zip(paths, names)}


def machine_title(machine: dict) -> str:
    parts = [machine.get("cpu") or "unknown CPU"]
    if machine.get("cpu_cores"):
        parts[0] += f" ({machine['cpu_cores']} cores)"
    parts.append(f"GPU: {machine['gpu']}" if machine.get("gpu") else "no GPU")
    for key, label in (("onnxruntime", "ONNX Runtime"), ("tensorrt", "TensorRT"), ("jetson_power_mode", "power")):
        if machine.get(key):
            parts.append(f"{label} {machine[key]}")
    return " | ".join(parts) + (f"\n{machine['date']}" if machine.get("date") else "")


def _bar_labels(ax, bars, fmt: str, vertical: bool = False) -> None:
    for bar in bars:
        ax.annotate(fmt.format(bar.get_height()), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points",
                    rotation=90 if vertical else 0)


def _latency_panel(ax, rows: list[dict], labels: dict[str, str], colours: dict[str, str]) -> None:
    batch = min(r["batch"] for r in rows)
    sel = [r for r in rows if r["batch"] == batch]
    x = np.arange(len(sel))
    width = 0.8 / len(PERCENTILES)
    for k, (key, name) in enumerate(PERCENTILES):
        heights = [r["latency_ms"][key] for r in sel]
        bars = ax.bar(x + (k - 1) * width, heights, width, color=[colours[r["model"]] for r in sel],
                      alpha=1.0 - 0.3 * k, edgecolor="black", linewidth=0.5, label=name)
        _bar_labels(ax, bars, "{:.1f}")
    ax.set_xticks(x, [labels[r["model"]] for r in sel])
    if max(r["latency_ms"]["p99_ms"] for r in sel) > 20 * min(r["latency_ms"]["p50_ms"] for r in sel):
        ax.set_yscale("log")  # one slow model or a long tail would flatten every other bar
    ax.set_ylabel(f"ms per batch of {batch}")
    ax.set_title(f"latency p50 / p90 / p99 (batch {batch}), lower is better", fontsize=10)
    handles = [ax.bar([0], [0], color="grey", alpha=1.0 - 0.3 * k, edgecolor="black", linewidth=0.5)
               for k in range(len(PERCENTILES))]
    ax.legend(handles, [name for _, name in PERCENTILES], fontsize=8)


def _throughput_panel(ax, rows: list[dict], labels: dict[str, str], colours: dict[str, str]) -> None:
    batches = sorted({r["batch"] for r in rows})
    models = list(labels)
    if len(batches) > 1:
        for m in models:
            mr = sorted((r for r in rows if r["model"] == m), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in mr], [r["latency_ms"]["throughput_ips"] for r in mr], marker="o", lw=2,
                    color=colours[m], label=labels[m])
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        sel = [next(r for r in rows if r["model"] == m) for m in models]
        bars = ax.bar(range(len(sel)), [r["latency_ms"]["throughput_ips"] for r in sel],
                      color=[colours[r["model"]] for r in sel], edgecolor="black", linewidth=0.5)
        _bar_labels(ax, bars, "{:.1f}")
        ax.set_xticks(range(len(sel)), [labels[m] for m in models])
    ax.set_ylabel("images / s")
    ax.set_title("throughput" + (" per batch size" if len(batches) > 1 else f" (batch {batches[0]})")
                 + ", higher is better", fontsize=10)


def _speedup_panel(ax, rows: list[dict], labels: dict[str, str], colours: dict[str, str]) -> None:
    batches = sorted({r["batch"] for r in rows})
    models = list(labels)
    width = 0.8 / len(batches)
    shade = {b: 1.0 - 0.5 * k / max(1, len(batches) - 1) for k, b in enumerate(batches)}
    for k, b in enumerate(batches):
        at_b = {r["model"]: r for r in rows if r["batch"] == b}
        base = next(at_b[m] for m in models if m in at_b)
        xs = [i for i, m in enumerate(models) if m in at_b]
        values = [speedup(base, at_b[models[i]]) for i in xs]
        bars = ax.bar(np.array(xs) + (k - (len(batches) - 1) / 2) * width, values, width,
                      color=[colours[models[i]] for i in xs], alpha=shade[b], edgecolor="black", linewidth=0.5)
        _bar_labels(ax, bars, "{:.2f}x", vertical=len(batches) > 1)
    if len(batches) > 1:  # one bar per batch size, lighter for larger batches
        handles = [ax.bar([0], [0], color="grey", alpha=shade[b], edgecolor="black", linewidth=0.5) for b in batches]
        ax.legend(handles, [f"batch {b}" for b in batches], fontsize=8, loc="upper left")
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.set_xticks(range(len(models)), [labels[m] for m in models])
    ax.set_ylabel("times faster")
    ax.set_title(f"speed-up vs {labels[models[0]].splitlines()[0]} (paired rounds)", fontsize=10)


def plot(report: dict, out: Path) -> None:
    plt = pyplot("--plot")
    rows = [r for r in report["rows"] if r["latency_ms"]]
    if not rows:
        raise UserError("--plot: no model was timed at any of the batch sizes, nothing to plot")
    labels = model_labels(rows)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(labels)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    _latency_panel(axes[0], rows, labels, colours)
    _throughput_panel(axes[1], rows, labels, colours)
    _speedup_panel(axes[2], rows, labels, colours)
    vertical_labels = len({r["batch"] for r in rows}) > 1
    for ax, room in zip(axes, (1.15, 1.15, 1.35 if vertical_labels else 1.15)):
        ax.grid(alpha=0.3, axis="y")
        if ax.get_yscale() == "linear":  # from zero, with room for the value labels
            ax.set_ylim(0, ax.get_ylim()[1] * room)
    fig.suptitle(machine_title(report["machine"]), fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)
