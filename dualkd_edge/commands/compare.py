"""`dualkd-edge compare`: any artifacts side by side on real images, against the first one."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from dualkd_edge.commands.options import CudaGraph, Device, EngineOnnx, FloatOption, Providers, load_options
from dualkd_edge.errors import UserError

if TYPE_CHECKING:
    from dualkd_edge.artifacts import LoadOptions


def command(
    models: List[Path] = typer.Argument(..., help="A B [C ...]: run directories, .onnx files or engines; each is "
                                        "compared with the first"),
    images: Path = typer.Option(..., "--images", help="folder of images; an MVTec-style dataset adds the AUROC of each"),
    atol: Optional[float] = FloatOption(None, "--atol", help="largest absolute difference of any output (default: "
                                         "by precision; INT8 is judged by decisions and AUROC only)"),
    max_disagree: Optional[float] = FloatOption(None, "--max-disagree", help="largest share of images whose OK/NG "
                                                 "decision may differ (default 0, INT8 0.03)"),
    max_auroc_drop: Optional[float] = FloatOption(None, "--max-auroc-drop", help="largest image AUROC drop in points "
                                                   "on labelled images (default 0.5)"),
    max_images: int = typer.Option(200, "--max-images", help="images to use at most (spread over the folder)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON"),
    providers: Providers = None,
    device: Device = "auto",
    onnx: EngineOnnx = None,
    cuda_graph: CudaGraph = False,
) -> None:
    """Polygraphy-style comparison of artifacts on real images: output differences, NaN/inf, score ranking,
    OK/NG agreement, AUROC; exit 1 past the tolerances."""
    raise typer.Exit(run_compare(CompareRequest(
        models=list(models), images=images, atol=atol, max_disagree=max_disagree, max_auroc_drop=max_auroc_drop,
        max_images=max_images, json_out=json_out,
        load=load_options(device=device, providers=providers, onnx=onnx, cuda_graph=cuda_graph))))


@dataclass
class CompareRequest:
    """`dualkd-edge compare` as the user asked for it."""

    models: list[Path]
    images: Path
    atol: float | None = None
    max_disagree: float | None = None
    max_auroc_drop: float | None = None
    max_images: int = 200
    json_out: Path | None = None
    load: LoadOptions = field(default_factory=load_options)  # --cuda-graph goes to the engines among the models

    def validate(self) -> None:
        if len(self.models) < 2:
            raise UserError("compare: give at least two models (A B [C ...]); each is compared with the first")
        for m in self.models:
            if not Path(m).exists():
                raise UserError(f"MODEL: not found: {m}")
        if self.atol is not None and self.atol < 0:
            raise UserError(f"--atol: must be >= 0, got {self.atol}")
        if self.max_disagree is not None and not 0 <= self.max_disagree <= 1:
            raise UserError(f"--max-disagree: expected a share in [0, 1], got {self.max_disagree}")
        if self.max_images < 1:
            raise UserError(f"--max-images: must be >= 1, got {self.max_images}")
        from dualkd_edge.output_paths import check_outputs

        check_outputs(files={"--json": self.json_out}, inputs={"MODEL": self.models, "--images": self.images})


def run_compare(req: CompareRequest) -> int:
    """Exit code 0 when every candidate agrees with the first model within its tolerances, else 1."""
    from dualkd_edge.artifacts import ENGINE_SUFFIXES
    from dualkd_edge.detector import Detector
    from dualkd_edge.evaluation.comparison import Tolerance, compare_detectors, comparison_images
    from dualkd_edge.fileio import json_bytes
    from dualkd_edge.output_paths import write_result
    from dualkd_edge.runtime.made_for import artifact_precision

    req.validate()
    pictures, labels = comparison_images(req.images, req.max_images)
    with ExitStack() as stack:
        dets = [stack.enter_context(Detector.load(m, options=replace(
            req.load, cuda_graph=req.load.cuda_graph and Path(m).suffix.lower() in ENGINE_SUFFIXES)))
            for m in req.models]
        reference_precision = artifact_precision(dets[0].meta)
        tolerances = [Tolerance.for_precisions([reference_precision, artifact_precision(d.meta)])
                      .with_overrides(req.atol, req.max_disagree, req.max_auroc_drop) for d in dets[1:]]
        results = compare_detectors(dets[0], dets[1:], pictures, labels, tolerances,
                                    names=[str(m) for m in req.models])
    for r in results:
        print(r.format())
    if req.json_out is not None:
        write_result(req.json_out, json_bytes({"images": str(req.images), "labelled": labels is not None,
                                               "comparisons": [r.to_dict() for r in results]}), "--json")
    return 0 if all(r.passed for r in results) else 1
