"""`dualkd-edge eval` end to end on a generated dataset with a tiny model."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
from helpers import (
    SHARED_DATA,
    assert_one_line_error,
    assert_real_png,
    needs_torch,
    run_cli,
)

pytestmark = needs_torch


@pytest.fixture(scope="module")
def dataset_with_corrupt(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata") / "parts"
    shutil.copytree(small_dataset, root)
    (root / "washer" / "test" / "scratch" / "zz_corrupt.png").write_bytes(b"\x89PNG broken")
    return root


def test_eval_table_and_report_files(trained_run, dataset_with_corrupt, tmp_path):
    out = tmp_path / "r"
    proc = run_cli("eval", trained_run, dataset_with_corrupt, "--json", out / "r.json", "--markdown", out / "r.md",
                   "--per-image", out / "p.csv", "--save-overlays", out / "worst", "--worst", "2", "--save-masks",
                   "--plot", out / "eval.png")
    assert proc.returncode == 0, proc.stderr
    for column in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro"):
        assert column in proc.stdout
    assert "washer" in proc.stdout and "bracket" in proc.stdout and "MEAN" in proc.stdout
    assert "zz_corrupt.png" in proc.stderr and "skipped 1 unreadable" in proc.stdout
    report = json.loads((out / "r.json").read_text())
    rows = report["models"][0]["categories"]
    assert set(rows) == {"washer", "bracket"}
    for row in rows.values():
        for key in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro"):
            assert 0.0 <= row[key] <= 1.0
    with open(out / "p.csv") as f:
        per_image = list(csv.DictReader(f))
    assert len(per_image) == 2 * (6 + 4 * 3)
    assert all(float(r["score_logit"]) >= 0 for r in per_image)
    assert "| model |" in (out / "r.md").read_text()
    overlays = sorted(p.name for p in (out / "worst").glob("*.png") if not p.name.endswith("_mask.png"))
    assert len(overlays) == 4 and sum(n.startswith("false_negative") for n in overlays) == 2
    for name in overlays:  # the binary defect mask beside each, at the image's size
        mask = cv2.imread(str(out / "worst" / name.replace(".png", "_mask.png")), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
        assert cv2.imread(str(out / "worst" / name)).shape[1] == 384  # enlarged 3x to stay legible
    assert_real_png(out / "eval.png", (1100, 400))
    assert "plot written to" in proc.stdout


def test_several_models_side_by_side_with_deltas(trained_run, small_dataset, tmp_path):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    onnx_path = export_onnx(trained_run, tmp_path / "m.onnx", ExportOptions()).path
    proc = run_cli("eval", trained_run, onnx_path, small_dataset)
    assert proc.returncode == 0, proc.stderr
    mean_rows = [line for line in proc.stdout.splitlines() if " MEAN " in line]
    assert len(mean_rows) == 2
    assert "(+0.0000)" in mean_rows[1] or "(-0.0000)" in mean_rows[1]  # ONNX equals PyTorch


@pytest.mark.parametrize("how", ["f1", "fpr"])
def test_tune_threshold_writes_metadata(trained_run, small_dataset, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = ["--max-fpr", "0.1"] if how == "fpr" else ["--f1-max"]
    proc = run_cli("eval", run, small_dataset, "--tune-threshold", *args)
    assert proc.returncode == 0, proc.stderr
    assert "threshold 0.5000 ->" in proc.stdout
    # what it costs, in a line engineer's units, and how many good images stood behind it
    assert "false alarms per 1000 good parts" in proc.stdout and "catch rate" in proc.stdout
    if how == "fpr":  # 12 good test images cannot promise 10%: said, and the threshold sits above them all
        assert "too few to promise" in proc.stdout and "12 normal images" in proc.stdout
    else:
        assert "F1-max" in proc.stdout
    record = json.loads((run / "run.json").read_text())
    new = record["threshold"]
    assert new != 0.5
    assert record["history"][-1]["command"] == "eval --tune-threshold"
    assert record["history"][-1]["threshold"] == {"from": 0.5, "to": new}
    from dualkd_edge import Detector

    assert Detector.load(run, device="cpu").threshold == new


def test_class_folder_layout(trained_run, tmp_path):
    from dualkd_edge.data.synth import render_part

    root = tmp_path / "classes"
    for cls, kind in (("washer", "washer"), ("bracket", "bracket"), ("nut", "hexnut")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / cls / f"{i}.png"), render_part(kind, 900 + i)[0])
    proc = run_cli("eval", trained_run, root, "--normal-classes", "washer,bracket", "--json", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "c.json").read_text())["models"][0]["categories"]["classes"]
    assert row["n_images"] == 12 and row["pixel_auroc"] is None and row["image_auroc"] is not None
    assert_one_line_error(run_cli("eval", trained_run, root, "--normal-classes", "gear"), "--normal-classes", "gear")


def test_eval_bad_input(trained_run, tmp_path):
    assert_one_line_error(run_cli("eval", trained_run), "at least one MODEL")
    assert_one_line_error(run_cli("eval", tmp_path / "nope", tmp_path), "MODEL", "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("eval", trained_run, empty), "DATA")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (magnetic tiles) is not present")
def test_magnetic_tiles_load_in_mvtec_layout():
    from dualkd_edge.data.discovery import discover_all

    cats = discover_all([SHARED_DATA])
    assert [c.name for c in cats] == ["magnetic_tile"]
    tile = cats[0]
    assert len(tile.train) >= 100
    defects = {s.defect for s in tile.test}
    assert {"good", "blowhole", "crack"} <= defects
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in tile.test if s.label)
