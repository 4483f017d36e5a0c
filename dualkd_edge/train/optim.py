"""Optimiser, learning-rate schedules and gradient clipping of the two students (docs/method.md).

One StableAdamW (torch-optimi) with a parameter group per student, each with its own recipe:
the Encoder-Decoder student follows Dinomaly (lr 2e-3, weight decay 1e-4 on every tensor, eps
1e-10, 100 warm-up steps, gradient norm clipped at 0.1); the class-token student is a ViT trained
from scratch and gets a gentler recipe of our choosing (lower lr, weight decay 0.05 except on
biases, norms, LayerScale and tokens, a longer warm-up, its own clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualkd_edge.train.losses import lr_at

BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class StudentRecipe:
    lr: float  # peak; linear warm-up, then cosine decay to 10%
    weight_decay: float
    warmup: int  # steps
    grad_clip: float  # max gradient norm over this student's parameters
    eps: float


def student_param_groups(model: nn.Module, ed: StudentRecipe, ee: StudentRecipe) -> list[dict]:
    """Parameter groups tagged with their student ("ed", "ee") so schedules and clipping stay apart."""
    from timm.optim import param_groups_weight_decay

    ed_group = {"params": list(model.ed_student.parameters()), "lr": ed.lr, "weight_decay": ed.weight_decay,
                "eps": ed.eps, "student": "ed"}
    vit_no_decay = {f"vit.{name}" for name in model.ee_student.vit.no_weight_decay()}
    ee_groups = param_groups_weight_decay(model.ee_student, ee.weight_decay, no_weight_decay_list=vit_no_decay)
    for g in ee_groups:  # 1-D tensors (biases, norms, LayerScale) and tokens: no decay
        g.update(lr=ee.lr, eps=ee.eps, student="ee")
    return [ed_group, *ee_groups]


def stable_adamw(groups: list[dict]) -> torch.optim.Optimizer:
    """Dinomaly's optimiser family: AdamW with per-tensor update clipping (StableAdamW), from
    torch-optimi. It has no AMSGrad; docs/method.md, lists where it differs from Dinomaly's."""
    from optimi import StableAdamW

    first = groups[0]
    return StableAdamW(groups, lr=first["lr"], betas=BETAS, weight_decay=first["weight_decay"], eps=first["eps"],
                       foreach=False)


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total: int,
                       recipes: dict[str, StudentRecipe]) -> None:
    for group in optimizer.param_groups:
        r = recipes[group["student"]]
        group["lr"] = lr_at(step, total, r.lr, r.warmup)


def clip_each_student(model: nn.Module, recipes: dict[str, StudentRecipe]) -> None:
    """Clip each student's gradient norm on its own: under one global norm, one student's large
    gradients would shrink the other's steps."""
    for name, module in (("ed", model.ed_student), ("ee", model.ee_student)):
        params = [p for p in module.parameters() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, recipes[name].grad_clip)
