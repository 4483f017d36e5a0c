"""Named model configurations. Plain data, no torch: the CLI lists them instantly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dualkd_edge.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """Everything needed to build the dual-student model (see README, method section)."""

    name: str
    description: str
    img_size: int
    # Teacher: a timm DINOv2 architecture; `teacher_timm_name` None builds a small custom one.
    teacher_timm_name: str | None
    teacher_dim: int
    teacher_depth: int
    teacher_heads: int
    teacher_reg_tokens: int
    # Mid-level teacher layers, grouped; each group's mean is one distillation target.
    layer_groups: tuple[tuple[int, ...], ...]
    decoder_depth: int
    decoder_heads: int
    # Encoder-Encoder (class-token) student, trained from scratch.
    ee_dim: int
    ee_depth: int
    ee_heads: int
    ee_reg_tokens: int = 4
    bottleneck_dropout: float = 0.2
    patch_size: int = 14
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # timm's DINOv2 LayerScale init; None for random teachers (DESIGN.md section 5).
    teacher_init_values: float | None = 1e-5
    blur_sigma: float = 4.0
    top_percent: float = 1.0
    default_weights: str = "none"
    extra: dict = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_groups"] = [list(g) for g in self.layer_groups]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        d = dict(d)
        d["layer_groups"] = tuple(tuple(g) for g in d["layer_groups"])
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny",
            description="random-init DINOv2-architecture teacher for tests and the demo (CPU, minutes)",
            img_size=112,
            teacher_timm_name=None,
            teacher_dim=192, teacher_depth=8, teacher_heads=3, teacher_reg_tokens=4,
            layer_groups=((1, 2, 3), (4, 5, 6)),
            decoder_depth=4, decoder_heads=3,
            ee_dim=192, ee_depth=4, ee_heads=3,
            teacher_init_values=None,
            blur_sigma=2.0,
        ),
        Preset(
            name="edge-s224",
            description="DINOv2 ViT-S/14 + 4 registers at 224 px: the Jetson preset",
            img_size=224,
            teacher_timm_name="vit_small_patch14_reg4_dinov2",
            teacher_dim=384, teacher_depth=12, teacher_heads=6, teacher_reg_tokens=4,
            layer_groups=((2, 3, 4, 5), (6, 7, 8, 9)),
            decoder_depth=8, decoder_heads=6,
            ee_dim=384, ee_depth=6, ee_heads=6,
            default_weights="hub",
        ),
        Preset(
            name="paper-b392",
            description="DINOv2 ViT-B/14 + 4 registers at 392 px: the accuracy setting (GPU)",
            img_size=392,
            teacher_timm_name="vit_base_patch14_reg4_dinov2",
            teacher_dim=768, teacher_depth=12, teacher_heads=12, teacher_reg_tokens=4,
            layer_groups=((2, 3, 4, 5), (6, 7, 8, 9)),
            decoder_depth=8, decoder_heads=12,
            ee_dim=768, ee_depth=12, ee_heads=12,
            default_weights="hub",
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"--preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
