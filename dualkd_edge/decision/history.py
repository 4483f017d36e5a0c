"""The history stored with a model: who changed a threshold or calibration, when, how, on which data.
Entries are appended, never rewritten."""

from __future__ import annotations

import getpass
import socket
import time

from dualkd_edge.version import __version__


def utc_now() -> str:
    """The time stamp of calibrations, history entries and review answers (ISO 8601, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def history_entry(command: str, calibration: str, threshold_from: float | None, threshold_to: float,
                  source: str = "", frames: int | None = None, **details: object) -> dict:
    """One change. `source` must already be safe to store (credentials redacted)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    entry = {
        "time": utc_now(),
        "command": command,
        "calibration": calibration,
        "threshold": {"from": threshold_from, "to": threshold_to},
        "data": {"source": source, "frames": frames},
        "user": user,
        "host": socket.gethostname(),
        "tool_version": __version__,
    }
    entry.update({k: v for k, v in details.items() if v is not None})
    return entry


def format_history(history: list[dict]) -> list[str]:
    lines = []
    for h in history:
        th = h.get("threshold", {})
        old = "none" if th.get("from") is None else f"{th['from']:.6g}"
        data = h.get("data", {})
        on = f" on {data.get('source') or '?'}" + (f" ({data['frames']} frames)" if data.get("frames") else "")
        lines.append(f"{h.get('time', '?')}  {h.get('command', '?')}  [{h.get('calibration', '?')}]  "
                     f"threshold {old} -> {th.get('to', float('nan')):.6g}{on}  by {h.get('user', '?')}@"
                     f"{h.get('host', '?')}  (dualkd-edge {h.get('tool_version', '?')})")
    return lines
