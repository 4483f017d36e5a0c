"""`dualkd-edge train`: joint Noisy-OR training of both students against the frozen teacher."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dualkd_edge.version import __version__
from dualkd_edge.errors import UserError
from dualkd_edge.metadata import (
    ArtifactMetadata,
    BranchCalibration,
    Calibration,
    TeacherWeights,
)
from dualkd_edge.model.checkpoint import (
    is_run_dir,
    load_run,
    load_train_state,
    read_run_metadata,
    save_run,
    save_train_state,
)
from dualkd_edge.model.dual_student import DualStudentModel
from dualkd_edge.model.weights import load_teacher_weights
from dualkd_edge.preprocess import normalize_nhwc_bgr
from dualkd_edge.presets import Preset, get_preset
from dualkd_edge.console.progress import Progress
from dualkd_edge.runtime.torch_backend import resolve_device
from dualkd_edge.train.calibrate import calibrate, teacher_class_token_mean
from dualkd_edge.train.distributed import (
    barrier,
    backend_name,
    broadcast_from_main,
    context_from_env,
    device_for,
    init_group,
    leave_group,
    mean_over_ranks,
    quiet_other_ranks,
    shard,
)
from dualkd_edge.train.images import load_training_images
from dualkd_edge.train.losses import (
    easy_share_at,
    local_distillation_loss,
    noisy_or_objective,
    semantic_distillation_loss,
)
from dualkd_edge.train.optim import (
    BETAS,
    StudentRecipe,
    clip_each_student,
    set_learning_rates,
    stable_adamw,
    student_param_groups,
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
    # Class-token student: a ViT from scratch, our recipe (docs/method.md).
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
    nproc: int = 1  # data-parallel processes (`launch`); torchrun sets its own group instead

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
        if self.nproc < 1:
            raise UserError(f"--nproc: must be >= 1, got {self.nproc}")

    def check_split(self, world: int) -> None:
        """The global batch is cut into equal shards, one per process."""
        if self.batch_size % world:
            raise UserError(f"--batch-size: {self.batch_size} images cannot be split evenly over {world} processes; "
                            f"use a multiple of {world}")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    final_losses: dict
    calibration: Calibration
    stopped_by: str | None = None  # e.g. "SIGTERM": stopped early, a checkpoint to --resume from was written


def _autocast(device: str) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler | None]:
    if not device.startswith("cuda"):
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
        preset = Preset.from_dict(prev.preset, f"{out}/run.json")
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


class TimeBudget:
    """Fits the number of steps to `--max-time` once a step's cost is known (after 3 steps), and
    again after 20 (allocations and thread pools make the first steps slow)."""

    FIRST, SECOND = 3, 20

    def __init__(self, seconds: float | None, start_step: int) -> None:
        self.seconds = seconds
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self._mark: tuple[float, int] | None = None

    def refit(self, step: int, planned: int) -> int | None:
        """A smaller step count when the budget asks for one at this step, else None."""
        done = step - self.start_step
        if not self.seconds or done not in (self.FIRST, self.SECOND):
            return None
        now = time.perf_counter()
        if done == self.FIRST:
            self._mark = (now, step)
            per_step = (now - self.t0) / done
        else:
            per_step = (now - self._mark[0]) / (step - self._mark[1])
        fitted = step + int((self.seconds - (now - self.t0)) / per_step)
        if fitted >= planned:
            return None
        log.info("--max-time %.0fs: training for %d steps (%.2f s/step, %s)", self.seconds, max(step + 1, fitted),
                 per_step, "first estimate" if done == self.FIRST else "re-estimated")
        return max(step + 1, fitted)


class Trainer:
    """One training run: data, the model (new or resumed), the two students' optimiser recipes,
    the loop, calibration and checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        from dualkd_edge.output_paths import check_outputs

        cfg.validate()
        self.cfg = cfg
        self.dist = context_from_env()
        quiet_other_ranks(self.dist)
        cfg.check_split(self.dist.world)
        self.out = Path(cfg.out)
        # Before minutes of training: the run directory can be written and is not the data.
        check_outputs(folders={"--out": self.out}, inputs={"DATA": cfg.data})
        self.preset, self.total = planned_run(cfg, self.out)
        self.stop_requested: str | None = None
        self.device = device_for(self.dist, resolve_device(cfg.device))
        self.owns_group = init_group(self.dist, self.device)
        torch.manual_seed(cfg.seed)
        self.data = load_training_images(cfg.data, self.preset.input_spec(), cfg.holdout_fraction, cfg.seed)
        cats = len(self.data.summary["categories"])
        log.info("data: %d training + %d held-out images in %d categor%s", self.data.summary["n_train"],
                 self.data.summary["n_holdout"], cats, "y" if cats == 1 else "ies")
        state = self._build_model()
        if self.start_step >= self.total:
            raise UserError(f"--steps: the run already has {self.start_step} steps; ask for more to resume")
        self.recipes = _recipes(cfg, self.total)
        self.optimizer = stable_adamw(student_param_groups(self.model, self.recipes["ed"], self.recipes["ee"]))
        if state is not None:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError):
                log.warning("--resume: the optimizer state was written by an older dualkd-edge (AdamW); "
                            "continuing with fresh StableAdamW moments")
        self.autocast, self.scaler = _autocast(self.device)
        self.ramp = cfg.hard_mining_ramp_steps or self.preset.hard_mining_ramp_steps
        self.losses: dict = {}
        self.forward = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged over the processes in backward(); the weights start as rank 0's.
            self.forward = DistributedDataParallel(self.model, device_ids=[self.dist.local_rank]
                                                   if self.device.startswith("cuda") else None)
            # Dropout draws its own noise per process (the same seed would repeat one mask per shard).
            torch.manual_seed(cfg.seed * 1000 + self.start_step * 10 + self.dist.rank + 1)

    def _build_model(self) -> dict | None:
        """A new model (teacher weights, class-token centre) or the resumed one; its train state."""
        cfg, preset = self.cfg, self.preset
        if cfg.resume:
            self.model, prev_meta = load_run(self.out, self.device)
            self.teacher_weights = prev_meta.teacher_weights
            state = load_train_state(self.out)
            self.start_step = int(state["step"])
            torch.set_rng_state(state["torch_rng"])
        else:
            self.model = DualStudentModel(preset)
            self.teacher_weights = load_teacher_weights(self.model.teacher.vit, cfg.weights or preset.default_weights,
                                                        preset)
            self.model.to(self.device)
            if preset.semantic_centring:
                self.model.semantic_centre.copy_(teacher_class_token_mean(self.model, self.data.train))
            state, self.start_step = None, 0
        self.model.train()
        return state

    def metadata(self, calibration: Calibration, step: int, finished: bool, seconds: float) -> ArtifactMetadata:
        cfg, preset = self.cfg, self.preset
        return ArtifactMetadata(
            preset=preset.to_dict(), input=preset.input_spec(), calibration=calibration,
            teacher_weights=TeacherWeights(self.teacher_weights.origin, self.teacher_weights.pretrained),
            training={
                "finished": finished, "step": step, "steps": self.total, "batch_size": cfg.batch_size,
                "lr": cfg.lr, "seed": cfg.seed, "device": self.device, "seconds": round(seconds, 1),
                "processes": self.dist.world, "batch_per_process": cfg.batch_size // self.dist.world,
                "process_group": backend_name(),
                "objective": {"tau_local": cfg.tau_local, "tau_semantic": cfg.tau_semantic},
                "optimizer": {"name": "StableAdamW (torch-optimi)", "betas": list(BETAS),
                              **{k: asdict(r) for k, r in self.recipes.items()}},
                "hard_mining_ramp_steps": min(self.ramp, self.total),
                "final_losses": self.losses, "data": self.data.summary, "tool_version": __version__,
                "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                              if k not in ("data", "out", "preset")}, "preset": preset.name},
            },
        )

    def step(self, step: int) -> None:
        """One optimisation step of both students (the Noisy-OR objective)."""
        cfg, preset = self.cfg, self.preset
        set_learning_rates(self.optimizer, step, self.total, self.recipes)
        idx = shard(_batch_indices(len(self.data.train), cfg.batch_size, cfg.seed, step), self.dist)
        x = torch.from_numpy(normalize_nhwc_bgr(self.data.train[idx], preset.mean, preset.std)).to(self.device)
        with self.autocast:
            outs = self.forward(x)
            easy = easy_share_at(step, min(self.ramp, self.total), cfg.easy_share_final)
            d_local = local_distillation_loss([t.float() for t in outs.teacher_groups],
                                              [s.float() for s in outs.student_groups], easy)
            d_sem = semantic_distillation_loss(outs.teacher_cls.float(), outs.student_cls.float())
            loss = noisy_or_objective(d_local, d_sem, cfg.tau_local, cfg.tau_semantic)
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            clip_each_student(self.model, self.recipes)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            clip_each_student(self.model, self.recipes)
            self.optimizer.step()
        self.losses = mean_over_ranks({"loss": loss.item(), "local": d_local.item(), "semantic": d_sem.item()},
                                      self.device)

    def request_stop(self, reason: str = "a stop request") -> None:
        """Finish the step in flight, write a checkpoint to --resume from, then stop (what Ctrl-C
        and SIGTERM do in `train`)."""
        self.stop_requested = reason

    def run(self) -> TrainResult:
        cfg = self.cfg
        uncalibrated = Calibration(BranchCalibration(0.0, 1.0), BranchCalibration(0.0, 1.0), cfg.beta, 0)
        main = self.dist.is_main
        progress = Progress(self.total, "train", "step", start=self.start_step, enabled=cfg.progress and main)
        budget = TimeBudget(cfg.max_time, self.start_step)
        planned, step = self.total, self.start_step
        try:
            while step < self.total and not self.stop_requested:
                self.step(step)
                step += 1
                progress.update(1, " ".join(f"{k} {v:.4f}" for k, v in self.losses.items()))
                fitted = budget.refit(step, planned)
                if cfg.max_time and self.dist.active:
                    fitted = broadcast_from_main(fitted)  # every process stops at rank 0's step
                if fitted is not None:
                    self.total = progress.total = fitted
                    self.recipes = _recipes(cfg, self.total)  # warm-up lengths follow the fitted schedule
                if self.dist.active:
                    self.stop_requested = broadcast_from_main(self.stop_requested)  # all ranks stop together
                if main and step % cfg.checkpoint_every == 0 and step < self.total and not self.stop_requested:
                    self._intermediate_checkpoint(step, uncalibrated, time.perf_counter() - budget.t0)
        finally:
            progress.close()
        stopped = self.stop_requested
        calibration = uncalibrated
        if not stopped:
            self.model.eval()
            calibration = self._calibrate() if main else uncalibrated
        seconds = time.perf_counter() - budget.t0
        if main:  # a stopped run is saved uncalibrated, as a checkpoint to --resume from
            self._save(step, self.metadata(calibration, step, not stopped, seconds))
        barrier()  # the run is on disk before any process returns
        return TrainResult(self.out, step, seconds, self.losses, calibration, stopped_by=stopped)

    def _calibrate(self) -> Calibration:
        holdout = self.data.holdout
        if len(holdout) == 0:
            log.warning("too few images for a held-out split: calibrating on training images")
            holdout = self.data.train
        return calibrate(self.model, holdout, self.cfg.beta)

    def close(self) -> None:
        leave_group(self.owns_group)

    def _intermediate_checkpoint(self, step: int, calibration: Calibration, seconds: float) -> None:
        """A checkpoint that cannot be written (disk full for a while) does not end the run: the
        final save tries again and keeps the result elsewhere if it must."""
        from dualkd_edge.output_paths import describe_os_error

        try:
            _checkpoint(self.out, self.model, self.optimizer, step, self.metadata(calibration, step, False, seconds))
        except OSError as exc:
            log.warning("checkpoint at step %d not written (%s); training goes on", step, describe_os_error(exc))

    def _save(self, step: int, meta: ArtifactMetadata) -> None:
        """The run as it ends; where --out cannot take it any more, it is kept in the fallback
        folder and the error says where (minutes of training are not thrown away)."""
        from dualkd_edge.output_paths import keep_elsewhere, not_written

        try:
            _checkpoint(self.out, self.model, self.optimizer, step, meta)
        except OSError as exc:
            kept = keep_elsewhere(self.out, lambda folder: _checkpoint(folder, self.model, self.optimizer, step, meta))
            raise not_written("--out", self.out, exc, kept + " (a complete run directory: move it into place, or "
                                                         "pass it to eval / export)") from None


def train(cfg: TrainConfig) -> TrainResult:
    """One process trains; under torchrun (or `launch`) this process trains its share."""
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.close()


def _checkpoint(out: Path, model: DualStudentModel, optimizer: torch.optim.Optimizer, step: int,
                meta: ArtifactMetadata) -> None:
    save_run(out, model, meta)
    save_train_state(out, {"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()})
