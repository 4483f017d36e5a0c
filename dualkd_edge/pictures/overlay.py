"""The one place that draws results for people: eval's saved cases, stream images and video, the window.

An overlay is the image with the heat map blended on the model's calibrated scale (map_scale.py),
white outlines around the regions beyond the normal range, a banner above (OK / NG, big and
high-contrast, sized to the image) and a colour bar below. Small images are enlarged first so the
text stays legible. Torch-free.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.pictures.map_scale import RED_FROM, HeatScale, heat_scale_for
from dualkd_edge.metadata import ArtifactMetadata

COLORMAP = cv2.COLORMAP_JET
MIN_DISPLAY_SIDE = 360  # smaller images are enlarged by a whole factor before drawing
FONT = cv2.FONT_HERSHEY_DUPLEX
FONT_CAP_HEIGHT = 21.0  # inked height of capitals at scale 1 (getTextSize reports 27, with spacing)
# Heat blending grows with the value: normal areas keep the part visible under a light tint,
# hot areas are strongly coloured.
ALPHA_COOL, ALPHA_HOT = 0.2, 0.65
# Banner colours (BGR) with the text colour of highest contrast on each.
NG_COLOURS = ((0, 0, 215), (255, 255, 255))
OK_COLOURS = ((0, 215, 0), (0, 0, 0))
LEGEND_BG = (32, 32, 32)
BANNER_FRACTION = 0.16  # banner height / image height
LEGENDS_KEPT = 8  # colour bars kept drawn, one per image size


def _banner_height(image_height: int) -> int:
    return max(48, round(BANNER_FRACTION * image_height))


def _into(view: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Copy `pixels` into `view` unless OpenCV already wrote them there (its dst argument)."""
    if pixels is not view:
        view[:] = pixels
    return view


