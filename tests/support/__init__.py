"""Loopback servers and generated media for tests and benchmarks (RTSP/H.264 through ffmpeg, HTTP
MJPEG): real streams on 127.0.0.1 that stop by themselves. Not used by the runtime."""

_started: list = []


def started(server):
    """Remember a server that was started, so `stop_all` stops it at the test's teardown whatever
    the test's outcome (a failed assertion must not leave a broker running after pytest ends)."""
    if server not in _started:
        _started.append(server)
    return server


def stop_all() -> None:
    while _started:
        server = _started.pop()
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - one server failing to stop must not keep the others up
            pass
