"""Pictures an operator can trust: the calibrated heat-map scale, outlines and masks, the banner,
the live FPS caption. Maps are built directly here (torch-free); test_overlay_model.py checks the
same with a trained model."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from dualkd_edge.errors import UserError
from dualkd_edge.pictures.map_scale import MAX_POSITION, SPREAD_POSITION, HeatScale, MapHistogram
from dualkd_edge.metadata import (
    ArtifactMetadata,
    BranchCalibration,
    Calibration,
    InputSpec,
    TeacherWeights,
)
from dualkd_edge.pictures.overlay import (
    BANNER_FRACTION,
    NG_COLOURS,
    OK_COLOURS,
    OverlayPainter,
    colour_lut,
)


def _normal_map(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """What a normal part's anomaly map looks like: small, smooth, never quite constant."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 3)
    return (0.05 + 0.01 * noise / noise.std()).clip(0, None).astype(np.float32)


def _with_defect(amap: np.ndarray, centre: tuple[int, int], radius: int, height: float) -> tuple[np.ndarray, np.ndarray]:
    """The map plus a smooth bump (a defect as the model sees it, sigma = radius / 2) and the
    bump's region (out to 3 sigma)."""
    yy, xx = np.mgrid[: amap.shape[0], : amap.shape[1]]
    d2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    bump = height * np.exp(-d2 / (2 * (radius / 2) ** 2))
    return (amap + bump).astype(np.float32), d2 <= (1.5 * radius) ** 2


def _calibrated_on(maps: list[np.ndarray]):
    hist = MapHistogram()
    for m in maps:
        hist.add(m)
    return hist.summary()


def _meta(map_calibration=None, threshold: float = 0.5) -> ArtifactMetadata:
    cal = Calibration(BranchCalibration(0.1, 0.01), BranchCalibration(0.1, 0.01), anomaly_map=map_calibration)
    return ArtifactMetadata(preset={"name": "tiny"}, input=InputSpec(64, 64), calibration=cal,
                            teacher_weights=TeacherWeights("none", False), threshold=threshold)


def test_map_histogram_matches_numpy_quantiles():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.02, size=(30, 50, 50)).astype(np.float32)
    hist = MapHistogram()
    for m in values:  # streamed map by map
        hist.add(m)
    summary = hist.summary()
    bin_width = 2.0 / hist.bins
    assert abs(summary.median - np.quantile(values, 0.5)) <= bin_width
    assert abs(summary.high - np.quantile(values, 0.999)) <= bin_width
    assert summary.max == pytest.approx(float(values.max()))
    assert summary.n_pixels == values.size and summary.high_quantile == 0.999
    with pytest.raises(ValueError):
        MapHistogram().quantile(0.5)


def test_scale_layout_puts_normal_parts_in_the_cool_half():
    rng = np.random.default_rng(1)
    cal = _calibrated_on([_normal_map(rng) for _ in range(20)])
    scale = HeatScale.from_calibration(cal)
    assert scale.positions(np.float32(cal.median)) == pytest.approx(0.0, abs=1e-6)
    assert scale.positions(np.float32(cal.high)) <= SPREAD_POSITION + 1e-6
    assert scale.positions(np.float32(cal.max)) <= MAX_POSITION + 1e-6
    assert scale.limit == cal.max and scale.limit_position <= MAX_POSITION + 1e-6
    # a normal distribution with a long tail: the maximum decides where the bar ends
    tail = HeatScale.from_calibration(type(cal)(median=0.1, high=0.12, max=0.5))
    assert tail.positions(np.float32(0.5)) == pytest.approx(MAX_POSITION)


