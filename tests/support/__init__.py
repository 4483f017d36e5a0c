"""Loopback servers and generated media for tests and benchmarks (RTSP/H.264 through ffmpeg, HTTP
MJPEG): real streams on 127.0.0.1 that stop by themselves. Not used by the runtime."""
