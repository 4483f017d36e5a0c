"""`dualkd-edge train`: joint Noisy-OR training of both students against the frozen teacher."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dualkd_edge import __version__
from dualkd_edge.errors import UserError
from dualkd_edge.metadata import ArtifactMetadata, BranchCalibration, Calibration, TeacherWeights
from dualkd_edge.model.checkpoint import (
    is_run_dir, load_run, load_train_state, read_run_metadata, save_run, save_train_state,
)
from dualkd_edge.model.dual_student import DualStudentModel
from dualkd_edge.model.weights import load_teacher_weights
from dualkd_edge.presets import Preset, get_preset
from dualkd_edge.preprocess import normalize_nhwc_bgr
from dualkd_edge.progress import Progress
from dualkd_edge.runtime.torch_backend import resolve_device
from dualkd_edge.train.calibrate import calibrate, teacher_class_token_mean
from dualkd_edge.train.images import load_training_images
from dualkd_edge.train.losses import (
    easy_share_at, local_distillation_loss, noisy_or_objective, semantic_distillation_loss,
)
from dualkd_edge.train.optim import (
    BETAS, StudentRecipe, clip_each_student, set_learning_rates, stable_adamw, student_param_groups,
)

log = logging.getLogger("dualkd_edge")


@dataclass
class TrainConfig:
    data: list[Path]
    out: Path
    preset: str | Preset = "tiny"  # a preset name, or a Preset (e.g. another resize/crop)
    weights: str | None = None  # none | hub | PATH; None = the preset's default
    steps: int | None = None  # None: the preset's default_steps (with --resume: the run's planned total)
    batch_size: int = 16
    # Encoder-Decoder student: Dinomaly's recipe.
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None  # None: 10% of steps, at most 100
    grad_clip: float = 0.1
    # Class-token student: a ViT from scratch, our recipe (README, method section).
    ee_lr: float = 5e-4
    ee_weight_decay: float = 0.05
    ee_warmup_steps: int | None = None  # None: 10% of steps, at most 1000
    ee_grad_clip: float = 1.0
    semantic_centring: bool | None = None  # None: the preset's
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 500
    max_time: float | None = None  # seconds; the step count is fitted to it after a few steps
    holdout_fraction: float = 0.1
    tau_local: float = 1.0
    tau_semantic: float = 1.0
    easy_share_final: float = 0.9
    hard_mining_ramp_steps: int | None = None  # None: the preset's; clipped to the run's length
    beta: float = 3.0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "hard_mining_ramp_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
        for name in ("lr", "ee_lr", "grad_clip", "ee_grad_clip"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.holdout_fraction < 1:
            raise UserError(f"--holdout: must be in [0, 1), got {self.holdout_fraction}")
        if self.max_time is not None and self.max_time <= 0:
            raise UserError(f"--max-time: must be > 0 seconds, got {self.max_time}")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    final_losses: dict
    calibration: Calibration


def _autocast(device: str) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler | None]:
    if device != "cuda":
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def _batch_indices(n: int, batch: int, seed: int, step: int) -> np.ndarray:
    # Derived from (seed, step) so a resumed run draws exactly the batches it would have drawn.
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=n < batch)


def planned_run(cfg: TrainConfig, out: Path) -> tuple[Preset, int]:
    """The preset to train (a resumed run keeps its own) and the planned number of steps."""
    if cfg.resume:
        if not is_run_dir(out):
            raise UserError(f"--resume: {out} is not a run directory with a checkpoint")
        prev = read_run_metadata(out)
        preset = Preset.from_dict(prev.preset)
        if cfg.semantic_centring is not None and cfg.semantic_centring != preset.semantic_centring:
            raise UserError("--semantic-centring: a resumed run keeps the semantic target it was started with")
        return preset, cfg.steps or int(prev.training.get("steps", preset.default_steps))
    if is_run_dir(out):
        raise UserError(f"--out: {out} already holds a run; pass --resume to continue it or choose another folder")
    preset = cfg.preset if isinstance(cfg.preset, Preset) else get_preset(cfg.preset)
    if cfg.semantic_centring is not None:
        preset = replace(preset, semantic_centring=cfg.semantic_centring)
    return preset, cfg.steps or preset.default_steps


def _recipes(cfg: TrainConfig, total: int) -> dict[str, StudentRecipe]:
    ed_warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, max(1, total // 10))
    ee_warmup = cfg.ee_warmup_steps if cfg.ee_warmup_steps is not None else min(1000, max(1, total // 10))
    return {"ed": StudentRecipe(cfg.lr, cfg.weight_decay, ed_warmup, cfg.grad_clip, eps=1e-10),
            "ee": StudentRecipe(cfg.ee_lr, cfg.ee_weight_decay, ee_warmup, cfg.ee_grad_clip, eps=1e-8)}


def train(cfg: TrainConfig) -> TrainResult:
    cfg.validate()
    out = Path(cfg.out)
    preset, total = planned_run(cfg, out)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    data = load_training_images(cfg.data, preset.input_spec(), cfg.holdout_fraction, cfg.seed)
    log.info("data: %d training + %d held-out images in %d categor%s", data.summary["n_train"],
             data.summary["n_holdout"], len(data.summary["categories"]),
             "y" if len(data.summary["categories"]) == 1 else "ies")

    if cfg.resume:
        model, prev_meta = load_run(out, device)
        teacher_weights = prev_meta.teacher_weights
        state = load_train_state(out)
        start_step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
    else:
        model = DualStudentModel(preset)
        weights = cfg.weights or preset.default_weights
        teacher_weights = load_teacher_weights(model.teacher.vit, weights, preset)
        model.to(device)
        if preset.semantic_centring:
            model.semantic_centre.copy_(teacher_class_token_mean(model, data.train))
        state, start_step = None, 0
    model.train()

    if start_step >= total:
        raise UserError(f"--steps: the run already has {start_step} steps; ask for more to resume")
    recipes = _recipes(cfg, total)
    optimizer = stable_adamw(student_param_groups(model, recipes["ed"], recipes["ee"]))
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError):
            log.warning("--resume: the optimizer state was written by an older dualkd-edge (AdamW); "
                        "continuing with fresh StableAdamW moments")
    autocast, scaler = _autocast(device)
    ramp_setting = cfg.hard_mining_ramp_steps or preset.hard_mining_ramp_steps

    def meta_now(calibration: Calibration, step: int, finished: bool, losses: dict, seconds: float) -> ArtifactMetadata:
        return ArtifactMetadata(
            preset=preset.to_dict(),
            input=preset.input_spec(),
            calibration=calibration,
            teacher_weights=TeacherWeights(teacher_weights.origin, teacher_weights.pretrained),
            training={
                "finished": finished, "step": step, "steps": total, "batch_size": cfg.batch_size,
                "lr": cfg.lr, "seed": cfg.seed, "device": device, "seconds": round(seconds, 1),
                "objective": {"tau_local": cfg.tau_local, "tau_semantic": cfg.tau_semantic},
                "optimizer": {"name": "StableAdamW (torch-optimi)", "betas": list(BETAS),
                              **{k: asdict(r) for k, r in recipes.items()}},
                "hard_mining_ramp_steps": min(ramp_setting, total),
                "final_losses": losses, "data": data.summary, "tool_version": __version__,
                "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                              if k not in ("data", "out", "extra", "preset")}, "preset": preset.name},
            },
        )

    uncalibrated = Calibration(BranchCalibration(0.0, 1.0), BranchCalibration(0.0, 1.0), cfg.beta, 0)
    progress = Progress(total, "train", "step", start=start_step, enabled=cfg.progress)
    t0 = time.perf_counter()
    losses: dict = {}
    step = start_step
    planned = total
    n = len(data.train)
    try:
        while step < total:
            set_learning_rates(optimizer, step, total, recipes)
            idx = _batch_indices(n, cfg.batch_size, cfg.seed, step)
            x = torch.from_numpy(normalize_nhwc_bgr(data.train[idx], preset.mean, preset.std)).to(device)
            with autocast:
                outs = model(x)
                easy = easy_share_at(step, min(ramp_setting, total), cfg.easy_share_final)
                d_local = local_distillation_loss([t.float() for t in outs.teacher_groups],
                                                  [s.float() for s in outs.student_groups], easy)
                d_sem = semantic_distillation_loss(outs.teacher_cls.float(), outs.student_cls.float())
                loss = noisy_or_objective(d_local, d_sem, cfg.tau_local, cfg.tau_semantic)
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                clip_each_student(model, recipes)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                clip_each_student(model, recipes)
                optimizer.step()
            step += 1
            losses = {"loss": loss.item(), "local": d_local.item(), "semantic": d_sem.item()}
            progress.update(1, f"loss {losses['loss']:.4f} local {losses['local']:.4f} "
                               f"sem {losses['semantic']:.4f}")
            if cfg.max_time and step - start_step in (3, 20):
                # Fit the schedule to the time budget once a step's cost is known; refit after the
                # first slow steps (allocations, thread pools) are behind us.
                if step - start_step == 3:
                    t_fit, step_fit = time.perf_counter(), step
                    per_step = (t_fit - t0) / 3
                else:
                    per_step = (time.perf_counter() - t_fit) / (step - step_fit)
                remaining = cfg.max_time - (time.perf_counter() - t0)
                fitted = step + int(remaining / per_step)
                if fitted < planned:
                    total = max(step + 1, fitted)
                    recipes = _recipes(cfg, total)  # warm-up lengths follow the fitted schedule
                    progress.total = total
                    log.info("--max-time %.0fs: training for %d steps (%.2f s/step, %s)", cfg.max_time, total, per_step,
                             "first estimate" if step - start_step == 3 else "re-estimated")
            if step % cfg.checkpoint_every == 0 and step < total:
                _checkpoint(out, model, optimizer, step, meta_now(uncalibrated, step, False, losses,
                                                                  time.perf_counter() - t0))
    finally:
        progress.close()

    model.eval()
    holdout = data.holdout
    if len(holdout) == 0:
        log.warning("too few images for a held-out split: calibrating on training images")
        holdout = data.train
    calibration = calibrate(model, holdout, cfg.beta)
    seconds = time.perf_counter() - t0
    _checkpoint(out, model, optimizer, step, meta_now(calibration, step, True, losses, seconds))
    return TrainResult(out, step, seconds, losses, calibration)


def _checkpoint(out: Path, model: DualStudentModel, optimizer: torch.optim.Optimizer, step: int,
                meta: ArtifactMetadata) -> None:
    save_run(out, model, meta)
    save_train_state(out, {"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()})