def test_good_part_has_no_red_and_a_painted_defect_is_red_inside_its_region():
    rng = np.random.default_rng(2)
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(rng) for _ in range(30)])), "m.onnx")
    lut = colour_lut()
    red_colours = {tuple(c) for c in lut[round(0.875 * 255):]}
    outlined = 0
    for _ in range(20):  # good parts never seen at calibration
        good = _normal_map(rng)
        assert not painter.red_pixels(good).any()
        heat = painter.heat_layer(good)
        assert not any(tuple(c) in red_colours for c in np.unique(heat.reshape(-1, 3), axis=0))
        outlined += bool(painter.defect_mask(good).any())
    # outlines mark what exceeds every calibration pixel: about 1 in 31 new normal maps does, somewhere
    assert outlined <= 4
    defect_map, region = _with_defect(_normal_map(rng), (40, 22), 8, 0.3)
    red = painter.red_pixels(defect_map)
    assert red.sum() > 20 and not red[~region].any()
    heat = painter.heat_layer(defect_map)
    assert all(tuple(c) in red_colours for c in heat[red])
    mask = painter.defect_mask(defect_map)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255} and mask.shape == defect_map.shape
    assert not mask[~region].any() and mask[40, 22] == 255


def test_overlay_layout_outline_and_colours_on_the_image():
    rng = np.random.default_rng(3)
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(rng) for _ in range(30)])), "m.onnx")
    image = np.full((480, 640, 3), 90, np.uint8)
    amap, region = _with_defect(_normal_map(rng, 64), (40, 22), 8, 0.3)
    amap = cv2.resize(amap, (640, 480), interpolation=cv2.INTER_LINEAR)
    region = cv2.resize(region.astype(np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST) > 0
    over = painter.draw(image, amap, 0.93, True)
    banner_h = round(BANNER_FRACTION * 480)
    body = over[banner_h:banner_h + 480]
    assert over.shape[1] == 640 and over.shape[0] > 480 + banner_h  # banner above, colour bar below
    # white outline pixels sit on the border of the region beyond normal, nowhere else
    white = np.all(body >= 250, axis=2)
    near_region = cv2.dilate(region.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    assert white.any() and not white[~near_region].any()
    # inside the defect the overlay is red-dominated; far from it, blue-dominated (cool)
    cy, cx = np.argwhere(painter.red_pixels(amap)).mean(0).astype(int)
    b, g, r = body[cy, cx].astype(int)
    assert r > g + 40 and r > b + 40
    b, g, r = body[450, 600].astype(int)
    assert b > r + 20


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920)])
@pytest.mark.parametrize("is_anomaly", [True, False])
def test_banner_is_big_and_high_contrast(size, is_anomaly):
    rng = np.random.default_rng(4)
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(rng) for _ in range(5)])), "m.onnx")
    h, w = size
    over = painter.draw(np.full((h, w, 3), 128, np.uint8), np.zeros((h, w), np.float32), 0.9 if is_anomaly else 0.1,
                        is_anomaly, caption="12.5 FPS")
    bg, fg = NG_COLOURS if is_anomaly else OK_COLOURS
    banner = over[: round(BANNER_FRACTION * h)]
    assert banner.shape[0] >= 0.15 * h
    # the strip is the decision's colour wall to wall; the OK/NG letters are >= 10% of the image tall
    assert np.all(banner[0] == bg) and np.all(banner[:, -1] == bg)
    label_area = banner[:, : banner.shape[0] * 2]
    rows = np.flatnonzero(np.all(label_area == fg, axis=2).any(axis=1))
    assert rows.size and rows[-1] - rows[0] + 1 >= 0.10 * h

    def luminance(bgr):
        c = np.array(bgr[::-1], float) / 255
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted([luminance(bg), luminance(fg)], reverse=True)
    assert (hi + 0.05) / (lo + 0.05) >= 4.5  # WCAG AA contrast


def test_small_images_are_enlarged_for_legibility():
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(np.random.default_rng(5))])), "m.onnx")
    over = painter.draw(np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128), np.float32), 0.1, False)
    assert over.shape[1] == 384


