"""`eval --plot`: the picture a process engineer picks a threshold from.

One row per model: ROC curves per category (with their AUROC), and the score histograms of normal
and defective parts with the decision threshold drawn and what it costs on this data (false alarms,
missed defects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualkd_edge.evaluation import metrics
from dualkd_edge.evaluation.evaluate_splits import EvalReport
from dualkd_edge.pictures.plotting import pyplot, save_figure

NORMAL_COLOUR, DEFECT_COLOUR = "tab:green", "tab:red"


def _roc_panel(ax, report: EvalReport) -> None:
    categories = list(dict.fromkeys(r.category for r in report.records))
    for cat in categories:
        recs = [r for r in report.records if r.category == cat]
        labels = np.array([r.label for r in recs])
        scores = np.array([r.score_logit for r in recs])  # ranked like the eval table: no ties at P = 1.0
        try:
            fpr, tpr, _ = metrics.roc_curve(labels, scores)
        except ValueError:  # a category without defects (or without good parts) has no ROC
            ax.plot([], [], " ", label=f"{cat}: n/a (one class only)")
            continue
        ax.plot(fpr, tpr, drawstyle="steps-post", lw=2,
                label=f"{cat}: AUROC {metrics.image_auroc(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-alarm rate (good parts rejected)")
    ax.set_ylabel("detection rate (defective parts caught)")
    ax.set_title("ROC per category")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _histogram_panel(ax, report: EvalReport) -> None:
    scores = np.array([r.score for r in report.records])
    labels = np.array([r.label for r in report.records], bool)
    bins = np.linspace(0.0, 1.0, 41)
    normal, defect = scores[~labels], scores[labels]
    counts_normal, _, _ = ax.hist(normal, bins=bins, color=NORMAL_COLOUR, alpha=0.6, label=f"good parts ({normal.size})")
    counts_defect, _, _ = ax.hist(defect, bins=bins, color=DEFECT_COLOUR, alpha=0.6,
                                  label=f"defective parts ({defect.size})")
    t = report.threshold
    false_alarms = int((normal >= t).sum())
    missed = int((defect < t).sum())
    ax.axvline(t, color="black", lw=2, ls="--",
               label=f"threshold {t:.2f}: {false_alarms}/{normal.size} false alarms, {missed}/{defect.size} missed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.45 * max(counts_normal.max(initial=0), counts_defect.max(initial=0), 1))  # room for the legend
    ax.set_xlabel("anomaly score (Noisy-OR probability)")
    ax.set_ylabel("images")
    ax.set_title("scores of good vs defective parts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center")


def plot_eval(reports: list[EvalReport], out: Path) -> None:
    plt = pyplot("--plot")
    fig, axes = plt.subplots(len(reports), 2, figsize=(12, 4.6 * len(reports)), squeeze=False)
    for (ax_roc, ax_hist), rep in zip(axes, reports):
        _roc_panel(ax_roc, rep)
        _histogram_panel(ax_hist, rep)
        mean = rep.mean_row().get("image_auroc")
        ax_roc.annotate(rep.model + (f"  (mean image AUROC {mean:.3f})" if mean is not None else ""),
                        xy=(0, 1.12), xycoords="axes fraction", fontsize=11, fontweight="bold")
    fig.tight_layout()
    save_figure(fig, out)
