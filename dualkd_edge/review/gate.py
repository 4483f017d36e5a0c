"""The gate of `improve`: old and new side by side on the answered frames held out and on the original
test split; NEW only when it is not worse on either beyond the tolerance."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge.review.store import ReviewStore, images_of


@dataclass
class SideBySide:
    rows: list[dict] = field(default_factory=list)  # {"set", "metric", "old", "new"} in percent / points
    worse: list[str] = field(default_factory=list)  # what broke the tolerance

    @property
    def accepted(self) -> bool:
        return not self.worse


def rates(detector, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(NG decisions, score_logit) of the images."""
    preds = detector.predict(images, batch_size=8) if images else []
    return np.array([p.is_anomaly for p in preds], bool), np.array([p.score_logit for p in preds])


def held_out_metrics(detector, store: ReviewStore, answers) -> dict[str, float | None]:
    from dualkd_edge.evaluation import metrics

    good_ng, good_logit = rates(detector, images_of(store, answers.held_good))
    bad_ng, bad_logit = rates(detector, images_of(store, answers.held_defect))
    auroc = None
    if good_ng.size and bad_ng.size:
        labels = np.r_[np.zeros(good_ng.size), np.ones(bad_ng.size)]
        auroc = 100 * metrics.image_auroc(labels, np.r_[good_logit, bad_logit])
    return {"false alarms %": 100 * float(good_ng.mean()) if good_ng.size else None,
            "catch rate %": 100 * float(bad_ng.mean()) if bad_ng.size else None, "image AUROC": auroc}


def test_split_metrics(detector, data: Path) -> dict[str, float | None]:
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.evaluation.evaluate_splits import evaluate

    report = evaluate(detector, discover_all([data]), progress=False)
    labels = np.array([r.label for r in report.records])
    ng = np.array([r.is_anomaly for r in report.records])
    mean = report.mean_row()
    return {"false alarms %": 100 * float(ng[labels == 0].mean()) if (labels == 0).any() else None,
            "catch rate %": 100 * float(ng[labels == 1].mean()) if (labels == 1).any() else None,
            "image AUROC": 100 * mean["image_auroc"] if mean["image_auroc"] is not None else None}


def _judge(verdict: SideBySide, name: str, old: dict, new: dict, tolerance: float) -> None:
    for metric, o in old.items():
        n = new[metric]
        verdict.rows.append({"set": name, "metric": metric, "old": o, "new": n})
        if o is None or n is None:
            continue
        worse = n - o if metric == "false alarms %" else o - n  # positive: the new model is worse
        if worse > tolerance:
            verdict.worse.append(f"{metric} on {name}: {o:.2f} -> {n:.2f} (tolerance {tolerance:g} points)")


def compare(req, store: ReviewStore, answers, candidate: Path) -> SideBySide:
    from dualkd_edge.detector import Detector

    verdict = SideBySide()
    with Detector.load(req.model) as old, Detector.load(candidate) as new:
        _judge(verdict, "held-out answered frames", held_out_metrics(old, store, answers),
               held_out_metrics(new, store, answers), req.tolerance)
        test = req.test or req.data
        if test is not None:
            _judge(verdict, f"test split {test}", test_split_metrics(old, Path(test)), test_split_metrics(new, Path(test)),
                   req.tolerance)
    return verdict


def format_verdict(verdict: SideBySide) -> str:
    from dualkd_edge.console.tables import text_table

    rows = [[r["set"], r["metric"], r["old"], r["new"],
             None if r["old"] is None or r["new"] is None else r["new"] - r["old"]] for r in verdict.rows]
    return text_table(["set", "metric", "old", "new", "change"], rows)


def write_result(req, candidate: Path, verdict: SideBySide, answers, old_model_id: str) -> int:
    """NEW when the gate passed; NEW.rejected (+ NEW.rejected.json) with the reason otherwise."""
    from dualkd_edge.artifacts import update_metadata
    from dualkd_edge.decision.history import history_entry
    from dualkd_edge.decision.model_id import compute_model_id
    from dualkd_edge.fileio import write_json_atomic

    print(format_verdict(verdict))
    review = {"answered": answers.size, "learned_good": len(answers.learn_good), "held_out_good": len(answers.held_good),
              "held_out_defect": len(answers.held_defect), "defects": answers.defects}
    new_id = compute_model_id(candidate)
    update_metadata(candidate, lambda m: m.history.append(history_entry(
        "improve", m.calibrations[-1].name, None, m.calibrations[-1].threshold, str(req.review), answers.size,
        review=review, from_model_id=old_model_id, model_id=new_id, accepted=verdict.accepted)))
    target = Path(req.out) if verdict.accepted else Path(f"{req.out}.rejected")
    _move(candidate, target)
    if verdict.accepted:
        print(f"improve: wrote {target} (model_id {new_id}); to put it on the line, rename it onto the model a "
              f"running infer watches: mv {target} {req.model}")
        return 0
    reason = "; ".join(verdict.worse)
    write_json_atomic(Path(f"{req.out}.rejected.json"), {"reason": reason, "comparison": verdict.rows, "review": review})
    print(f"improve: not better, left as {target} ({reason}); see {req.out}.rejected.json")
    return 1


def _move(src: Path, dst: Path) -> None:
    """The candidate (file, run directory, or engine with its sidecar) to its final name."""
    from dualkd_edge.artifacts.engines import sidecar_path

    if dst.is_dir():
        shutil.rmtree(dst)
    shutil.move(str(src), str(dst))  # a rename on one filesystem
    if not dst.is_dir() and sidecar_path(src).exists():
        shutil.move(str(sidecar_path(src)), str(sidecar_path(dst)))
