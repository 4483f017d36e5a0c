"""Stream inference: sources -> capture threads -> preprocess -> backend -> postprocess -> sinks (torch-free)."""
