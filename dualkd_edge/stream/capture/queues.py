"""The bounded queue of a live stream: the newest item matters most, so a full queue loses its oldest."""

from __future__ import annotations

import queue


def put_newest(q: queue.Queue, item: object) -> int:
    """Put `item` without blocking, dropping the oldest entries while `q` is full (another thread
    may take one meanwhile); returns how many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass
