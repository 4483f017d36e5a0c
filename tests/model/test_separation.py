"""End to end: one multi-class model separates defects and an unseen part kind in both categories.

Random-init teacher (docs/design.md section 3): this shows the pipeline works, not pretrained accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import needs_torch

pytestmark = [needs_torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def separation_report(separating_run):
    from dualkd_edge import Detector
    from dualkd_edge.data.discovery import discover_all
    from dualkd_edge.evaluation.evaluate_splits import evaluate

    run, data = separating_run
    with Detector.load(run, device="cpu") as det:
        return evaluate(det, discover_all([data]), progress=False)


def test_defects_and_unseen_part_kind_separate_in_both_categories(separation_report):
    from dualkd_edge.evaluation.metrics import image_auroc

    assert set(separation_report.rows) == {"washer", "bracket"}
    for cat, row in separation_report.rows.items():
        assert row["image_auroc"] > 0.8, (cat, row)
        recs = [r for r in separation_report.records if r.category == cat]
        for defect in ("scratch", "spot", "missing", "wrong_part"):
            subset = [r for r in recs if r.defect in ("good", defect)]
            auroc = image_auroc(np.array([r.label for r in subset]), np.array([r.score for r in subset]))
            assert auroc > 0.7, (cat, defect, auroc)
        assert row["pixel_auroc"] > 0.8, (cat, row)
