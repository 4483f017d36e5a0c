"""`dualkd-edge presets`: the named model configurations with geometry, training length, sizes and GMACs."""

from __future__ import annotations

import importlib


def command() -> None:
    """List the model presets: input geometry, default training steps, parameter counts and GMACs."""
    print(run())


def run() -> str:
    from dualkd_edge.console.tables import text_table
    from dualkd_edge.model.complexity import count_model
    from dualkd_edge.presets import PRESETS

    rows = []
    try:
        importlib.import_module("torch")
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
