"""matplotlib, optional: one clear error when it is missing, file-only backend, atomic writes."""

from __future__ import annotations

from pathlib import Path

from dualkd_edge.errors import MissingDependencyError, UserError

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


def save_figure(fig, out: Path, option: str = "--plot") -> None:
    """Render in memory, then write atomically; a picture that cannot be written is kept in the
    fallback folder (outputs.write_result) and the error says where."""
    import io

    import matplotlib.pyplot as plt

    from dualkd_edge.output_paths import write_result

    out = Path(out)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format=out.suffix.lstrip(".").lower())
    finally:
        plt.close(fig)
    write_result(out, buf.getvalue(), option)
