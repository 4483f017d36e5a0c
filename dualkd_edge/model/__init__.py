"""PyTorch model: DINOv2 teacher, the two students and the fused Noisy-OR scoring (needs torch + timm)."""
