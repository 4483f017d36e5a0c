"""Image -> model input, exactly as the artifact's metadata says (numpy + OpenCV, no torch).

Training, calibration, export verification and every runtime backend use these functions,
so a model sees the same pixels everywhere."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from dualkd_edge.metadata import InputSpec


def resize_to(img_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    if img_bgr.shape[:2] == (height, width):
        return img_bgr
    shrinking = img_bgr.shape[0] > height or img_bgr.shape[1] > width
    return cv2.resize(img_bgr, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalize_nhwc_bgr(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N,H,W,3) uint8 BGR -> (N,3,H,W) float32 RGB normalised."""
    x = batch[..., ::-1].astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def prepare_batch(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """BGR uint8 images of any size -> the model's input batch (float NCHW or uint8 NHWC)."""
    resized = np.stack([resize_to(ensure_bgr(img), spec.height, spec.width) for img in images])
    if spec.dtype == "uint8":
        return np.ascontiguousarray(resized)
    return normalize_nhwc_bgr(resized, spec.mean, spec.std)


def ensure_bgr(img: np.ndarray) -> np.ndarray:
    """Accept gray (HxW), BGR and BGRA uint8 images; anything else is a caller error."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(img).__name__} "
                         f"{getattr(img, 'dtype', '')}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
