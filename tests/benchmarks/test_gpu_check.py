"""benchmarks/gpu_check.sh --dry-run: the GPU check's every step except CUDA graphs and torch.compile,
on the CPU with the real tiny model (random-init teacher), in a subprocess as it is run on a GPU machine."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch (pip install '.[train]')"),
    pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm (pip install '.[train]')"),
]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu-check"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_TIMEOUT_S="300")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["dry_run"] is True
    assert results["environment"]["torch"] and results["environment"]["timestamp_utc"]
    assert results["environment"]["device_name"]
    assert results["presets"]["tiny"]["reference_self_check_max_abs"] < 1e-5  # reference = the export's forward
    rows = {(r["batch"], r["mode"], r["precision"]): r for r in results["rows"] if r["preset"] == "tiny"}
    assert set(rows) == {(b, m, p) for b in (1, 2) for m in ("eager", "cuda_graph", "compile")
                         for p in ("fp32", "fp16", "bf16")}

    for batch in (1, 2):
        fp32 = rows[(batch, "eager", "fp32")]
        assert fp32["status"] == "ok", fp32.get("reason")
        assert fp32["latency_ms_p50"] > 0 and fp32["latency_ms_p90"] >= fp32["latency_ms_p50"]
        assert fp32["throughput_ips"] > 0 and fp32["iters"] >= 1
        assert fp32["parity"]["score_max_abs"] < 1e-4 and fp32["parity"]["map_max_abs"] < 1e-4
        assert fp32["parity"]["spearman"] == pytest.approx(1.0)
        for prec in ("fp16", "bf16"):
            row = rows[(batch, "eager", prec)]
            assert row["status"] == "ok", row.get("reason")
            parity = row["parity"]
            assert math.isfinite(parity["score_max_abs"]) and math.isfinite(parity["map_max_abs"])
            assert parity["spearman"] is not None and parity["pair_agreement"] is not None
        for prec in ("fp32", "fp16", "bf16"):
            assert rows[(batch, "cuda_graph", prec)]["status"] == "skipped"
            assert "no CUDA" in rows[(batch, "cuda_graph", prec)]["reason"]
    for row in results["rows"]:
        if row["status"] != "ok":
            assert row["status"] == "skipped" and row["reason"].startswith("skipped: "), row

    md = (out / "results.md").read_text()
    assert "| preset | batch | mode | precision | status |" in md and "|---|" in md
    assert md.count("\n| tiny |") == len(rows)
    assert (out / "versions.txt").read_text().startswith("python ")
    assert (out / "nvidia-smi.txt").exists() and (out / "log.txt").exists()
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temp files
