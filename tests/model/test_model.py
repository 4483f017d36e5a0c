"""The dual-student model: shapes, frozen teacher, losses, Noisy-OR formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import calibrated_probability, needs_torch, noisy_or, noisy_or_nll

from dualkd_edge.scoring import robust_sigma

pytestmark = needs_torch


def test_noisy_or_formulas_on_hand_computed_values():
    # p = sigmoid((s - mu)/sigma - beta): s = mu + 3 sigma with beta 3 -> sigmoid(0) = 0.5
    assert calibrated_probability(1.3, mu=1.0, sigma=0.1, beta=3.0) == pytest.approx(0.5)
    assert calibrated_probability(1.0, mu=1.0, sigma=0.1, beta=3.0) == pytest.approx(1 / (1 + math.exp(3)))
    # P = 1 - (1 - 0.5)(1 - 0.2) = 0.6; either branch alone raises the alarm
    assert noisy_or(0.5, 0.2) == pytest.approx(0.6)
    assert noisy_or(0.0, 0.9) == pytest.approx(0.9)
    assert noisy_or(0.9, 0.0) == pytest.approx(0.9)
    # -log[(1-p_L)(1-p_S)] with p_k = 1 - exp(-d_k / tau_k) equals d_L/tau_L + d_S/tau_S
    d_l, d_s, t_l, t_s = 0.3, 0.2, 0.5, 2.0
    p_l, p_s = 1 - math.exp(-d_l / t_l), 1 - math.exp(-d_s / t_s)
    assert noisy_or_nll(d_l, d_s, t_l, t_s) == pytest.approx(-math.log((1 - p_l) * (1 - p_s)))
    assert robust_sigma(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.05)


def test_torch_scoring_matches_numpy_formulas():
    import torch

    from dualkd_edge.metadata import BranchCalibration, Calibration
    from dualkd_edge.model.dual_student import DualOutputs, NoisyOrScoring
    from dualkd_edge.presets import get_preset

    p = get_preset("tiny")
    cal = Calibration(BranchCalibration(0.2, 0.05), BranchCalibration(0.1, 0.02), beta=3.0)
    scoring = NoisyOrScoring(p, cal)
    g = torch.Generator().manual_seed(0)
    n = p.grid**2
    out = DualOutputs([torch.randn(2, n, 192, generator=g) for _ in range(2)],
                      [torch.randn(2, n, 192, generator=g) for _ in range(2)],
                      torch.randn(2, 192, generator=g), torch.randn(2, 192, generator=g))
    res = scoring(out)
    assert res["anomaly_map"].shape == (2, 1, p.img_size, p.img_size)
    local, semantic = res["local_score"].numpy(), res["semantic_score"].numpy()
    expected = noisy_or(calibrated_probability(local, 0.2, 0.05, 3.0), calibrated_probability(semantic, 0.1, 0.02, 3.0))
    np.testing.assert_allclose(res["score"].numpy(), expected, rtol=1e-5)
    # local score = mean of the top 1% of the (reduced) map, so between the map's mean and max
    amap = res["anomaly_map"].numpy()
    assert np.all(local <= amap.reshape(2, -1).max(1) + 1e-6)
    assert np.all(local >= amap.reshape(2, -1).mean(1))


def test_module_shapes_tiny():
    import torch

    from dualkd_edge.model.dual_student import DualStudentModel
    from dualkd_edge.presets import get_preset

    p = get_preset("tiny")
    model = DualStudentModel(p).eval()
    x = torch.randn(3, 3, p.img_size, p.img_size)
    groups, fused, cls = model.teacher(x)
    n = p.grid**2
    assert len(groups) == len(p.layer_groups)
    assert all(g.shape == (3, n, p.teacher_dim) for g in groups)
    assert fused.shape == (3, n, p.teacher_dim)
    assert cls.shape == (3, p.teacher_dim)
    recon = model.ed_student(fused)
    assert [r.shape for r in recon] == [g.shape for g in groups]
    assert model.ee_student(x).shape == (3, p.teacher_dim)
    out = model(x)
    assert out.teacher_cls.shape == out.student_cls.shape == (3, p.teacher_dim)


def test_bottleneck_noise_only_in_training():
    import torch

    from dualkd_edge.model.dual_student import DualStudentModel
    from dualkd_edge.presets import get_preset

    model = DualStudentModel(get_preset("tiny"))
    x = torch.randn(1, 3, 112, 112)
    model.eval()
    a, b = model(x).student_groups[0], model(x).student_groups[0]
    assert torch.equal(a, b)
    model.train()
    c, d = model(x).student_groups[0], model(x).student_groups[0]
    assert not torch.equal(c, d)


def test_hard_mining_scales_easy_token_gradients():
    import torch

    from dualkd_edge.train.losses import loose_cosine_loss

    torch.manual_seed(0)
    t = torch.randn(1, 10, 8)
    s = t.clone()
    s[0, 5:] = torch.randn(5, 8)  # tokens 5..9 reconstruct badly (hard), 0..4 well (easy)
    s[0, :5] += 0.01 * torch.randn(5, 8)
    s1 = s.clone().requires_grad_(True)
    loose_cosine_loss(t, s1, easy_share=0.0).backward()
    s2 = s.clone().requires_grad_(True)
    loose_cosine_loss(t, s2, easy_share=0.5).backward()
    ratio = s2.grad.norm(dim=-1) / s1.grad.norm(dim=-1)
    np.testing.assert_allclose(ratio[0, :5].numpy(), 0.1, rtol=1e-4)
    np.testing.assert_allclose(ratio[0, 5:].numpy(), 1.0, rtol=1e-4)


def test_schedules():
    from dualkd_edge.train.losses import easy_share_at, lr_at

    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)
    # absolute ramp (Dinomaly: 1000 steps), flat afterwards
    assert easy_share_at(0, 1000, 0.9) == 0
    assert easy_share_at(500, 1000, 0.9) == pytest.approx(0.45)
    assert easy_share_at(1000, 1000, 0.9) == pytest.approx(0.9)
    assert easy_share_at(5000, 1000, 0.9) == pytest.approx(0.9)
