"""`dualkd-edge improve MODEL --review DIR [--data TRAIN] --out NEW`: learn from the operators' answers,
and promote only what is better.

(a) Recalibrate: the base calibration's own good frames plus the frames confirmed good become a new
    named calibration (torch-free; every artifact kind).
(b) With --data: fine-tune the students (teacher frozen) from the run MODEL was exported from, on the
    training data plus the frames confirmed good, re-export an ONNX like MODEL, and calibrate it on the
    frames confirmed good.
Old and new are compared on the answered frames held out from (a)/(b) and on the original test split;
NEW is written only when it is not worse on either beyond --tolerance points, otherwise the candidate
is left as NEW.rejected with NEW.rejected.json saying why. Frames confirmed defective never go into
training or calibration as good."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualkd_edge.errors import UserError
from dualkd_edge.review.store import ReviewStore, images_of

log = logging.getLogger("dualkd_edge")

MIN_GOOD = 12  # answers "good part" needed: some to learn from, some held out to judge with
HELD_OUT_EVERY = 3  # one answered frame in three is held out for the comparison


@dataclass
class ImproveRequest:
    model: Path
    review: Path
    out: Path
    data: Path | None = None  # training data: fine-tune (b) as well as recalibrate (a)
    run: Path | None = None  # the run MODEL was exported from (default: its metadata's export source)
    test: Path | None = None  # the original test split (default: --data)
    steps: int = 100
    max_fpr: float | None = None  # default: the base calibration's budget
    tolerance: float = 2.0  # points of false-alarm rate, catch rate and AUROC
    name: str | None = None  # the new calibration's name (default: BASE-reviewed)


@dataclass
class ReviewSet:
    """The answered frames, split into the part learned from and the part held out to judge."""

    learn_good: list[dict] = field(default_factory=list)
    held_good: list[dict] = field(default_factory=list)
    held_defect: list[dict] = field(default_factory=list)
    defects: int = 0
    replaced: int = 0  # frames answered more than once (the last answer counts)

    @property
    def size(self) -> int:
        return len(self.learn_good) + len(self.held_good) + self.defects


def held_out(item_id: str) -> bool:
    """A stable split: the same frame is always on the same side."""
    return int(hashlib.sha1(item_id.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def review_set(store: ReviewStore) -> ReviewSet:
    out = ReviewSet()
    for item_id, answer in store.answers().items():
        record = store.record(item_id)
        if record is None:
            continue
        out.replaced += answer.replaces is not None
        if answer.label == "defect":  # never a good frame, whatever was said of it before
            out.defects += 1
            if held_out(item_id):
                out.held_defect.append(record)
        elif held_out(item_id):
            out.held_good.append(record)
        else:
            out.learn_good.append(record)
    good = len(out.learn_good) + len(out.held_good)
    if good < MIN_GOOD or not out.held_good or not out.learn_good:
        raise UserError(f"--review: {good} frame(s) answered 'good part' in {store.folder}; improve needs at least "
                        f"{MIN_GOOD} ({max(1, MIN_GOOD - good)} more), some to learn from and some to judge with")
    return out


def run(req: ImproveRequest) -> int:
    from dualkd_edge.artifacts import kind_of, read_metadata
    from dualkd_edge.decision.calibrations import select_calibration
    from dualkd_edge.decision.model_id import compute_model_id
    from dualkd_edge.review.gate import compare, write_result
    from dualkd_edge.review.sink import input_contract

    kind_of(req.model)
    meta = read_metadata(req.model)
    model_id = compute_model_id(req.model)
    store = ReviewStore(req.review)
    store.check_model(model_id, input_contract(meta))
    answers = review_set(store)
    base = select_calibration(meta)
    print(f"review set {req.review}: {answers.size} answered frames ({len(answers.learn_good)} good to learn from, "
          f"{len(answers.held_good)} good and {len(answers.held_defect)} defective held out, {answers.defects} defective "
          f"in all, never used as good)" + (f"; {answers.replaced} answered twice: the last answer counts"
                                             if answers.replaced else ""))
    with tempfile.TemporaryDirectory(prefix="dualkd-improve-", dir=Path(req.out).parent) as tmp:
        if req.data is None:
            candidate = recalibrated(req, store, answers, base, Path(tmp))
        else:
            candidate = fine_tuned(req, store, answers, meta, base, Path(tmp))
        verdict = compare(req, store, answers, candidate)
        return write_result(req, candidate, verdict, answers, model_id)


def _new_name(req: ImproveRequest, base) -> str:
    from dualkd_edge.decision.calibrations import check_calibration_name

    return check_calibration_name(req.name or f"{base.name}-reviewed"[:64], "--name")


def recalibrated(req: ImproveRequest, store: ReviewStore, answers: ReviewSet, base, tmp: Path) -> Path:
    """(a) A copy of MODEL with a calibration from the base's good frames plus the confirmed good."""
    from dualkd_edge.artifacts import kind_of, read_metadata, update_metadata
    from dualkd_edge.decision.calibrations import store_calibration
    from dualkd_edge.decision.commissioning import calibration_from_scores
    from dualkd_edge.decision.model_id import compute_model_id

    meta = read_metadata(req.model)
    named = next((c for c in meta.calibrations if c.name == base.name), None)
    raw = (named.raw_scores if named is not None and named.raw_scores else {"local": [], "semantic": []})
    local = np.array(raw["local"] + [r["local_score"] for r in answers.learn_good], np.float64)
    semantic = np.array(raw["semantic"] + [r["semantic_score"] for r in answers.learn_good], np.float64)
    max_fpr = req.max_fpr or (named.max_fpr if named is not None and named.max_fpr else 0.01)
    new, budget = calibration_from_scores(local, semantic, base.calibration.anomaly_map, _new_name(req, base), max_fpr,
                                          0.95, base.calibration.beta, f"{base.name} + review {store.folder}",
                                          compute_model_id(req.model))
    candidate = tmp / f"candidate{req.model.suffix}"
    copy = shutil.copytree if req.model.is_dir() else shutil.copyfile
    copy(req.model, candidate)
    if kind_of(req.model).name == "engine":
        from dualkd_edge.artifacts.engines import sidecar_path

        shutil.copyfile(sidecar_path(req.model), sidecar_path(candidate))
    update_metadata(candidate, lambda m: store_calibration(m, new, "improve"))
    print(f"(a) recalibrated '{new.name}' on {len(raw['local'])} frames of '{base.name}' + {len(answers.learn_good)} "
          f"confirmed good: threshold {new.threshold:.6g} ({budget.describe()})")
    return candidate


