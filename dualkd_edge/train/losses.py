"""Distillation losses and the Noisy-OR training objective (docs/method.md)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dualkd_edge.train.distributed import global_quantile


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient element-wise by `scale`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def loose_cosine_loss(teacher: torch.Tensor, student: torch.Tensor, easy_share: float,
                      easy_grad_factor: float = 0.1) -> torch.Tensor:
    """1 - cos(vec(F_T), vec(F_S)) per image ("loose", global over the whole group), with hard
    mining: the gradient of the `easy_share` best-reconstructed tokens is scaled by 0.1."""
    if easy_share > 0:
        with torch.no_grad():
            token_dist = 1.0 - F.cosine_similarity(teacher, student, dim=-1)  # (B, N)
            # over the whole global batch when it is split over processes (train/distributed.py)
            threshold = global_quantile(token_dist.flatten().float(), easy_share)
            scale = torch.where(token_dist < threshold, easy_grad_factor, 1.0).unsqueeze(-1).to(student.dtype)
        student = _ScaleGrad.apply(student, scale)
    return (1.0 - F.cosine_similarity(teacher.flatten(1), student.flatten(1), dim=1)).mean()


def local_distillation_loss(teacher_groups: list[torch.Tensor], student_groups: list[torch.Tensor],
                            easy_share: float) -> torch.Tensor:
    """L_SD = 1/G * sum_i loose_cosine(F_T^i, F_SD^i) (G = 2 groups in the presets)."""
    losses = [loose_cosine_loss(t, s, easy_share) for t, s in zip(teacher_groups, student_groups)]
    return torch.stack(losses).mean()


def semantic_distillation_loss(teacher_cls: torch.Tensor, student_cls: torch.Tensor) -> torch.Tensor:
    """1 - cos between the student's output and the teacher's centred class token."""
    return (1.0 - F.cosine_similarity(teacher_cls, student_cls, dim=-1)).mean()


def noisy_or_objective(d_local: torch.Tensor, d_semantic: torch.Tensor, tau_local: float,
                       tau_semantic: float) -> torch.Tensor:
    """-log P(normal) = -log[(1 - p_L)(1 - p_S)] with p_k = 1 - exp(-d_k / tau_k)
    = d_L / tau_L + d_S / tau_S."""
    return d_local / tau_local + d_semantic / tau_semantic


def easy_share_at(step: int, ramp_steps: int, final_share: float) -> float:
    """Hard-mining share ramps linearly from 0 to `final_share` over the first `ramp_steps` steps
    (Dinomaly: 1000), then stays."""
    return final_share * min(1.0, step / max(1, ramp_steps))


def lr_at(step: int, total_steps: int, base_lr: float, warmup: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to base_lr * final_ratio."""
    import math

    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return base_lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
