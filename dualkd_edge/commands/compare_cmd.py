"""`dualkd-edge compare`: any artifacts side by side on real images, against the first one."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from dualkd_edge.errors import UserError


def run_compare(models: list[Path], images: Path, atol: float | None = None, max_disagree: float | None = None,
                max_auroc_drop: float | None = None, max_images: int = 200, json_out: Path | None = None,
                providers=None, device: str = "auto", onnx: Path | None = None, cuda_graph: bool = False) -> int:
    """Exit code 0 when every candidate agrees with the first model within its tolerances, else 1."""
    from dualkd_edge.artifacts import ENGINE_SUFFIXES
    from dualkd_edge.evaluation.comparison import (
        Tolerance,
        artifact_precision,
        compare_detectors,
        comparison_images,
    )
    from dualkd_edge.detector import Detector
    from dualkd_edge.fileio import json_bytes

    if len(models) < 2:
        raise UserError("compare: give at least two models (A B [C ...]); each is compared with the first")
    for m in models:
        if not Path(m).exists():
            raise UserError(f"MODEL: not found: {m}")
    if atol is not None and atol < 0:
        raise UserError(f"--atol: must be >= 0, got {atol}")
    if max_disagree is not None and not 0 <= max_disagree <= 1:
        raise UserError(f"--max-disagree: expected a share in [0, 1], got {max_disagree}")
    if max_images < 1:
        raise UserError(f"--max-images: must be >= 1, got {max_images}")
    from dualkd_edge.output_paths import check_outputs, write_result

    check_outputs(files={"--json": json_out}, inputs={"MODEL": models, "--images": images})
    pictures, labels = comparison_images(images, max_images)
    with ExitStack() as stack:
        dets = [stack.enter_context(Detector.load(m, device=device, providers=providers, onnx=onnx,
                                                  cuda_graph=cuda_graph and Path(m).suffix.lower() in ENGINE_SUFFIXES))
                for m in models]
        reference_precision = artifact_precision(dets[0].meta)
        tolerances = [Tolerance.for_precisions([reference_precision, artifact_precision(d.meta)])
                      .with_overrides(atol, max_disagree, max_auroc_drop) for d in dets[1:]]
        results = compare_detectors(dets[0], dets[1:], pictures, labels, tolerances,
                                    names=[str(m) for m in models])
    for r in results:
        print(r.format())
    if json_out is not None:
        write_result(json_out, json_bytes({"images": str(images), "labelled": labels is not None,
                                           "comparisons": [r.to_dict() for r in results]}), "--json")
    return 0 if all(r.passed for r in results) else 1
