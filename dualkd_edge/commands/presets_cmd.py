"""`dualkd-edge presets`: the named model configurations with geometry, training length, sizes and GMACs."""

from __future__ import annotations

from dualkd_edge.presets import PRESETS, Preset
from dualkd_edge.tables import text_table


def count_model(preset: Preset) -> dict[str, float]:
    """Parameter counts and GMACs of the inference graph, measured on the meta device (no memory)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dualkd_edge.model.dual_student import DualStudentModel, InferenceModel, NoisyOrScoring

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


def run() -> str:
    rows = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    for p in PRESETS.values():
        c = count_model(p) if have_torch else {}
        rows.append([p.name, f"{p.img_size}", f"{p.resize}" if p.crop else "-", f"{p.crop}" if p.crop else "-",
                     p.default_steps, p.hard_mining_ramp_steps, p.teacher_timm_name or "custom ViT (random init)",
                     *(f"{c[k]:.1f}" if c else "?" for k in ("teacher_m", "ed_m", "ee_m", "gmacs")),
                     p.description])
    table = text_table(["preset", "px", "resize", "crop", "steps", "ramp", "teacher", "teacher M", "ED M", "EE M",
                        "GMACs", "use"], rows)
    table += ("\n(px: model input; resize/crop: the image is resized to `resize` and its centre `crop` px are "
              "the input, '-' = resized straight to px; steps: default training steps (--steps overrides); "
              "ramp: hard-mining ramp in steps)")
    if not have_torch:
        table += "\n(parameter counts and GMACs need PyTorch: pip install 'dualkd-edge[train]')"
    return table
