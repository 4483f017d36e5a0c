"""Named model configurations. Plain data, no torch: the CLI lists them instantly."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import IMAGENET_MEAN, IMAGENET_STD, InputSpec


@dataclass(frozen=True)
class Preset:
    """Everything needed to build the dual-student model (see docs/method.md)."""

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
    # timm's DINOv2 LayerScale init; None for random teachers (docs/design.md section 3).
    teacher_init_values: float | None = 1e-5
    blur_sigma: float = 4.0
    top_percent: float = 1.0
    default_weights: str = "none"
    # Geometry: the whole image is resized to `resize` px square and its centre `crop` px (= img_size)
    # are the model input (Dinomaly: 448 / 392). None, None: resized straight to img_size.
    resize: int | None = None
    crop: int | None = None
    # Semantic target: the teacher's class token minus its mean over the training images (the
    # centre). A random teacher needs it; False regresses the plain class token, as the paper states.
    semantic_centring: bool = True
    # LayerScale init of the class-token student's blocks; None: none (runs made before it existed).
    ee_layerscale: float | None = None
    # Training length (`train --steps` overrides it) and the hard-mining ramp in steps (Dinomaly:
    # 10,000 iterations, ramp over the first 1,000), clipped to the run's length.
    default_steps: int = 1000
    hard_mining_ramp_steps: int = 1000

    def __post_init__(self) -> None:
        if self.crop is not None:
            if self.crop != self.img_size:
                raise UserError(f"preset {self.name}: crop {self.crop} must equal the input size {self.img_size}")
            if self.resize is None or self.resize < self.crop:
                raise UserError(f"preset {self.name}: a crop of {self.crop} needs resize >= {self.crop}, "
                                f"got {self.resize}")
        elif self.resize not in (None, self.img_size):
            raise UserError(f"preset {self.name}: resize {self.resize} without a crop must equal the input "
                            f"size {self.img_size} (or set crop={self.img_size})")
        if self.default_steps < 1 or self.hard_mining_ramp_steps < 1:
            raise UserError(f"preset {self.name}: default_steps and hard_mining_ramp_steps must be >= 1")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """A preset read from a file is input: sizes far beyond any DINOv2 (ViT-g: 1536 wide, 40 deep)
        would ask for unbounded memory before the weights could say they do not fit."""
        bounds = {"img_size": (14, 4096), "teacher_dim": (8, 4096), "teacher_depth": (1, 64), "teacher_heads": (1, 64),
                  "teacher_reg_tokens": (0, 64), "decoder_depth": (1, 64), "decoder_heads": (1, 64),
                  "ee_dim": (8, 4096), "ee_depth": (1, 64), "ee_heads": (1, 64), "ee_reg_tokens": (0, 64),
                  "patch_size": (1, 64)}
        for name, (lo, hi) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise UserError(f"preset {self.name}: {name} = {value!r} is outside {lo}..{hi}")
        if self.teacher_dim % self.teacher_heads or self.ee_dim % self.ee_heads:
            raise UserError(f"preset {self.name}: the widths must divide by the head counts")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def input_spec(self) -> InputSpec:
        """The float input spec of a model built from this preset (resize/crop included)."""
        return InputSpec(height=self.img_size, width=self.img_size, dtype="float", mean=self.mean, std=self.std,
                         resize=self.resize if self.crop is not None else None, crop=self.crop)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_groups"] = [list(g) for g in self.layer_groups]
        return d

    @classmethod
    def from_dict(cls, d: dict | str, source: str = "metadata") -> "Preset":
        """The preset an artifact records (in full, so that it loads whatever presets exist now).
        A bare name is looked up among the built-in presets; anything else is a clear error."""
        if isinstance(d, str):
            if d in PRESETS:
                return PRESETS[d]
            raise UserError(f"{source}: preset {d!r} does not exist; expected one of {', '.join(PRESETS)} "
                            "or a full preset description")
        if not isinstance(d, dict):
            raise UserError(f"{source}: 'preset' must be a preset description, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # older artifacts may carry retired fields ("extra")
        try:
            d["layer_groups"] = tuple(tuple(g) for g in d["layer_groups"])
            d["mean"] = tuple(d.get("mean", IMAGENET_MEAN))
            d["std"] = tuple(d.get("std", IMAGENET_STD))
            return cls(**d)
        except (KeyError, TypeError, ValueError) as exc:
            required = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
            detail = f"missing {', '.join(required)}" if required else f"{type(exc).__name__}: {exc}"
            raise UserError(f"{source}: preset {d.get('name', '?')!r} is not a usable preset description "
                            f"({detail}); built-in presets: {', '.join(PRESETS)}") from None


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
            ee_layerscale=0.1,
            # CPU-friendly: about 10 minutes on two cores; the ramp keeps Dinomaly's 10% ratio.
            default_steps=500,
            hard_mining_ramp_steps=50,
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
            ee_layerscale=0.1,
            # Half of Dinomaly's 10,000: a single line's few hundred images see ~200 epochs at batch 16
            # (our choice, not measured with real weights). No crop: defects at the frame border count.
            default_steps=5000,
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
            ee_layerscale=0.1,
            resize=448, crop=392,  # as Dinomaly and its published numbers
            default_steps=10000,
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"--preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
