"""Frames in: source parsing, OpenCV and GStreamer capture threads, and their bounded queues."""