def test_enlarged_overlay_matches_one_drawn_at_the_enlarged_size():
    """A small image is blended at its own size and then enlarged (the cheap way, for streams):
    the picture must be the one drawn from the enlarged image and map, up to interpolation."""
    rng = np.random.default_rng(6)
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(rng) for _ in range(30)])), "m.onnx")
    image = cv2.GaussianBlur(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8), (0, 0), 2)
    amap, _ = _with_defect(_normal_map(rng, 120), (60, 40), 12, 0.3)
    small = painter.draw(image, amap, 0.9, True)
    big = painter.draw(cv2.resize(image, (360, 360)), cv2.resize(amap, (360, 360)), 0.9, True)
    assert small.shape == big.shape
    difference = np.abs(small.astype(int) - big.astype(int)).max(axis=2)
    banner_h = round(BANNER_FRACTION * 360)
    body = difference[banner_h:banner_h + 360]
    assert np.array_equal(difference[:banner_h], np.zeros_like(difference[:banner_h]))  # same banner
    assert np.median(body) <= 2 and np.mean(body > 40) < 0.02  # colour steps at band edges, outlines


def test_the_colour_bar_is_drawn_once_per_size_and_pictures_do_not_share_pixels():
    painter = OverlayPainter.for_model(_meta(_calibrated_on([_normal_map(np.random.default_rng(7))])), "m.onnx")
    image, amap = np.zeros((400, 400, 3), np.uint8), np.zeros((400, 400), np.float32)
    first = painter.draw(image, amap, 0.1, False)
    second = painter.draw(image, amap, 0.9, True)
    assert painter._legend(400, 400) is painter._legend(400, 400)
    np.testing.assert_array_equal(first[-40:], second[-40:])  # the same colour bar below
    second[-1] = 0  # a picture handed out is its own: the cached bar is not touched
    np.testing.assert_array_equal(painter.draw(image, amap, 0.1, False), first)
    for side in range(400, 400 + 3 * 8):  # a folder of many sizes keeps a bounded number of bars
        painter._legend(side, side)
    assert len(painter._legends) <= 8


def test_old_artifact_falls_back_to_per_image_scale_with_one_warning(caplog):
    meta = _meta(None)
    with caplog.at_level(logging.WARNING, logger="dualkd_edge"):
        painters = [OverlayPainter.for_model(meta, "old-model.onnx") for _ in range(3)]
    warnings = [r for r in caplog.records if "no anomaly-map statistics" in r.getMessage()]
    assert len(warnings) == 1 and "old-model.onnx" in warnings[0].getMessage()
    painter = painters[0]
    amap = np.linspace(0.2, 0.3, 64 * 64, dtype=np.float32).reshape(64, 64)
    positions = painter.scale.positions(amap)
    assert positions.min() == 0 and positions.max() == 1  # today's stretch: own min..max
    assert painter.defect_mask(amap) is None
    over = painter.draw(np.zeros((64, 64, 3), np.uint8), amap, 0.2, False)
    assert over.ndim == 3
    with pytest.raises(UserError, match="--save-masks: old-model.onnx has no anomaly-map statistics"):
        painter.require_calibrated("--save-masks", "old-model.onnx")
    # and the metadata of such an artifact still loads
    d = _meta(None).to_dict()
    d["calibration"].pop("anomaly_map")
    assert ArtifactMetadata.from_dict(d).calibration.anomaly_map is None


def test_fps_meter_counts_frames_and_has_no_rate_for_one_frame():
    from dualkd_edge.stream.pipeline import FpsMeter

    meter = FpsMeter(window=3)
    assert meter.tick(10.0, 4) is None  # the first batch alone: no rate, not "0.0 FPS"
    assert meter.tick(11.0, 4) == pytest.approx(4.0)  # 4 frames per second, not 1 batch per second
    assert meter.tick(12.0, 2) == pytest.approx(3.0)
    assert meter.tick(13.0, 2) == pytest.approx(2.0)  # window of 3 batches: (2 + 2) / 2 s
