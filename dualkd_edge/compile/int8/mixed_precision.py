"""Accuracy-driven mixed precision: INT8 everywhere it is harmless, float where it is not.

1. Sensitivity: each layer group (a transformer block of one of the three networks, a patch
   embedding, the bottleneck, the head) is quantized ALONE and the model is run on calibration
   images and a spread of the validation images, defective parts included (a branch can be quiet
   on normal parts and not on anomalies); its error is how far the two branch scores and the
   anomaly map move, in units of the calibration sigma of each branch (the scale the calibrated
   probability sees).
2. Search: starting from all-INT8, the most sensitive group is returned to float, then the next,
   until the candidate passes the gate on the validation data: the one-sided 95% upper bounds of
   the image-AUROC drop and of the OK/NG disagreement within budget (`accuracy_gate.judge`), not
   their point estimates, so a group stays INT8 only when the data show it is harmless. When the
   validation set is too small for any candidate to pass (even zero disagreements bound the rate
   above the budget) the search stops after all-INT8: returning groups to float cannot help.
3. Pruning: a proxy ranking can keep groups in float that did not matter; each kept group is
   tried back in INT8 (least sensitive first) and stays INT8 when the gate still passes.
Each step is reported with what it kept in float, its accuracy and (CPU target) its latency
measured side by side with FP32, so the price of every layer is visible."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge.artifacts.onnx_files import save_onnx_atomic
from dualkd_edge.compile.int8.accuracy_gate import GateRow, evaluate_for_gate, judge
from dualkd_edge.compile.int8.quantize import QuantizationSession

log = logging.getLogger("dualkd_edge")

CALIBRATION_IMAGES_FOR_SENSITIVITY = 8
VALIDATION_IMAGES_FOR_SENSITIVITY = 24


@dataclass
class SearchStep:
    method: str
    kept_float: list[str]
    gate: dict
    passed: bool
    speedup_vs_fp32: float | None = None  # paired, CPU target only
    phase: str = "search"  # all-int8 (one per calibration method) | search | prune

    def to_dict(self) -> dict:
        return {"method": self.method, "kept_float": self.kept_float, "passed": self.passed,
                "drop_points": self.gate["drop_points"], "decisions": self.gate["decisions"],
                "image_auroc_bound": self.gate["image_auroc_bound"],
                "point_estimate_passed": self.gate["point_estimate_passed"],
                "image_auroc": self.gate["int8"].get("image_auroc"), "pixel_auroc": self.gate["int8"].get("pixel_auroc"),
                "speedup_vs_fp32": self.speedup_vs_fp32, "phase": self.phase}


@dataclass
class SearchResult:
    steps: list[SearchStep] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    chosen: SearchStep | None = None  # the passing step with the fewest groups in float, else None


def _raw_outputs(path: Path, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    from dualkd_edge.detector import Detector

    with Detector.load(path, providers=["cpu"]) as det:
        return det.infer_raw(images)


def _error(reference: dict, candidate: dict, sigma_local: float, sigma_semantic: float) -> float:
    """How far a candidate moves what the calibrated probability sees, in calibration sigmas."""
    local = np.abs(candidate["local_score"] - reference["local_score"]).mean()
    amap = np.abs(candidate["anomaly_map"] - reference["anomaly_map"]).mean()
    semantic = np.abs(candidate["semantic_score"] - reference["semantic_score"]).mean()
    return float((local + amap) / sigma_local + semantic / sigma_semantic)


def sensitivity_images(session: QuantizationSession, categories: list) -> list[np.ndarray]:
    """A few calibration images and a spread of the validation split (good and defective parts)."""
    from dualkd_edge.evaluation.comparison import spread
    from dualkd_edge.fileio import read_image

    samples = spread([s for c in categories for s in c.test], VALIDATION_IMAGES_FOR_SENSITIVITY)
    val = [img for img in (read_image(s.path) for s in samples) if img is not None]
    return session.images[:CALIBRATION_IMAGES_FOR_SENSITIVITY] + val


def group_sensitivity(session: QuantizationSession, method: str, images: list[np.ndarray]) -> list[tuple[str, float]]:
    """(group, error) with only that group quantized, most sensitive first."""
    reference = _raw_outputs(session.model_path, images)
    calib = session.meta.calibration
    everything = {g.name for g in session.groups}
    path = session.workdir / "sensitivity.onnx"
    errors = []
    for group in session.groups:
        save_onnx_atomic(session.candidate(method, everything - {group.name}), path)
        errors.append((group.name, _error(reference, _raw_outputs(path, images), calib.local.sigma,
                                          calib.semantic.sigma)))
        log.debug("sensitivity: %-28s %.4f", group.name, errors[-1][1])
    return sorted(errors, key=lambda e: -e[1])


def _speedup(fp32_path: Path, candidate_path: Path) -> float:
    """INT8 vs FP32 at batch 1 on this machine, timed in alternating rounds (bench/timing.py)."""
    from dualkd_edge.artifacts import open_backend
    from dualkd_edge.bench.timing import (
        backend_contender,
        paired_speedup,
        time_side_by_side,
    )

    with open_backend(fp32_path, providers=["cpu"]) as a, open_backend(candidate_path, providers=["cpu"]) as b:
        contenders = [backend_contender(a), backend_contender(b)]
        time_side_by_side(contenders, warmup=3, iters=20)
    return paired_speedup(contenders[0].round_p50_ms, contenders[1].round_p50_ms)


class MixedPrecisionSearch:
    def __init__(self, session: QuantizationSession, val_categories: list, max_drop: float, max_disagree: float,
                 time_latency: bool) -> None:
        self.session = session
        self.categories = val_categories
        self.max_drop = max_drop
        self.max_disagree = max_disagree
        self.time_latency = time_latency
        self.fp32: GateRow = evaluate_for_gate(session.model_path, val_categories)
        self.path = session.workdir / "step.onnx"

    def step(self, method: str, kept: list[str], phase: str = "search") -> SearchStep:
        save_onnx_atomic(self.session.candidate(method, set(kept)), self.path)
        gate, passed = judge(self.fp32, evaluate_for_gate(self.path, self.categories), self.max_drop,
                             self.max_disagree)
        speedup = _speedup(self.session.model_path, self.path) if self.time_latency else None
        return SearchStep(method, list(kept), gate, passed, speedup, phase)

    def choose_method(self, methods: list[str], result: SearchResult, report) -> str:
        """All-INT8 with each calibration method; the gate picks the best (passing, then least drop)."""
        steps = []
        for method in methods:
            step = self.step(method, [], "all-int8")
            result.steps.append(step)
            report(step)
            steps.append(step)
        best = min(steps, key=lambda s: (not s.passed, s.gate["image_auroc_bound"]["upper"],
                                         max(s.gate["drop_points"].values()), s.gate["decisions"]["upper"]))
        return best.method

    def run(self, methods: list[str], keep_float_auto: bool, report=lambda step: None) -> SearchResult:
        result = SearchResult()
        method = self.choose_method(methods, result, report) if len(methods) > 1 else methods[0]
        first = next((s for s in result.steps if s.method == method), None)
        if first is None:
            first = self.step(method, [], "all-int8")
            result.steps.append(first)
            report(first)
        if first.passed or not keep_float_auto or not first.gate["provable"]:
            result.chosen = first if first.passed else None
            return result
        result.sensitivity = group_sensitivity(self.session, method,
                                               sensitivity_images(self.session, self.categories))
        kept: list[str] = []
        for group, _ in result.sensitivity:
            kept.append(group)
            step = self.step(method, kept)
            result.steps.append(step)
            report(step)
            if step.passed:
                result.chosen = step
                break
        if result.chosen is not None:
            result.chosen = self.prune(result.chosen, result, report)
        return result

    def prune(self, passing: SearchStep, result: SearchResult, report) -> SearchStep:
        """Try each group kept in float back in INT8, least sensitive first; keep what still passes."""
        order = {name: i for i, (name, _) in enumerate(result.sensitivity)}
        kept = list(passing.kept_float)
        best = passing
        for group in sorted(kept[:-1], key=lambda g: -order[g]):  # the last one added made it pass
            trial = [g for g in kept if g != group]
            step = self.step(passing.method, trial, "prune")
            result.steps.append(step)
            report(step)
            if step.passed:
                kept, best = trial, step
        return best
