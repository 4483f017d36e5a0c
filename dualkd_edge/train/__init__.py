"""Training: losses, in-memory data, the loop and the Noisy-OR calibration (needs torch)."""
