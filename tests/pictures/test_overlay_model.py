"""The calibrated heat-map scale with a really trained model: good parts stay cool, painted defects
turn red where they are. Random-init teacher (docs/design.md section 3): a weak model, so the checks
allow what such a model gets wrong and say so."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import needs_torch

pytestmark = [needs_torch, pytest.mark.slow]

PATCH_PX = 16  # one 14-px patch of the 112-px model input, in the 128-px generated images


@pytest.fixture(scope="module")
def model(separating_run):
    from dualkd_edge import Detector
    from dualkd_edge.pictures.overlay import OverlayPainter

    run, _ = separating_run
    det = Detector.load(run, device="cpu")
    return det, OverlayPainter.for_model(det.meta, str(run), det.threshold)


def test_good_parts_stay_out_of_the_red(model):
    from dualkd_edge.data.synth import PART_KINDS, render_part

    det, painter = model
    assert painter.scale.calibrated
    goods = [render_part(kind, 200_000 + i)[0] for i in range(20) for kind in PART_KINDS]  # never trained on
    preds = det.predict(goods)
    red_on = [p for p in preds if painter.red_pixels(p.anomaly_map).any()]
    # A good part the model passes is never painted red (before: every map was stretched to its own
    # maximum, so every good part had red pixels) ...
    assert all(p.is_anomaly for p in red_on), [p.score for p in red_on]
    # ... and this weak model's false alarms, the only red good parts, are few.
    assert len(red_on) <= 0.1 * len(goods)


def test_painted_defects_are_red_inside_their_region(model):
    from dualkd_edge.data.synth import PART_KINDS, render_part

    det, painter = model
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * PATCH_PX + 1, 2 * PATCH_PX + 1))
    with_red = 0
    cases = [render_part(kind, 300_000 + i, defect=d) for kind in PART_KINDS for d in ("spot", "scratch", "missing")
             for i in range(4)]
    for (image, mask), p in zip(cases, det.predict([c[0] for c in cases])):
        red = painter.red_pixels(p.anomaly_map)
        # the map's resolution is one patch: red may spill that far beyond the painted defect, no further
        region = cv2.dilate(mask, near) > 0
        assert not red[~region].any()
        with_red += bool(red.any())
        outline = painter.defect_mask(p.anomaly_map) > 0
        if red.any():
            assert outline[red].all()  # red lies inside the outline
    assert with_red >= len(cases) // 4, with_red


def test_overlay_of_a_scratch_shows_red_inside_an_outline(model):
    from dualkd_edge.data.synth import render_part
    from dualkd_edge.pictures.overlay import BANNER_FRACTION

    det, painter = model
    image, mask = render_part("washer", 300_000, defect="scratch")
    p = det.predict([image])[0]
    over = painter.draw(image, p.anomaly_map, p.score, p.is_anomaly)  # 128 px: enlarged 3x
    banner = round(BANNER_FRACTION * 384)
    body = over[banner:banner + 384]
    big_mask = cv2.resize(mask, (384, 384), interpolation=cv2.INTER_NEAREST) > 0
    b, g, r = (body[big_mask].astype(int)).T
    assert np.mean((r > g + 40) & (r > b + 40)) > 0.2  # the scratch shows red-dominated pixels
    white = np.all(body >= 250, axis=2)
    assert white.any()  # an outline is drawn
