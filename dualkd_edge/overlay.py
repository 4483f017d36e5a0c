"""Heat-map overlays for people to look at (eval's worst cases, stream output)."""

from __future__ import annotations

import cv2
import numpy as np


def heatmap_overlay(image_bgr: np.ndarray, anomaly_map: np.ndarray, score: float, is_anomaly: bool,
                    vmin: float | None = None, vmax: float | None = None, alpha: float = 0.45,
                    caption: str = "") -> np.ndarray:
    """Blend a JET heat map of `anomaly_map` over the image and write score and OK/NG on it."""
    amap = anomaly_map.astype(np.float32)
    lo = float(amap.min()) if vmin is None else vmin
    hi = float(amap.max()) if vmax is None else vmax
    norm = np.clip((amap - lo) / max(hi - lo, 1e-6), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    if heat.shape[:2] != image_bgr.shape[:2]:
        heat = cv2.resize(heat, (image_bgr.shape[1], image_bgr.shape[0]))
    out = cv2.addWeighted(image_bgr, 1 - alpha, heat, alpha, 0)
    label = "NG" if is_anomaly else "OK"
    colour = (0, 0, 255) if is_anomaly else (0, 200, 0)
    scale = max(0.4, out.shape[1] / 400)
    thick = max(1, int(scale * 2))
    text = f"{label} {score:.3f}" + (f" {caption}" if caption else "")
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 8, th + 10), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out