def fine_tuned(req: ImproveRequest, store: ReviewStore, answers: ReviewSet, meta, base, tmp: Path) -> Path:
    """(b) Fine-tune a copy of the run on the training data + the confirmed good frames, export it like
    MODEL, calibrate it on the confirmed good frames."""
    from dualkd_edge.review.finetune import export_like, finetune_run

    run_dir = req.run or (Path(meta.export["source"]) if meta.export.get("source") else None)
    if req.model.is_dir():
        run_dir = req.model
    if run_dir is None or not (Path(run_dir) / "run.json").is_file():
        raise UserError(f"--run: the run directory {req.model} was exported from is not known or not there "
                        f"({run_dir}); give --run RUN to fine-tune, or leave out --data to recalibrate only")
    good_dir = tmp / "reviewed-good"
    good_dir.mkdir()
    for r in answers.learn_good:
        shutil.copyfile(store.item_path(r["id"], ".jpg"), good_dir / f"{r['id']}.jpg")
    tuned = finetune_run(Path(run_dir), [Path(req.data), good_dir], tmp / "run", req.steps)
    candidate = export_like(tuned, req.model, meta, tmp / f"candidate{req.model.suffix or '.onnx'}")
    return calibrate_on_images(req, store, answers, base, candidate)


def calibrate_on_images(req: ImproveRequest, store: ReviewStore, answers: ReviewSet, base, candidate: Path) -> Path:
    """The fine-tuned model's calibration: its own scores of the confirmed good frames."""
    from dualkd_edge.artifacts import update_metadata
    from dualkd_edge.decision.calibrations import store_calibration
    from dualkd_edge.decision.commissioning import calibration_from_scores
    from dualkd_edge.decision.model_id import compute_model_id
    from dualkd_edge.detector import Detector

    with Detector.load(candidate, calibration="training") as det:
        preds = det.predict(images_of(store, answers.learn_good), batch_size=8)
    local = np.array([p.local_score for p in preds], np.float64)
    semantic = np.array([p.semantic_score for p in preds], np.float64)
    new, budget = calibration_from_scores(local, semantic, det.meta.calibration.anomaly_map, _new_name(req, base),
                                          req.max_fpr or 0.01, 0.95, det.meta.calibration.beta,
                                          f"review {store.folder}", compute_model_id(candidate))
    update_metadata(candidate, lambda m: store_calibration(m, new, "improve"))
    print(f"(b) fine-tuned and calibrated '{new.name}' on {len(preds)} confirmed good frames: threshold "
          f"{new.threshold:.6g} ({budget.describe()})")
    return candidate
