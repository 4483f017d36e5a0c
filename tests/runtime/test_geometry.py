"""Resize and centre crop (issue 19): one geometry for training, calibration, evaluation, every
export and the maps mapped back onto the image."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from helpers import needs_torch

from dualkd_edge.metadata import ArtifactMetadata, InputSpec
from dualkd_edge.preprocess import (
    map_to_image,
    prepare_batch,
    scored_box,
    to_model_view,
)

CROP_SPEC = InputSpec(height=112, width=112, resize=128, crop=112)


def test_dinomaly_geometry_448_392():
    spec = InputSpec(height=392, width=392, resize=448, crop=392)
    assert spec.resize_hw == (448, 448)
    # a 448x448 image: the model sees [28, 420) in both directions
    assert scored_box(spec, 448, 448) == (28, 420, 28, 420)
    # a 900x1200 frame (not square): the same share of each side, rounded to pixels
    assert scored_box(spec, 900, 1200) == (56, 844, 75, 1125)


def test_model_view_and_map_back_are_aligned():
    """A mark at a place in the image comes back at that place: image -> model view -> map -> image."""
    h, w = 210, 300
    img = np.full((h, w, 3), 40, np.uint8)
    cv2.rectangle(img, (180, 60), (219, 99), (255, 255, 255), -1)  # x 180..219, y 60..99
    view = to_model_view(img, CROP_SPEC)
    assert view.shape == (112, 112, 3)
    # The model's map is at the view's resolution; use the view's brightness as a stand-in map.
    amap = view[..., 0].astype(np.float32) / 255.0
    back = map_to_image(amap, CROP_SPEC, h, w)
    assert back.shape == (h, w) and back.dtype == np.float32
    y0, y1, x0, x1 = scored_box(CROP_SPEC, h, w)
    assert (y0, y1, x0, x1) == (13, 197, 19, 281)
    # outside the crop: the smallest value of the scored part (reads as normal)
    assert np.all(back[:y0] == back[y0:y1, x0:x1].min()) and np.all(back[:, x1:] == back[y0:y1, x0:x1].min())
    mark = back > 0.5
    truth = np.zeros((h, w), bool)
    truth[60:100, 180:220] = True
    assert (mark & truth).sum() / (mark | truth).sum() > 0.85
    ys, xs = np.nonzero(mark)
    assert abs(ys.mean() - 79.5) < 1.0 and abs(xs.mean() - 199.5) < 1.0


def test_prepare_batch_crops_for_both_input_types():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)
    uint8 = prepare_batch([img], replace(CROP_SPEC, dtype="uint8"))
    floats = prepare_batch([img], CROP_SPEC)
    resized = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(uint8[0], resized[8:120, 8:120])
    assert floats.shape == (1, 3, 112, 112)
    np.testing.assert_allclose(floats[0, 0], (resized[8:120, 8:120, 2] / 255.0 - 0.485) / 0.229, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float", "uint8"])
def test_a_capture_threads_model_input_is_the_batch_prepare_makes(dtype):
    """Streams make each frame's input on its capture thread (model_input) and stack them; the
    batch must be the one prepare_batch makes from the same images, value for value."""
    from dualkd_edge.preprocess import model_input, stack_inputs

    rng = np.random.default_rng(1)
    spec = replace(CROP_SPEC, dtype=dtype)
    images = [rng.integers(0, 255, (150 + 7 * k, 170, 3), dtype=np.uint8) for k in range(3)]
    for count in (1, 3):
        stacked = stack_inputs([model_input(img, spec) for img in images[:count]])
        expected = prepare_batch(images[:count], spec)
        assert stacked.dtype == expected.dtype and stacked.flags.c_contiguous
        np.testing.assert_array_equal(stacked, expected)


def test_artifacts_without_geometry_fields_keep_the_old_behaviour():
    old_input = {"height": 112, "width": 112, "dtype": "float", "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225], "color": "RGB", "layout": "NCHW", "batch": 1}
    spec = InputSpec.from_dict(old_input)
    assert spec.resize is None and spec.crop is None and spec.resize_hw == (112, 112)
    img = np.random.default_rng(1).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_model_view(img, spec), cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA))
    amap = np.random.default_rng(2).random((112, 112)).astype(np.float32)
    np.testing.assert_array_equal(map_to_image(amap, spec, 90, 200),
                                  cv2.resize(amap, (200, 90), interpolation=cv2.INTER_LINEAR))
    assert scored_box(spec, 90, 200) == (0, 90, 0, 200)


def test_old_preset_and_metadata_load_with_defaults():
    from dualkd_edge.errors import UserError
    from dualkd_edge.presets import Preset, get_preset

    old = get_preset("tiny").to_dict()
    for key in ("resize", "crop", "semantic_centring", "ee_layerscale", "default_steps", "hard_mining_ramp_steps"):
        old.pop(key)
    preset = Preset.from_dict(old)
    # the runs made before: centred target, no LayerScale in the class-token student, no crop
    assert preset.semantic_centring is True and preset.ee_layerscale is None
    assert preset.input_spec().crop is None
    meta = ArtifactMetadata.from_dict({
        "schema_version": 1, "preset": old, "input": {"height": 112, "width": 112, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "calibration": {"local": {"mu": 0.1, "sigma": 0.01}, "semantic": {"mu": 0.2, "sigma": 0.02}},
        "teacher_weights": {"origin": "none", "pretrained": False}})
    assert meta.input.crop is None and meta.schema_version == 1
    # written back (a re-tuned threshold, an export) it is the current schema: an older reader then asks to upgrade
    assert meta.to_dict()["schema_version"] == 3
    newer = dict(meta.to_dict(), schema_version=4)
    with pytest.raises(UserError, match="newer than this dualkd-edge understands"):
        ArtifactMetadata.from_dict(newer, "m.onnx")


def test_preset_geometry_is_checked():
    from dualkd_edge.errors import UserError
    from dualkd_edge.presets import get_preset

    tiny = get_preset("tiny")
    with pytest.raises(UserError, match="crop 100 must equal the input size 112"):
        replace(tiny, resize=128, crop=100)
    with pytest.raises(UserError, match="needs resize >= 112"):
        replace(tiny, resize=100, crop=112)
    paper = get_preset("paper-b392")
    assert (paper.resize, paper.crop, paper.img_size) == (448, 392, 392)
    assert paper.input_spec().resize_hw == (448, 448)


# --- a trained model with a crop, through export -------------------------------------------------


@pytest.fixture(scope="module")
def crop_run(small_dataset, tmp_path_factory):
    from dualkd_edge.presets import get_preset
    from dualkd_edge.train.loop import TrainConfig, train

    preset = replace(get_preset("tiny"), name="tiny-crop", resize=128, crop=112)
    out = tmp_path_factory.mktemp("crop") / "run"
    train(TrainConfig(data=[small_dataset], out=out, preset=preset, weights="none", steps=4, batch_size=4,
                      seed=0, progress=False))
    return out


def _frames():
    from dualkd_edge.data.synth import render_part

    frames = []
    for i, size in enumerate(((160, 240), (128, 128), (300, 200))):
        img = render_part("washer" if i % 2 else "bracket", 900 + i, defect="spot" if i == 2 else None)[0]
        frames.append(cv2.resize(img, size[::-1]))
    return frames


@needs_torch
def test_crop_round_trip_through_export(crop_run, tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    assert read_metadata(crop_run).input.resize == 128 and read_metadata(crop_run).input.crop == 112
    frames = _frames()
    ref = Detector.load(crop_run, device="cpu").predict(frames)
    for dtype, batch in (("float", "dynamic"), ("uint8", "1")):
        path = export_onnx(crop_run, tmp_path / f"{dtype}.onnx", ExportOptions(batch=batch, input_dtype=dtype)).path
        det = Detector.load(path)
        assert (det.meta.input.resize, det.meta.input.crop, det.meta.input.dtype) == (128, 112, dtype)
        for r, g, frame in zip(ref, det.predict(frames), frames):
            assert g.anomaly_map.shape == frame.shape[:2]
            assert abs(r.score - g.score) < 2e-3 and abs(r.score_logit - g.score_logit) < 1.6e-2
            assert abs(r.local_score - g.local_score) < 1e-4 and abs(r.semantic_score - g.semantic_score) < 1e-4
            assert np.abs(r.anomaly_map - g.anomaly_map).max() < 1e-4
            y0, y1, x0, x1 = scored_box(det.meta.input, *frame.shape[:2])
            inside = g.anomaly_map[y0:y1, x0:x1]
            assert y0 > 0 and x0 > 0 and np.all(g.anomaly_map[:y0] == inside.min())


@needs_torch
def test_crop_model_evaluates_only_the_scored_part(crop_run, small_dataset):
    from dualkd_edge import Detector
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.evaluation.evaluate_splits import evaluate

    with Detector.load(crop_run, device="cpu") as det:
        report = evaluate(det, discover_all([small_dataset]), progress=False)
    for row in report.rows.values():
        assert 0.0 <= row["pixel_auroc"] <= 1.0 and 0.0 <= row["image_auroc"] <= 1.0
