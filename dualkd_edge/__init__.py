"""dualkd-edge: dual-student knowledge-distillation anomaly detection, from training to Jetson.

`Detector` is imported lazily so that `import dualkd_edge` stays cheap and torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from dualkd_edge.detector import Detector, Prediction

__all__ = ["Detector", "Prediction", "__version__"]


def __getattr__(name: str):
    if name in ("Detector", "Prediction"):
        from dualkd_edge import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'dualkd_edge' has no attribute {name!r}")
