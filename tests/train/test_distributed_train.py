"""`train --nproc 2`: two gloo processes on the CPU (DistributedDataParallel) train a run that loads
and predicts, resume it, and match one process trained on the same global batches.

Why the two differ at all: each process computes its shard's forward and backward with batch 2
instead of 4 (other matrix-kernel blockings) and gloo sums the two gradients before they are
halved, so sums are taken in another order: float32 rounding, ~1e-7 relative per step. The
optimiser (StableAdamW, eps 1e-10) divides by the root of the second moment, which lets such
differences grow on weights whose gradients are near zero, so we compare what the model does:
losses step by step and the scores of the trained models. Dropout is switched off for the
comparison (preset field), since each process draws its own dropout noise."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from helpers import needs_torch, parts, run_cli

pytestmark = [needs_torch, pytest.mark.slow]

STEPS = 3


def _config(data, out, **kw):
    from dualkd_edge.presets import get_preset
    from dualkd_edge.train.loop import TrainConfig

    preset = replace(get_preset("tiny"), bottleneck_dropout=0.0)
    return TrainConfig(data=[data], out=out, preset=preset, weights="none", steps=STEPS, batch_size=4, seed=0,
                       progress=False, holdout_fraction=0.2, checkpoint_every=1, **kw)


@pytest.fixture(scope="module")
def two_runs(small_dataset, tmp_path_factory):
    """(one process, two processes): the same global batches, STEPS steps."""
    from dualkd_edge.train.launch import launch
    from dualkd_edge.train.loop import train

    root = tmp_path_factory.mktemp("ddp")
    train(_config(small_dataset, root / "one"))
    launch(_config(small_dataset, root / "two", nproc=2))
    return root / "one", root / "two"


def test_two_gloo_processes_match_one_process(two_runs):
    from dualkd_edge import Detector
    from dualkd_edge.artifacts.run_dirs import read_run_metadata

    one, two = two_runs
    m1, m2 = read_run_metadata(one), read_run_metadata(two)
    assert m2.training["processes"] == 2 and m2.training["process_group"] == "gloo"
    assert m2.training["batch_per_process"] == 2 and m2.training["step"] == STEPS
    # the losses of the last step (averaged over both processes' shards) agree
    for key, value in m1.training["final_losses"].items():
        assert m2.training["final_losses"][key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
    images = parts(6)
    with Detector.load(one) as d1, Detector.load(two) as d2:
        o1, o2 = d1.infer_raw(images), d2.infer_raw(images)
    for name in ("local_score", "semantic_score"):
        np.testing.assert_allclose(o2[name], o1[name], rtol=1e-3, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(o2["anomaly_map"], o1["anomaly_map"], atol=1e-3)
    assert m2.calibration.local.mu == pytest.approx(m1.calibration.local.mu, rel=1e-3)


def test_cli_nproc_resumes_the_run_and_it_predicts(two_runs, small_dataset, tmp_path):
    from dualkd_edge import Detector

    run = tmp_path / "run"
    shutil.copytree(two_runs[1], run)
    proc = run_cli("train", small_dataset, "--out", run, "--resume", "--steps", str(STEPS + 2), "--nproc", "2",
                   "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert "on 2 processes (gloo, 2 images each per step)" in proc.stdout
    meta = json.loads((run / "run.json").read_text())
    assert meta["training"]["step"] == STEPS + 2 and meta["training"]["finished"]
    with Detector.load(run) as det:
        preds = det.predict(parts(2))
    assert all(0 <= p.score <= 1 and p.anomaly_map.shape == (128, 128) for p in preds)


def test_uneven_split_is_refused_before_any_process_starts(small_dataset, tmp_path):
    from helpers import assert_one_line_error

    proc = run_cli("train", small_dataset, "--out", tmp_path / "r", "--nproc", "2", "--batch-size", "5")
    assert_one_line_error(proc, "--batch-size", "2 processes")