def colour_lut() -> np.ndarray:
    """The colour bar: 256 BGR colours, index 0 = cool end, 255 = red end."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAP)[:, 0, :]


def _text_fit(text: str, height: int, max_width: int | None, bold: bool) -> tuple[float, int, int]:
    """Font scale, stroke and width for capitals about `height` px tall, shrunk to fit `max_width`."""
    w1 = cv2.getTextSize(text, FONT, 1.0, 1)[0][0]
    scale = height / FONT_CAP_HEIGHT
    if max_width is not None and w1 * scale > max_width:
        scale = max(max_width, 1) / max(w1, 1)
    thick = max(1, round(scale * (2.2 if bold else 1.3)))
    return scale, thick, cv2.getTextSize(text, FONT, scale, thick)[0][0]


def _put_text(img: np.ndarray, text: str, org: tuple[int, int], height: int, colour: tuple[int, int, int],
              max_width: int | None = None, bold: bool = False) -> int:
    """Write `text` with `org` the left end of its baseline; returns the width used."""
    scale, thick, width = _text_fit(text, height, max_width, bold)
    cv2.putText(img, text, org, FONT, scale, colour, thick, cv2.LINE_AA)
    return width


class OverlayPainter:
    """Draws overlays and defect masks for one model (its heat scale) and decision threshold."""

    def __init__(self, scale: HeatScale, threshold: float) -> None:
        self.scale = scale
        self.threshold = float(threshold)
        self.lut = colour_lut()
        self.lut_planes = self.lut.reshape(256, 1, 3)  # cv2.LUT's form of a per-channel table
        self.alpha_lut = np.linspace(ALPHA_COOL, ALPHA_HOT, 256, dtype=np.float32)  # heat weight per colour
        self._legends: dict[tuple[int, int], np.ndarray] = {}
        self._legends_lock = threading.Lock()

    @classmethod
    def for_model(cls, meta: ArtifactMetadata, source: str, threshold: float | None = None) -> "OverlayPainter":
        return cls(heat_scale_for(meta, source), meta.threshold if threshold is None else threshold)

    # -- pixels ---------------------------------------------------------------------------------
    def colour_index(self, amap: np.ndarray) -> np.ndarray:
        """Index into the colour bar (0..255) of every map pixel: round(255 * position)."""
        amap = np.asarray(amap, dtype=np.float32)
        lo, hi = self.scale.bounds(amap)
        # OpenCV's saturating conversion: several times faster than numpy on full-HD frames.
        return cv2.convertScaleAbs(np.maximum(amap - np.float32(lo), 0), alpha=255.0 / (hi - lo))

    def heat_layer(self, amap: np.ndarray) -> np.ndarray:
        """The heat map's own BGR colours (before blending), at the map's size."""
        return self.lut[self.colour_index(amap)]

    def red_pixels(self, amap: np.ndarray) -> np.ndarray:
        """Where the overlay paints the red end of the bar."""
        return self.colour_index(amap) >= round(RED_FROM * 255)

    def require_calibrated(self, option: str, model: str) -> None:
        """Masks need the normal range: refuse them for artifacts made before it was recorded."""
        if not self.scale.calibrated:
            raise UserError(f"{option}: {model} has no anomaly-map statistics (made before dualkd-edge recorded "
                            "them), so there is no normal range to compare with; retrain it")

    def defect_mask(self, amap: np.ndarray) -> np.ndarray | None:
        """uint8 0/255 mask (map size) of the regions beyond the normal range; None uncalibrated."""
        if not self.scale.calibrated:
            return None
        return self.scale.beyond_normal(amap).astype(np.uint8) * 255

    # -- the picture ----------------------------------------------------------------------------
    def draw(self, image_bgr: np.ndarray, anomaly_map: np.ndarray, score: float, is_anomaly: bool,
             caption: str = "") -> np.ndarray:
        """Banner + image with heat map and outlines + colour bar, as one BGR image.

        Drawn straight into one canvas (no stacking copy). A small image is blended at its own size
        and the blend enlarged: the map is smooth at that scale, and the stream's overlay thread
        paints every frame beside the model (benchmarks/results/line-pace-cpu-2core.md)."""
        image = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        h, w = image.shape[:2]
        amap = anomaly_map.astype(np.float32, copy=False)
        if amap.shape != (h, w):
            amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
        factor = math.ceil(MIN_DISPLAY_SIDE / min(h, w)) if min(h, w) < MIN_DISPLAY_SIDE else 1
        width, height = w * factor, h * factor
        legend = self._legend(width, height)
        banner_h = _banner_height(height)
        canvas = np.empty((banner_h + height + legend.shape[0], width, 3), np.uint8)
        self._paint_banner(canvas[:banner_h], score, is_anomaly, caption)
        body = canvas[banner_h:banner_h + height]
        if factor > 1:
            _into(body, cv2.resize(self._blend(image, amap), (width, height), interpolation=cv2.INTER_LINEAR))
            amap = cv2.resize(amap, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            self._blend(image, amap, out=body)
        self._outline(body, amap)
        canvas[banner_h + height:] = legend
        return canvas

    def _blend(self, image: np.ndarray, amap: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        index = self.colour_index(amap)
        alpha = cv2.LUT(index, self.alpha_lut)
        # The bar's own table on the index's three planes: the colours applyColorMap gives, without
        # the table it rebuilds per call (a third of the blend's time at 224 px).
        colours = cv2.LUT(cv2.cvtColor(index, cv2.COLOR_GRAY2BGR), self.lut_planes)
        if out is None:
            return cv2.blendLinear(image, colours, 1.0 - alpha, alpha)
        return _into(out, cv2.blendLinear(image, colours, 1.0 - alpha, alpha, dst=out))

    def _outline(self, body: np.ndarray, amap: np.ndarray) -> None:
        mask = self.defect_mask(amap)
        if mask is None or not mask.any():
            return
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thick = max(1, round(min(body.shape[:2]) / 240))
        # A dark rim under a white line: visible on bright parts and dark background alike.
        cv2.drawContours(body, contours, -1, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.drawContours(body, contours, -1, (255, 255, 255), thick, cv2.LINE_AA)

    def _paint_banner(self, strip: np.ndarray, score: float, is_anomaly: bool, caption: str) -> None:
        """OK / NG in letters over 10% of the image height tall (about 3 cm on a 24-inch 1080p screen:
        legible some 3 m away) on a full-width green / red strip, painted into `strip`."""
        bh, width = strip.shape[:2]
        bg, fg = NG_COLOURS if is_anomaly else OK_COLOURS
        strip[:] = bg
        pad = max(4, bh // 6)
        label_h, details_h = round(0.7 * bh), round(0.28 * bh)
        label_w = _put_text(strip, "NG" if is_anomaly else "OK", (pad, (bh + label_h) // 2), label_h, fg, bold=True)
        details = f"score {score:.3f} {'>=' if is_anomaly else '<'} {self.threshold:.2f}"
        details += f"   {caption}" if caption else ""
        x = pad + label_w + 2 * pad
        _put_text(strip, details, (x, (bh + details_h) // 2), details_h, fg, max_width=width - x - pad)

    def _legend(self, width: int, height: int) -> np.ndarray:
        """The colour bar with what its parts mean for this model: the same for every frame of a size,
        so drawn once per size."""
        key = (width, height)
        with self._legends_lock:  # a window (inference thread) and the files (their thread) share a painter
            if key not in self._legends:
                if len(self._legends) >= LEGENDS_KEPT:  # a folder of many sizes: keep the newest few
                    self._legends.pop(next(iter(self._legends)))
                self._legends[key] = self._draw_legend(width, height)
            return self._legends[key]

    def _draw_legend(self, width: int, height: int) -> np.ndarray:
        lh = max(34, round(0.08 * height))
        strip = np.empty((lh, width, 3), np.uint8)
        strip[:] = LEGEND_BG
        pad = max(3, lh // 8)
        bar_h = max(6, round(0.35 * lh))
        x0, x1 = pad, width - pad
        strip[pad:pad + bar_h, x0:x1] = self.lut[np.linspace(0, 255, x1 - x0).round().astype(np.uint8)][None]
        text_h, baseline, white = max(9, round(0.3 * lh)), lh - pad, (235, 235, 235)
        if not self.scale.calibrated:
            _put_text(strip, "per-image scale: colours not comparable (model has no map statistics)",
                      (x0, baseline), text_h, white, max_width=x1 - x0)
            return strip
        tick = x0 + round(self.scale.limit_position * (x1 - x0))
        cv2.line(strip, (tick, pad - 1), (tick, pad + bar_h + 1), white, max(2, lh // 12))
        _put_text(strip, "normal", (x0, baseline), text_h, white, max_width=tick - x0 - pad)
        used = _put_text(strip, "| outline: beyond normal parts", (tick, baseline), text_h, white,
                         max_width=(x1 - tick) * 3 // 4)
        _, _, red_w = _text_fit("defect", text_h, None, False)
        if x1 - red_w > tick + used + pad:
            _put_text(strip, "defect", (x1 - red_w, baseline), text_h, white)
        return strip
