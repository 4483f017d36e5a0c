"""INT8: calibration images and batches, static Q/DQ quantization, SmoothQuant, mixed precision, the accuracy gate."""
