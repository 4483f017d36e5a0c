"""Method fidelity (issue 19): semantic centre, training length, optimiser and initialisation,
the class-token student's recipe, and score_logit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import needs_torch, noisy_or

from dualkd_edge.metadata import BranchCalibration, Calibration
from dualkd_edge.scoring import noisy_or_logit, probability_threshold

# --- score_logit: numpy side (torch-free) -------------------------------------------------------


def test_noisy_or_logit_is_minus_log_of_one_minus_p():
    cal = Calibration(BranchCalibration(0.2, 0.05), BranchCalibration(0.1, 0.02), beta=3.0)
    local = np.array([0.1, 0.2, 0.35, 0.5])
    semantic = np.array([0.05, 0.12, 0.1, 0.3])
    z_l = (local - 0.2) / 0.05 - 3.0
    z_s = (semantic - 0.1) / 0.02 - 3.0
    p = noisy_or(1 / (1 + np.exp(-z_l)), 1 / (1 + np.exp(-z_s)))
    np.testing.assert_allclose(noisy_or_logit(local, semantic, cal), -np.log1p(-p), rtol=1e-12)
    # far beyond float32's saturation of P and far below it: finite, no overflow
    huge = noisy_or_logit(np.array([1e3]), np.array([0.1]), cal)
    assert huge[0] == pytest.approx((1e3 - 0.2) / 0.05 - 3.0 + math.log1p(math.exp(-3.0)), rel=1e-12)
    tiny = noisy_or_logit(np.array([-1e3]), np.array([-1e3]), cal)
    assert 0.0 <= tiny[0] < 1e-300 or tiny[0] == 0.0


def test_probability_threshold_flags_what_the_logit_threshold_flags():
    logits = np.array([0.5, 2.0, 18.0, 25.0, 40.0])
    scores = (-np.expm1(-logits)).astype(np.float32).astype(np.float64)  # float32 P saturates above ~17
    assert scores[2] == scores[3] == scores[4] == 1.0
    t = probability_threshold(2.0, logits, scores)
    assert t == pytest.approx(-math.expm1(-2.0), rel=1e-6)
    assert np.array_equal(scores >= t, logits >= 2.0)
    # a threshold inside the saturated range: every saturated image is flagged (they cannot be told apart)
    t = probability_threshold(25.0, logits, scores)
    assert t == pytest.approx(-math.expm1(-25.0), rel=1e-12)
    assert list(scores >= t) == [False, False, True, True, True]


def test_eval_ranks_by_score_logit_where_scores_saturate():
    from dualkd_edge.evaluation.evaluate_splits import ImageRecord, image_metrics

    # four anomalies and one normal image all saturate to score 1.0; only score_logit orders them
    logits = [0.1, 0.2, 0.3, 20.0, 30.0, 40.0, 50.0, 19.0]
    labels = [0, 0, 0, 1, 1, 1, 1, 0]
    records = [ImageRecord(f"{i}.png", "c", "d", y, float(-np.expm1(-lg)) if lg < 17 else 1.0, 0.0, 0.0, False, lg)
               for i, (lg, y) in enumerate(zip(logits, labels))]
    m = image_metrics(records)
    assert m["image_auroc"] == 1.0 and m["image_ap"] == 1.0 and m["image_f1_max"] == 1.0
    assert m["f1_threshold"] == pytest.approx(-math.expm1(-20.0), rel=1e-12)  # for "score_logit >= 20"


# --- torch side ------------------------------------------------------------------------------


@needs_torch
def test_graph_score_logit_matches_numpy_and_does_not_saturate():
    import torch

    from dualkd_edge.model.dual_student import DualOutputs, NoisyOrScoring
    from dualkd_edge.presets import get_preset

    p = get_preset("tiny")
    g = torch.Generator().manual_seed(0)
    n = p.grid**2
    out = DualOutputs([torch.randn(6, n, 192, generator=g) for _ in range(2)],
                      [torch.randn(6, n, 192, generator=g) for _ in range(2)],
                      torch.randn(6, 192, generator=g), torch.randn(6, 192, generator=g))
    for cal in (Calibration(BranchCalibration(1.0, 0.05), BranchCalibration(1.0, 0.2), beta=3.0),
                # sigma so small that every z - beta is in the hundreds: P is exactly 1.0 in float32
                Calibration(BranchCalibration(0.0, 1e-3), BranchCalibration(0.0, 1e-3), beta=3.0)):
        res = NoisyOrScoring(p, cal)(out)
        local, semantic = res["local_score"].numpy(), res["semantic_score"].numpy()
        np.testing.assert_allclose(res["score_logit"].numpy(), noisy_or_logit(local, semantic, cal), rtol=1e-5)
    assert np.all(res["score"].numpy() == 1.0)
    logit = res["score_logit"].numpy()
    assert np.all(np.isfinite(logit)) and len(np.unique(logit)) == len(logit) and logit.min() > 100


@needs_torch
def test_semantic_centre_is_the_mean_over_all_categories():
    import torch

    from dualkd_edge.model.dual_student import DualStudentModel
    from dualkd_edge.preprocess import normalize_nhwc_bgr
    from dualkd_edge.presets import get_preset
    from dualkd_edge.train.calibrate import teacher_class_token_mean

    torch.manual_seed(0)
    preset = get_preset("tiny")
    model = DualStudentModel(preset).eval()
    rng = np.random.default_rng(0)
    # ordered by category as the training list is: 520 dark parts first, then 100 bright ones
    dark = rng.integers(0, 60, (520, 112, 112, 3), dtype=np.uint8)
    bright = rng.integers(180, 255, (100, 112, 112, 3), dtype=np.uint8)
    images = np.concatenate([dark, bright])
    centre = teacher_class_token_mean(model, images, batch_size=64)
    with torch.no_grad():
        tokens = torch.cat([model.teacher(torch.from_numpy(normalize_nhwc_bgr(images[i:i + 100], preset.mean,
                                                                              preset.std)))[2]
                            for i in range(0, len(images), 100)]).double()
    torch.testing.assert_close(centre.double(), tokens.mean(0), rtol=1e-5, atol=1e-6)
    # a prefix of the list (what a cap on the number of images did) is the first category's centre
    first_512 = tokens[:512].mean(0)
    assert (centre.double() - first_512).norm() > 50 * (centre.double() - tokens.mean(0)).norm()


@needs_torch
def test_semantic_centring_is_a_preset_field(small_dataset, tmp_path):
    import torch

    from dualkd_edge.model.checkpoint import load_run
    from dualkd_edge.train.loop import TrainConfig, train

    for centring in (True, False):
        out = tmp_path / f"run_{centring}"
        train(TrainConfig(data=[small_dataset], out=out, steps=2, batch_size=4, progress=False,
                          semantic_centring=centring))
        model, meta = load_run(out)
        assert meta.preset["semantic_centring"] is centring
        assert bool(torch.any(model.semantic_centre != 0)) is centring


@needs_torch
def test_trained_run_records_its_recipe(trained_run):
    meta = json.loads((trained_run / "run.json").read_text())
    # tiny ramps hard mining over 50 steps; the 12-step run clips the ramp to its length
    assert meta["training"]["hard_mining_ramp_steps"] == 12
    opt = meta["training"]["optimizer"]
    assert opt["name"].startswith("StableAdamW") and opt["ed"]["eps"] == 1e-10
    assert opt["ed"]["lr"] == 2e-3 and opt["ee"]["weight_decay"] == 0.05
    assert meta["input"]["resize"] is None and meta["input"]["crop"] is None


@needs_torch
def test_default_steps_come_from_the_preset(tmp_path):
    from dualkd_edge.presets import PRESETS
    from dualkd_edge.train.loop import TrainConfig, planned_run

    assert {n: p.default_steps for n, p in PRESETS.items()} == {"tiny": 500, "edge-s224": 5000, "paper-b392": 10000}
    for name, p in PRESETS.items():
        assert planned_run(TrainConfig(data=[], out=tmp_path / "x", preset=name), tmp_path / "x") == (p, p.default_steps)
        assert planned_run(TrainConfig(data=[], out=tmp_path / "x", preset=name, steps=7), tmp_path / "x")[1] == 7


@needs_torch
def test_stable_adamw_step_matches_the_reference_formula():
    """StableAdamW (Wortsman et al. 2023) written out: Adam moments with bias correction, the step
    size divided by max(1, RMS(g / sqrt(v_hat))) per tensor, decoupled weight decay at that step size."""
    import torch

    from dualkd_edge.train.optim import stable_adamw

    lr, wd, eps, (b1, b2) = 1e-2, 0.1, 1e-10, (0.9, 0.999)
    p0 = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(3, 4)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=gen, dtype=torch.float64) * s for s in (1.0, 0.5, 40.0, 1.0)]

    param = torch.nn.Parameter(p0.clone())
    opt = stable_adamw([{"params": [param], "lr": lr, "weight_decay": wd, "eps": eps, "student": "ed"}])
    m = torch.zeros_like(p0)
    v = torch.zeros_like(p0)
    ref = p0.clone()
    rms_seen = []
    for t, g in enumerate(grads, start=1):
        param.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        rms = float(torch.sqrt(torch.mean(g * g / torch.clamp(v_hat, min=eps**2))))
        rms_seen.append(rms)
        step_lr = lr / max(1.0, rms)
        ref = ref * (1 - step_lr * wd) - step_lr * m_hat / (torch.sqrt(v_hat) + eps)
        torch.testing.assert_close(param.detach(), ref, rtol=1e-10, atol=1e-12)
    assert max(rms_seen) > 1.5  # the gradient spike at step 3 exercised the update clipping


@needs_torch
def test_decoder_init_layerscale_and_parameter_groups():
    import torch

    from dualkd_edge.model.dual_student import DualStudentModel
    from dualkd_edge.presets import get_preset
    from dualkd_edge.train.losses import lr_at
    from dualkd_edge.train.optim import (
        StudentRecipe,
        set_learning_rates,
        stable_adamw,
        student_param_groups,
    )

    torch.manual_seed(0)
    model = DualStudentModel(get_preset("tiny"))
    linears = [m for m in model.ed_student.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.detach().flatten() for m in linears])
    assert len(linears) == 2 + 4 * 4  # bottleneck 2, each decoder block qkv, proj and 2 MLP layers
    assert weights.abs().max() <= 0.03 + 1e-7  # truncated at 3 std
    assert 0.0095 < float(weights.detach().std()) < 0.0102  # std of N(0, 0.01) cut at 3 std: 0.00986
    assert all(torch.all(m.bias == 0) for m in linears)
    assert all(torch.all(b.ls1.gamma == 0.1) for b in model.ee_student.vit.blocks)

    ed = StudentRecipe(2e-3, 1e-4, 100, 0.1, 1e-10)
    ee = StudentRecipe(5e-4, 0.05, 1000, 1.0, 1e-8)
    groups = student_param_groups(model, ed, ee)
    assert sum(len(g["params"]) for g in groups) == len(list(model.student_parameters()))
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert all(by_id[id(p)]["weight_decay"] == 1e-4 for p in model.ed_student.parameters())
    for name, p in model.ee_student.named_parameters():
        no_decay = p.ndim <= 1 or "token" in name or "pos_embed" in name
        assert by_id[id(p)]["weight_decay"] == (0.0 if no_decay else 0.05), name
    opt = stable_adamw(groups)
    set_learning_rates(opt, 50, 10000, {"ed": ed, "ee": ee})
    lrs = {g["student"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"ed": lr_at(50, 10000, 2e-3, 100), "ee": lr_at(50, 10000, 5e-4, 1000)}


@needs_torch
def test_each_student_is_clipped_on_its_own():
    import torch

    from dualkd_edge.model.dual_student import DualStudentModel
    from dualkd_edge.presets import get_preset
    from dualkd_edge.train.optim import StudentRecipe, clip_each_student

    model = DualStudentModel(get_preset("tiny"))
    for p in model.ed_student.parameters():
        p.grad = torch.full_like(p, 1.0)  # norm in the thousands
    for p in model.ee_student.parameters():
        p.grad = torch.full_like(p, 1e-4)
    ee_before = torch.cat([p.grad.flatten() for p in model.ee_student.parameters()]).clone()
    assert float(ee_before.norm()) < 1.0
    recipes = {"ed": StudentRecipe(2e-3, 1e-4, 1, 0.1, 1e-10), "ee": StudentRecipe(5e-4, 0.05, 1, 1.0, 1e-8)}
    clip_each_student(model, recipes)
    ed_norm = torch.cat([p.grad.flatten() for p in model.ed_student.parameters()]).norm()
    assert float(ed_norm) == pytest.approx(0.1, rel=1e-3)
    # one global clip at 0.1 would have shrunk the class-token student's small gradients too
    assert torch.equal(torch.cat([p.grad.flatten() for p in model.ee_student.parameters()]), ee_before)


@needs_torch
def test_onnx_without_score_logit_gets_it_on_the_host(trained_run, tmp_path):
    """A file exported before score_logit existed: the torch-free runtime computes it from the branch
    scores and the metadata's calibration, the same as the graph does."""
    import cv2
    import onnx
    from torchless import run_torchless

    from dualkd_edge import Detector
    from dualkd_edge.data.synth import render_part
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    new = export_onnx(trained_run, tmp_path / "new.onnx", ExportOptions(batch="dynamic")).path
    model = onnx.load(str(new))
    kept = [o for o in model.graph.output if o.name != "score_logit"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        cv2.imwrite(str(images / f"{i}.png"), render_part("washer" if i % 2 else "bracket", 40 + i,
                                                          defect="scratch" if i == 3 else None)[0])
    code = f"""
        import json, cv2
        from pathlib import Path
        from dualkd_edge import Detector
        det = Detector.load({str(old)!r})
        assert "score_logit" not in det.backend.output_names
        imgs = [cv2.imread(str(p)) for p in sorted(Path({str(images)!r}).glob("*.png"))]
        print(json.dumps([p.to_dict() for p in det.predict(imgs)]))
    """
    proc = run_torchless(code)
    assert proc.returncode == 0, proc.stderr
    host = json.loads(proc.stdout.strip().splitlines()[-1])
    graph = Detector.load(new).predict([cv2.imread(str(p)) for p in sorted(images.glob("*.png"))])
    for h, g in zip(host, graph):
        assert h["score"] == g.score and np.isfinite(h["score_logit"])
        assert h["score_logit"] == pytest.approx(g.score_logit, rel=1e-5, abs=1e-5)


def test_presets_command_shows_geometry_and_default_steps():
    from helpers import run_cli

    proc = run_cli("presets")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()}
    assert rows["paper-b392"][1:6] == ["392", "448", "392", "10000", "1000"]
    assert rows["edge-s224"][1:6] == ["224", "-", "-", "5000", "1000"]
    assert rows["tiny"][1:6] == ["112", "-", "-", "500", "50"]
