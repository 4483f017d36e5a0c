"""The dual-student model (features only) and the inference graph with fused Noisy-OR scoring."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dualkd_edge.artifacts.contract import OUTPUT_NAMES
from dualkd_edge.metadata import Calibration
from dualkd_edge.model.students import ClassTokenStudent, EncoderDecoderStudent
from dualkd_edge.model.teacher import DinoTeacher
from dualkd_edge.presets import Preset


@dataclass
class DualOutputs:
    teacher_groups: list[torch.Tensor]  # each (B, N, C)
    student_groups: list[torch.Tensor]  # each (B, N, C)
    teacher_cls: torch.Tensor  # (B, C), centred
    student_cls: torch.Tensor  # (B, C)


class DualStudentModel(nn.Module):
    """Frozen teacher shared by the Encoder-Decoder and the Encoder-Encoder student."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        self.teacher = DinoTeacher(preset)
        self.ed_student = EncoderDecoderStudent(preset)
        self.ee_student = ClassTokenStudent(preset)
        # Mean teacher class token over the training images: a random teacher's class token is
        # nearly constant, only its centred part carries information (docs/design.md section 3).
        self.register_buffer("semantic_centre", torch.zeros(preset.teacher_dim))

    def forward(self, x: torch.Tensor) -> DualOutputs:
        with torch.no_grad():
            t_groups, fused, t_cls = self.teacher(x)
        s_groups = self.ed_student(fused)
        s_cls = self.ee_student(x)
        return DualOutputs(t_groups, s_groups, t_cls - self.semantic_centre, s_cls)

    def student_parameters(self) -> list[nn.Parameter]:
        return [*self.ed_student.parameters(), *self.ee_student.parameters()]


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class NoisyOrScoring(nn.Module):
    """Anomaly map, local/semantic scores, calibrated probabilities and their Noisy-OR fusion.

    Everything here is traced into the exported graph, so it avoids full-resolution TopK."""

    def __init__(self, preset: Preset, calibration: Calibration | None = None) -> None:
        super().__init__()
        self.img_size = preset.img_size
        self.grid = preset.grid
        k = gaussian_kernel1d(preset.blur_sigma)
        self.register_buffer("blur_h", k.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("blur_v", k.view(1, 1, -1, 1), persistent=False)
        self.pad = k.numel() // 2
        # The top-1% local score is taken on a map reduced to about 56x56 (TensorRT limits TopK).
        self.reduce = max(1, round(preset.img_size / 56))
        n_reduced = (preset.img_size // self.reduce) ** 2
        self.top_k = max(1, int(round(n_reduced * preset.top_percent / 100.0)))
        self.register_buffer("calib", torch.tensor([0.0, 1.0, 0.0, 1.0, 3.0]))  # muL sL muS sS beta
        if calibration is not None:
            self.set_calibration(calibration)

    def set_calibration(self, c: Calibration) -> None:
        self.calib.copy_(torch.tensor(
            [c.local.mu, c.local.sigma, c.semantic.mu, c.semantic.sigma, c.beta], dtype=torch.float32
        ))

    def anomaly_map(self, out: DualOutputs) -> torch.Tensor:
        maps = [1.0 - F.cosine_similarity(t, s, dim=-1) for t, s in zip(out.teacher_groups, out.student_groups)]
        amap = torch.stack(maps).mean(0)  # (B, N)
        amap = amap.reshape(-1, 1, self.grid, self.grid)
        amap = F.interpolate(amap, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        amap = F.pad(amap, (self.pad, self.pad, 0, 0), mode="replicate")
        amap = F.conv2d(amap, self.blur_h)
        amap = F.pad(amap, (0, 0, self.pad, self.pad), mode="replicate")
        return F.conv2d(amap, self.blur_v)

    def forward(self, out: DualOutputs) -> dict[str, torch.Tensor]:
        amap = self.anomaly_map(out)
        reduced = F.avg_pool2d(amap, self.reduce) if self.reduce > 1 else amap
        local = torch.topk(reduced.flatten(1), self.top_k, dim=1).values.mean(1)
        semantic = 1.0 - F.cosine_similarity(out.student_cls, out.teacher_cls, dim=-1)
        mu_l, s_l, mu_s, s_s, beta = self.calib.unbind(0)
        z_local = (local - mu_l) / s_l - beta
        z_semantic = (semantic - mu_s) / s_s - beta
        p_local = torch.sigmoid(z_local)
        p_semantic = torch.sigmoid(z_semantic)
        score = 1.0 - (1.0 - p_local) * (1.0 - p_semantic)
        # -log(1 - P): ranks as P does, without P's saturation at 1.0 (dualkd_edge/scoring.py).
        score_logit = stable_softplus(z_local) + stable_softplus(z_semantic)
        return {"score": score, "local_score": local, "semantic_score": semantic, "anomaly_map": amap,
                "score_logit": score_logit}


def stable_softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) from standard ops that cannot overflow (ONNX Softplus may, in TensorRT)."""
    return F.relu(x) + torch.log(1.0 + torch.exp(-x.abs()))


# score_logit last: exports made before it keep their output order.
class InferenceModel(nn.Module):
    """Image in, the five outputs out: what is exported as one ONNX graph.

    input_dtype "float": NCHW float32 already normalised.  "uint8": NHWC uint8 BGR at model size;
    channel swap, scaling and mean/std happen inside the graph."""

    def __init__(self, model: DualStudentModel, scoring: NoisyOrScoring, input_dtype: str = "float") -> None:
        super().__init__()
        self.model = model
        self.scoring = scoring
        self.input_dtype = input_dtype
        p = model.preset
        self.register_buffer("mean", torch.tensor(p.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(p.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.input_dtype == "uint8":
            # Cast first: TensorRT takes UINT8 only as a network input straight into a Cast (no
            # Transpose or Slice of UINT8 tensors).
            x = x.float().permute(0, 3, 1, 2).flip(1) * (1.0 / 255.0)  # NHWC BGR -> NCHW RGB
            x = (x - self.mean) * self.inv_std
        out = self.scoring(self.model(x))
        return tuple(out[name] for name in OUTPUT_NAMES)
