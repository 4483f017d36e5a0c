"""`dualkd-edge improve`: learn from the operators' answers (review/improve.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dualkd_edge.commands.options import FloatOption


def command(
    model: Path = typer.Argument(..., help="the model the review folder's frames came from (.onnx, run directory, engine)"),
    review: Path = typer.Option(..., "--review", help="DIR of `infer --review DIR`, with the operators' answers"),
    out: Path = typer.Option(..., "--out", help="NEW model, written only when it is not worse (else NEW.rejected)"),
    data: Optional[Path] = typer.Option(None, "--data", help="training data: also fine-tune the students on it plus "
                                        "the frames confirmed good (needs the run MODEL came from, and PyTorch)"),
    run: Optional[Path] = typer.Option(None, "--run", help="the run directory MODEL was exported from (default: the "
                                       "one its metadata names)"),
    test: Optional[Path] = typer.Option(None, "--test", help="the original test split to compare on (default: --data)"),
    steps: int = typer.Option(100, "--steps", help="fine-tuning steps"),
    max_fpr: Optional[float] = FloatOption(None, "--max-fpr", help="false-alarm budget of the new calibration "
                                           "(default: the base calibration's)"),
    tolerance: float = FloatOption(2.0, "--tolerance", help="points by which the new model may be worse on any "
                                   "measure (false alarms, catch rate, AUROC) and still be written"),
    name: Optional[str] = typer.Option(None, "--name", help="name of the new calibration (default: BASE-reviewed)"),
) -> None:
    """Learn from the operators' answers: recalibrate (and with --data fine-tune), compare old and new on
    held-out answers and the test split, write NEW only if it is not worse."""
    from dualkd_edge.review import improve as improving

    raise typer.Exit(improving.run(improving.ImproveRequest(
        model=model, review=review, out=out, data=data, run=run, test=test, steps=steps, max_fpr=max_fpr,
        tolerance=tolerance, name=name)))
