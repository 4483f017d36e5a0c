"""How big a preset's inference graph is: parameters per network and GMACs (export metadata,
`presets`, the bench's achieved GFLOP/s)."""

from __future__ import annotations

from dualkd_edge.presets import Preset


def count_model(preset: Preset) -> dict[str, float]:
    """Parameter counts and GMACs of the inference graph, measured on the meta device (no memory)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dualkd_edge.model.dual_student import (
        DualStudentModel,
        InferenceModel,
        NoisyOrScoring,
    )

    with torch.device("meta"):
        model = DualStudentModel(preset)
        graph = InferenceModel(model, NoisyOrScoring(preset)).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            graph(torch.zeros(1, 3, preset.img_size, preset.img_size))

    def millions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    return {
        "teacher_m": millions(model.teacher),
        "ed_m": millions(model.ed_student),
        "ee_m": millions(model.ee_student),
        "gmacs": counter.get_total_flops() / 2e9,
    }
