"""Latency benchmarks: timing statistics, machine description, reports (torch-free)."""
