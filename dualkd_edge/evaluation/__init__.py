"""Evaluating a model on labelled images: metrics, thresholds, side-by-side comparison, plots (torch-free).

`from dualkd_edge.evaluation import evaluate` keeps working (it was a module before this package).
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("evaluate", "EvalReport", "ImageRecord"):
        from dualkd_edge.evaluation import evaluate_splits

        return getattr(evaluate_splits, name)
    raise AttributeError(f"module 'dualkd_edge.evaluation' has no attribute {name!r}")
