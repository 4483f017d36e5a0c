"""The two students: Encoder-Decoder (patch features) and Encoder-Encoder (class token)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dualkd_edge.presets import Preset

# Dinomaly uses 1e-8, which underflows in FP16; 1e-6 keeps TensorRT FP16 engines sane.
LN_EPS = 1e-6


class LinearAttention(nn.Module):
    """Kernelised linear attention (phi = elu + 1): O(N) and unable to focus on single tokens,
    which keeps the decoder from learning an identity mapping of anomalies (Dinomaly)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = F.elu(qkv[0]) + 1.0, F.elu(qkv[1]) + 1.0, qkv[2]
        kv = k.transpose(-2, -1) @ v  # (b, h, d, d)
        normaliser = 1.0 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)  # (b, h, n, 1)
        out = (q @ kv) * normaliser
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = LinearAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class NoisyBottleneck(nn.Module):
    """MLP D -> 4D -> D with dropout as feature noise (active only in training)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(4 * dim, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def dinomaly_init(module: nn.Module) -> None:
    """Dinomaly's initialisation of bottleneck and decoder: small truncated-normal Linear weights
    (std 0.01, cut at 3 std), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.01, a=-0.03, b=0.03)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class EncoderDecoderStudent(nn.Module):
    """Reconstructs each teacher layer group from the fused teacher features."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        dim = preset.teacher_dim
        n_groups = len(preset.layer_groups)
        if preset.decoder_depth % n_groups:
            raise ValueError("decoder_depth must be a multiple of the number of layer groups")
        self.bottleneck = NoisyBottleneck(dim, preset.bottleneck_dropout)
        self.blocks = nn.ModuleList(DecoderBlock(dim, preset.decoder_heads) for _ in range(preset.decoder_depth))
        self.per_group = preset.decoder_depth // n_groups
        self.n_groups = n_groups
        self.apply(dinomaly_init)

    def forward(self, fused: torch.Tensor) -> list[torch.Tensor]:
        x = self.bottleneck(fused)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        # The decoder runs deep -> shallow: its last blocks reconstruct the first (shallow) group.
        outs = outs[::-1]
        return [
            torch.stack(outs[g * self.per_group:(g + 1) * self.per_group]).mean(0)
            for g in range(self.n_groups)
        ]


class ClassTokenStudent(nn.Module):
    """A DINOv2-architecture ViT trained from scratch to reproduce the teacher's (centred) class token.

    Only the class token supervises it, so it cannot learn the identity of the input. Its blocks
    carry LayerScale (`preset.ee_layerscale`) as DINOv2's do."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        from dualkd_edge.model.teacher import dinov2_architecture_vit

        self.vit = dinov2_architecture_vit(preset.img_size, preset.patch_size, preset.ee_dim, preset.ee_depth,
                                           preset.ee_heads, preset.ee_reg_tokens, init_values=preset.ee_layerscale)
        self.head = nn.Linear(preset.ee_dim, preset.teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit.forward_features(x)[:, 0])
