"""Atomic artifact writes and image decoding shared by every stage."""

from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest

from dualkd_edge.fileio import (
    atomic_path,
    read_image,
    read_mask,
    write_bytes_atomic,
    write_json_atomic,
)


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "model.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["model.json"]


def test_failed_write_keeps_the_old_artifact(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_new_artifacts_follow_the_umask_and_replaced_ones_keep_their_mode(tmp_path):
    # mkstemp makes 0o600 files; an engine another user (a systemd service) cannot read is a bug.
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.bin"
    write_bytes_atomic(fresh, b"x")
    assert mode_of(fresh) == 0o666 & ~umask
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    write_bytes_atomic(kept, b"new")
    assert mode_of(kept) == 0o640 and kept.read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["gray", "bgra", "gray16", "bgr"])
def test_read_image_gives_bgr_uint8_for_every_pixel_format(tmp_path, kind):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    img = {"gray": base, "bgra": np.dstack([base] * 4), "gray16": base.astype(np.uint16) * 257,
           "bgr": np.dstack([base] * 3)}[kind]
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), img)
    out = read_image(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 1], base)


def test_unreadable_images_and_masks_are_none_or_bool(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    assert read_image(tmp_path / "empty.png") is None
    assert read_image(tmp_path / "text.png") is None
    assert read_image(tmp_path / "missing.png") is None
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    got = read_mask(tmp_path / "m.png")
    assert got.dtype == bool and got.sum() == 4
