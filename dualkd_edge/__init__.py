"""dualkd-edge: dual-student knowledge-distillation anomaly detection, from training to Jetson.

`Detector` is imported lazily so that `import dualkd_edge` stays cheap and torch-free. Modules that
moved into packages stay reachable under their old names (`from dualkd_edge import metrics`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dualkd_edge.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from dualkd_edge.detector import Detector, Prediction

__all__ = ["Detector", "Prediction", "__version__"]

# Old top-level module name -> where it lives now (tools outside the package import these).
_MOVED_MODULES = {
    "metrics": "dualkd_edge.evaluation.metrics",
    "thresholds": "dualkd_edge.evaluation.thresholds",
    "comparison": "dualkd_edge.evaluation.comparison",
    "eval_plot": "dualkd_edge.evaluation.plot",
    "calibration_images": "dualkd_edge.compile.int8.calibration_images",
    "map_scale": "dualkd_edge.pictures.map_scale",
    "overlay": "dualkd_edge.pictures.overlay",
    "plotting": "dualkd_edge.pictures.plotting",
    "outputs": "dualkd_edge.output_paths",
    "progress": "dualkd_edge.console.progress",
    "tables": "dualkd_edge.console.tables",
}


def __getattr__(name: str):
    if name in ("Detector", "Prediction"):
        from dualkd_edge import detector

        return getattr(detector, name)
    if name in _MOVED_MODULES:
        return importlib.import_module(_MOVED_MODULES[name])
    raise AttributeError(f"module 'dualkd_edge' has no attribute {name!r}")
