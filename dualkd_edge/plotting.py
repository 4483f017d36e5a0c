"""matplotlib, optional: one clear error when it is missing, file-only backend, atomic writes."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.fileio import atomic_path

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_request(option: str, out: Path) -> None:
    """Fail before any work is done: the file type and matplotlib itself."""
    if Path(out).suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"{option}: expected a file ending in {', '.join(PLOT_SUFFIXES)}, got {out}")
    pyplot(option)


def pyplot(option: str):
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(f"{option} needs matplotlib: pip install 'dualkd-edge[plot]'") from None
    return plt


def save_figure(fig, out: Path) -> None:
    import matplotlib.pyplot as plt

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format=out.suffix.lstrip(".").lower())
    plt.close(fig)
