"""One comparator for any two artifacts (run directory, .onnx, engine) on the same images.

It serves `export`'s verification against PyTorch, `quantize`'s gate, `build`'s engine-vs-ONNX
check and `dualkd-edge compare`: per-output max / mean absolute difference, NaN/inf counts, score
rank correlation, OK/NG agreement at each model's own threshold, and the image AUROC of each when
the images are labelled. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


# Justification: FP32 PyTorch and ONNX Runtime kernels sum in different orders (~1e-7 relative per
# op, a few hundred ops deep): raw scores and maps agree to ~1e-5. The calibrated probability
# divides by the calibration sigma (often ~0.01), which magnifies score differences ~100x, and the
# sigmoid's slope is at most 1/4: hence a looser bound on `score`. `score_logit` sums two softplus
# terms of the same z-scores, each of slope at most 1: the same z bound gives 2 x 4 = 8 times the
# bound on `score`.
FP32_TOLERANCE = {"anomaly_map": 1e-4, "local_score": 1e-4, "semantic_score": 1e-4, "score": 2e-3,
                  "score_logit": 1.6e-2}
# FP16 keeps LayerNorm/Softmax/scoring in FP32 but rounds every matmul input to 11 bits.
FP16_TOLERANCE = {"anomaly_map": 3e-2, "local_score": 3e-2, "semantic_score": 3e-2, "score": 5e-2,
                  "score_logit": 4e-1}
# INT8 moves single scores by more than any useful absolute bound; what must hold is the decision
# on the line and the ranking (AUROC): at most 3% of OK/NG decisions may change.
INT8_MAX_DISAGREE = 0.03
DEFAULT_MAX_AUROC_DROP = 0.5  # points


@dataclass
class Tolerance:
    atol: dict[str, float] | None  # per output; None: differences are reported, not gated
    max_disagree: float = 0.0  # share of images whose OK/NG decision may differ
    max_auroc_drop: float = DEFAULT_MAX_AUROC_DROP  # points, when the images are labelled

    @classmethod
    def for_precisions(cls, precisions: Sequence[str]) -> "Tolerance":
        """What two artifacts of these precisions should agree to."""
        if "int8" in precisions:
            return cls(None, INT8_MAX_DISAGREE)
        if "fp16" in precisions:
            return cls(dict(FP16_TOLERANCE))
        return cls(dict(FP32_TOLERANCE))

    def with_overrides(self, atol: float | None = None, max_disagree: float | None = None,
                       max_auroc_drop: float | None = None) -> "Tolerance":
        names = self.atol or FP32_TOLERANCE
        return Tolerance({k: atol for k in names} if atol is not None else self.atol,
                         self.max_disagree if max_disagree is None else max_disagree,
                         self.max_auroc_drop if max_auroc_drop is None else max_auroc_drop)


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    tolerance: float | None
    nonfinite: int = 0  # NaN/inf values in the candidate

    @property
    def ok(self) -> bool:
        within = self.tolerance is None or self.max_abs <= self.tolerance
        return within and self.nonfinite == 0


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    tolerance: dict[str, float] | None) -> list[OutputDiff]:
    """Output by output (those both sides have), on one batch."""
    diffs = []
    for name in reference:
        if name not in candidate:
            continue
        a = reference[name].astype(np.float64)
        b = candidate[name].astype(np.float64)
        limit = (tolerance or {}).get(name) if tolerance is not None else None
        if a.shape != b.shape:
            diffs.append(OutputDiff(name, float("inf"), float("inf"), float("inf"), limit))
            continue
        finite = np.isfinite(a) & np.isfinite(b)
        abs_diff = np.where(finite, np.abs(a - b), 0.0)
        rel = abs_diff / np.maximum(np.abs(a), 1e-6)
        diffs.append(OutputDiff(name, float(abs_diff.max(initial=0.0)), float(abs_diff.mean()) if abs_diff.size else 0.0,
                                float(rel.max(initial=0.0)), limit, int((~np.isfinite(b)).sum())))
    return diffs


def merge_diffs(batches: list[list[OutputDiff]]) -> list[OutputDiff]:
    """Per-output statistics over several batches (mean weighted equally per batch)."""
    merged: dict[str, OutputDiff] = {}
    counts: dict[str, int] = {}
    for diffs in batches:
        for d in diffs:
            if d.name not in merged:
                merged[d.name] = OutputDiff(d.name, d.max_abs, d.mean_abs, d.max_rel, d.tolerance, d.nonfinite)
                counts[d.name] = 1
                continue
            m = merged[d.name]
            counts[d.name] += 1
            m.max_abs, m.max_rel = max(m.max_abs, d.max_abs), max(m.max_rel, d.max_rel)
            m.mean_abs += (d.mean_abs - m.mean_abs) / counts[d.name]
            m.nonfinite += d.nonfinite
    return list(merged.values())


def format_differences(diffs: list[OutputDiff]) -> str:
    lines = []
    for d in diffs:
        verdict = "ok" if d.ok else ("NaN/inf" if d.nonfinite else "EXCEEDED")
        limit = f"(tolerance {d.tolerance:g})" if d.tolerance is not None else "(reported)"
        lines.append(f"  {d.name:<15} max abs {d.max_abs:.2e}  mean abs {d.mean_abs:.2e}  max rel {d.max_rel:.2e}  "
                     f"{limit} {verdict}")
    return "\n".join(lines)


@dataclass
class DecisionAgreement:
    agree: int
    disagree: int
    borderline: int  # disagreements excused: the reference score lies within the score tolerance of its threshold

    @property
    def disagree_share(self) -> float:
        total = self.agree + self.disagree + self.borderline
        return self.disagree / total if total else 0.0


def decision_agreement(ref_scores: np.ndarray, ref_threshold: float, cand_scores: np.ndarray,
                       cand_threshold: float, score_tolerance: float = 0.0) -> DecisionAgreement:
    """OK/NG agreement, each model deciding at its own threshold (what the line would do)."""
    ref_ng = np.asarray(ref_scores) >= ref_threshold
    cand_ng = np.asarray(cand_scores) >= cand_threshold
    differ = ref_ng != cand_ng
    excused = differ & (np.abs(np.asarray(ref_scores) - ref_threshold) <= score_tolerance)
    return DecisionAgreement(int((~differ).sum()), int((differ & ~excused).sum()), int(excused.sum()))


@dataclass
class Comparison:
    reference: str
    candidate: str
    n_images: int
    outputs: list[OutputDiff]
    score_spearman: float
    decisions: DecisionAgreement
    tolerance: Tolerance
    auroc: dict[str, float] | None = None  # reference, candidate, drop_points (labelled images only)
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        out = []
        for d in self.outputs:
            if d.nonfinite:
                out.append(f"{d.name}: {d.nonfinite} NaN/inf value(s)")
            elif not d.ok:
                out.append(f"{d.name} differs by {d.max_abs:.2e} > {d.tolerance:g}")
        if self.decisions.disagree_share > self.tolerance.max_disagree:
            out.append(f"OK/NG decisions differ on {self.decisions.disagree} of {self.n_images} images "
                       f"({100 * self.decisions.disagree_share:.1f}% > {100 * self.tolerance.max_disagree:.1f}%)")
        if self.auroc and self.auroc["drop_points"] > self.tolerance.max_auroc_drop:
            out.append(f"image AUROC drops by {self.auroc['drop_points']:.2f} points "
                       f"(> {self.tolerance.max_auroc_drop:g})")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "n_images": self.n_images,
                "outputs": [asdict(d) | {"ok": d.ok} for d in self.outputs], "score_spearman": self.score_spearman,
                "decisions": asdict(self.decisions) | {"disagree_share": self.decisions.disagree_share},
                "auroc": self.auroc, "tolerance": asdict(self.tolerance), "passed": self.passed,
                "failures": self.failures(), "notes": self.notes}

    def format(self) -> str:
        d = self.decisions
        lines = [f"{self.candidate} vs {self.reference} on {self.n_images} images:", format_differences(self.outputs),
                 f"  score_logit Spearman {self.score_spearman:.4f}; OK/NG agree on {d.agree}, differ on {d.disagree}"
                 + (f" (+{d.borderline} within the score tolerance of the threshold)" if d.borderline else "")]
        if self.auroc:
            lines.append(f"  image AUROC {self.auroc['reference']:.4f} -> {self.auroc['candidate']:.4f} "
                         f"({-self.auroc['drop_points']:+.2f} points)")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  PASSED" if self.passed else "  FAILED: " + "; ".join(self.failures()))
        return "\n".join(lines)


def compare_detectors(reference, candidates: list, images: list[np.ndarray], labels: np.ndarray | None = None,
                      tolerances: list[Tolerance] | None = None, batch_size: int = 8,
                      names: list[str] | None = None) -> list[Comparison]:
    """Run the reference and every candidate Detector on the same images, batch by batch (maps are
    never all held in memory), and compare each candidate with the reference. `names`: how to call
    the reference and the candidates in reports (default: their backends)."""
    from dualkd_edge.evaluation import metrics

    if not images:
        raise ValueError("no images to compare on")
    per_batch: list[list[list[OutputDiff]]] = [[] for _ in candidates]
    # Decisions are taken on `score`; ranks (AUROC, Spearman) on `score_logit` as in `eval`: the
    # probability saturates at 1.0 and ties strong anomalies.
    scores = [[] for _ in range(len(candidates) + 1)]
    ranks = [[] for _ in range(len(candidates) + 1)]
    tolerances = tolerances or [Tolerance(dict(FP32_TOLERANCE)) for _ in candidates]
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        ref_out = reference.infer_raw(chunk)
        scores[0].append(ref_out["score"])
        ranks[0].append(ref_out["score_logit"])
        for k, cand in enumerate(candidates):
            out = cand.infer_raw(chunk)
            scores[k + 1].append(out["score"])
            ranks[k + 1].append(out["score_logit"])
            per_batch[k].append(compare_outputs(ref_out, out, tolerances[k].atol))
    ref_scores, ref_ranks = np.concatenate(scores[0]), np.concatenate(ranks[0])
    results = []
    for k, cand in enumerate(candidates):
        cand_scores = np.concatenate(scores[k + 1])
        cand_ranks = np.nan_to_num(np.concatenate(ranks[k + 1]), nan=0.0, posinf=np.finfo(np.float32).max)
        tol = tolerances[k]
        score_tol = (tol.atol or {}).get("score", 0.0) if tol.atol else 0.0
        auroc = None
        if labels is not None and 0 < labels.sum() < len(labels):
            a = metrics.image_auroc(labels, ref_ranks)
            b = metrics.image_auroc(labels, cand_ranks)
            auroc = {"reference": a, "candidate": b, "drop_points": 100.0 * (a - b)}
        results.append(Comparison(
            reference=names[0] if names else reference.backend.describe(),
            candidate=names[k + 1] if names else cand.backend.describe(), n_images=len(images),
            outputs=merge_diffs(per_batch[k]), score_spearman=metrics.spearman(ref_ranks, cand_ranks),
            decisions=decision_agreement(ref_scores, reference.threshold, cand_scores, cand.threshold, score_tol),
            tolerance=tol, auroc=auroc))
    return results


def spread(items: list, n: int) -> list:
    """At most `n` items, evenly spread over the list (all categories and defect types keep a share)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def comparison_images(folder: Path, max_images: int = 200) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Images to compare on, with labels when `folder` is an MVTec-style dataset with a test split
    holding good and defective parts (then the AUROC of each model is compared too); otherwise every
    image under the folder. Unreadable files are skipped."""
    from dualkd_edge.compile.int8.calibration_images import list_calibration_files
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.errors import UserError
    from dualkd_edge.fileio import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images: not a folder: {folder}")
    samples = [s for c in discover_all([folder]) for s in c.test]
    labelled = len({s.label for s in samples}) == 2
    paths = [s.path for s in samples] if labelled else list_calibration_files(folder)
    labels = [s.label for s in samples] if labelled else [0] * len(paths)
    chosen = spread(list(zip(paths, labels)), max_images)
    images, kept = [], []
    for path, label in chosen:
        img = read_image(path)
        if img is not None:
            images.append(img)
            kept.append(label)
    if not images:
        raise UserError(f"--images: none of the images in {folder} could be decoded")
    return images, (np.array(kept) if labelled else None)
