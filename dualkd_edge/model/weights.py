"""Teacher weights: timm hub, local files in the official DINOv2 or timm layout, or random init."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from dualkd_edge.errors import UserError
from dualkd_edge.metadata import NOT_PRETRAINED_LABEL, TeacherWeights
from dualkd_edge.presets import Preset

log = logging.getLogger("dualkd_edge")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors without unpickling arbitrary objects (safetensors, or torch weights_only)."""
    if not path.is_file():
        raise UserError(f"--weights: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"--weights: {path} is not a readable weights file "
                        f"(safetensors or a tensors-only .pth): {reason}") from None
    for key in ("model", "state_dict", "teacher"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"--weights: {path} does not hold a flat dict of tensors")
    return sd


def load_state_dict_into_vit(vit: nn.Module, sd: dict[str, torch.Tensor], source: str, preset: Preset) -> None:
    """Convert (official DINOv2 keys, pos-embed size) with timm's filter, then load strictly."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        sd = checkpoint_filter_fn(dict(sd), vit)
    except Exception as exc:  # noqa: BLE001 - shape errors while resampling
        raise UserError(f"--weights: {source} does not fit preset {preset.name!r}: {str(exc)[:200]}") from None
    own = vit.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith("head")}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"shape mismatch: {', '.join(wrong[:3])}" if wrong else "",
            f"missing keys: {', '.join(missing[:3])}" if missing else "",
            f"unexpected keys: {', '.join(unexpected[:3])}" if unexpected else "",
        ]))
        raise UserError(f"--weights: {source} does not fit preset {preset.name!r} "
                        f"(teacher {preset.teacher_dim} wide, {preset.teacher_depth} deep): {detail}")
    vit.load_state_dict(sd, strict=True)


def load_teacher_weights(vit: nn.Module, spec: str, preset: Preset) -> TeacherWeights:
    """Fill the teacher ViT per `--weights` (none | hub | PATH) and say where the weights came from."""
    if spec == "none":
        log.warning("teacher: %s", NOT_PRETRAINED_LABEL)
        return TeacherWeights(origin="none", pretrained=False)
    if spec == "hub":
        return _load_from_hub(vit, preset)
    path = Path(spec).expanduser()
    load_state_dict_into_vit(vit, read_state_dict(path), str(path), preset)
    log.info("teacher: weights loaded from %s", path)
    return TeacherWeights(origin=str(path.resolve()), pretrained=True)


def _load_from_hub(vit: nn.Module, preset: Preset) -> TeacherWeights:
    import timm

    if preset.teacher_timm_name is None:
        raise UserError(f"--weights hub: preset {preset.name!r} has no published weights; "
                        "use --weights none or a checkpoint file")
    try:
        hub_model = timm.create_model(preset.teacher_timm_name, pretrained=True,
                                      img_size=preset.img_size, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - offline, DNS, proxy, HTTP errors all look different
        raise UserError(
            f"--weights hub: could not download {preset.teacher_timm_name} ({type(exc).__name__}); "
            "are you offline? Download the DINOv2 checkpoint (e.g. dinov2_vits14_reg4_pretrain.pth) "
            "elsewhere and pass --weights PATH"
        ) from None
    vit.load_state_dict(hub_model.state_dict(), strict=True)
    return TeacherWeights(origin=f"hub:timm/{preset.teacher_timm_name}", pretrained=True)
