"""Decisions on the line (torch-free): a threshold at a false-alarm budget, named camera
calibrations, drift watching, model identity and hot swap. See docs/commissioning.md."""
