"""Teacher weights in the official DINOv2 layout and in timm's layout (files written here)."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, needs_torch, run_cli

pytestmark = needs_torch


def _official_layout(timm_sd: dict) -> dict:
    """Rewrite a timm DINOv2-with-registers state dict into the keys of dinov2_vits14_reg4_pretrain.pth:
    register_tokens, mask_token, and a pos_embed whose first entry is the class token's position."""
    import torch

    sd = {k: v.clone() for k, v in timm_sd.items()}
    pos = sd.pop("pos_embed")
    cls_pos = torch.randn(1, 1, pos.shape[-1]) * 0.02
    sd["pos_embed"] = torch.cat([cls_pos, pos], dim=1)
    sd["cls_token"] = sd["cls_token"] - cls_pos[:, 0]  # timm folds the class position into the token
    sd["register_tokens"] = sd.pop("reg_token")
    sd["mask_token"] = torch.zeros(1, pos.shape[-1])
    return sd


class _NotATensor:
    """An arbitrary pickled object: weights_only loading must refuse it."""


@pytest.fixture(scope="module")
def reference_teacher():
    import torch

    from dualkd_edge.model.teacher import build_dinov2_vit
    from dualkd_edge.presets import get_preset

    torch.manual_seed(123)
    preset = get_preset("tiny")
    vit = build_dinov2_vit(preset).eval()
    return preset, vit


def _teacher_outputs(vit, preset):
    import torch

    from dualkd_edge.model.teacher import DinoTeacher

    t = DinoTeacher(preset)
    t.vit.load_state_dict(vit.state_dict())
    x = torch.randn(2, 3, preset.img_size, preset.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return t(x)


def _load_into_fresh(path, preset):
    import torch

    from dualkd_edge.model.teacher import DinoTeacher
    from dualkd_edge.model.weights import load_teacher_weights

    t = DinoTeacher(preset)
    origin = load_teacher_weights(t.vit, str(path), preset)
    assert origin.pretrained and origin.origin.endswith(path.name)
    x = torch.randn(2, 3, preset.img_size, preset.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return t(x)


def _assert_same(a, b):
    import torch

    for ga, gb in zip(a[0], b[0]):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[2], b[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,suffix", [("timm", ".safetensors"), ("timm", ".pth"), ("official", ".pth")])
def test_weight_layouts_give_identical_teacher_outputs(tmp_path, reference_teacher, layout, suffix):
    import torch
    from safetensors.torch import save_file

    preset, vit = reference_teacher
    sd = {k: v.contiguous() for k, v in vit.state_dict().items()}
    if layout == "official":
        sd = _official_layout(sd)
    path = tmp_path / f"teacher_{layout}{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    _assert_same(_teacher_outputs(vit, preset), _load_into_fresh(path, preset))


def test_official_layout_at_another_resolution_is_resampled(tmp_path):
    """Official checkpoints are trained at 518 px: the position embedding is resampled to the preset."""
    from dataclasses import replace

    import torch

    from dualkd_edge.model.teacher import DinoTeacher
    from dualkd_edge.model.weights import load_teacher_weights
    from dualkd_edge.presets import get_preset

    preset = get_preset("tiny")
    big = replace(preset, img_size=preset.img_size * 2)
    src = DinoTeacher(big).vit
    path = tmp_path / "big.pth"
    torch.save(_official_layout(src.state_dict()), str(path))
    t = DinoTeacher(preset)
    load_teacher_weights(t.vit, str(path), preset)
    torch.testing.assert_close(t.vit.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert t.vit.pos_embed.shape[1] == preset.grid**2


def test_pickled_objects_are_refused(tmp_path):
    import torch

    from dualkd_edge.errors import UserError
    from dualkd_edge.model.teacher import DinoTeacher
    from dualkd_edge.model.weights import load_teacher_weights
    from dualkd_edge.presets import get_preset

    path = tmp_path / "evil.pth"
    torch.save({"x": _NotATensor()}, str(path))
    with pytest.raises(UserError, match="not a readable weights file"):
        load_teacher_weights(DinoTeacher(get_preset("tiny")).vit, str(path), get_preset("tiny"))


def test_mismatched_weights_are_a_one_line_error(tmp_path, small_dataset):
    from dataclasses import replace

    import torch

    from dualkd_edge.model.teacher import DinoTeacher
    from dualkd_edge.presets import Preset, get_preset

    wide: Preset = replace(get_preset("tiny"), teacher_dim=96, teacher_heads=3)
    path = tmp_path / "wrong.pth"
    torch.save(DinoTeacher(wide).vit.state_dict(), str(path))
    proc = run_cli("train", small_dataset, "--out", tmp_path / "run", "--weights", path, "--steps", "1")
    assert_one_line_error(proc, "--weights", "does not fit preset 'tiny'")


def test_hub_for_tiny_is_a_clear_error(tmp_path, small_dataset):
    proc = run_cli("train", small_dataset, "--out", tmp_path / "run", "--weights", "hub", "--steps", "1")
    assert_one_line_error(proc, "--weights hub", "no published weights")
