"""Frozen DINOv2 teacher: grouped mid-level patch features and the final normed class token."""

from __future__ import annotations

import torch
from torch import nn

from dualkd_edge.presets import Preset


def dinov2_architecture_vit(img_size: int, patch_size: int, dim: int, depth: int, heads: int,
                            reg_tokens: int, init_values: float | None) -> nn.Module:
    """A timm ViT laid out like DINOv2 (registers, class token outside the position embedding)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                             num_heads=heads, mlp_ratio=4.0, init_values=init_values, reg_tokens=reg_tokens,
                             no_embed_class=True, num_classes=0)


def build_dinov2_vit(preset: Preset) -> nn.Module:
    """The teacher ViT: timm's DINOv2 model when the preset names one, else a custom small one."""
    import timm

    if preset.teacher_timm_name is not None:
        return timm.create_model(
            preset.teacher_timm_name, pretrained=False, img_size=preset.img_size, num_classes=0
        )
    return dinov2_architecture_vit(preset.img_size, preset.patch_size, preset.teacher_dim, preset.teacher_depth,
                                   preset.teacher_heads, preset.teacher_reg_tokens, preset.teacher_init_values)


class DinoTeacher(nn.Module):
    """Runs the ViT once and returns (per-group mean patch features, all-layer fused features,
    final normed class token). Always frozen and in eval mode."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.vit = build_dinov2_vit(preset)
        self.layer_groups = [list(g) for g in preset.layer_groups]
        self.layers = sorted({i for g in self.layer_groups for i in g})
        depth = len(self.vit.blocks)
        if self.layers[-1] >= depth:
            raise ValueError(f"layer group index {self.layers[-1]} >= teacher depth {depth}")
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DinoTeacher":
        # The teacher never trains: keep dropout/droppath off whatever the parent does.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        layer_feats: dict[int, torch.Tensor] = {}
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i in self.layers:
                layer_feats[i] = x[:, self.num_prefix_tokens:]
        cls = vit.norm(x)[:, 0]
        groups = [torch.stack([layer_feats[i] for i in g]).mean(0) for g in self.layer_groups]
        fused = torch.stack([layer_feats[i] for i in self.layers]).mean(0)
        return groups, fused, cls
