"""The one artifact contract: every run directory, ONNX file and engine carries this metadata.

The runtime needs nothing else to pre-process inputs, read outputs and decide.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dualkd_edge.version import __version__
from dualkd_edge.errors import UserError

# 2: InputSpec resize/crop (an older reader would silently skip the crop), output score_logit.
# 3: named camera calibrations and the threshold history (an older reader would silently decide with
#    the training threshold instead of the station's).
SCHEMA_VERSION = 3
TRAINING_CALIBRATION = "training"  # the name of the calibration made at training time
# DINOv2's (ImageNet's) input normalisation; every preset uses it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NOT_PRETRAINED_LABEL = "NOT PRETRAINED (random-init teacher): scores only show the pipeline works"


@dataclass
class InputSpec:
    """How images become the model's input."""

    height: int
    width: int
    # "float": NCHW float32, RGB, normalised with mean/std.  "uint8": NHWC uint8 BGR at model size;
    # the graph does colour swap, scaling and normalisation itself.
    dtype: str = "float"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    color: str = "RGB"
    layout: str = "NCHW"
    batch: int | str = "dynamic"
    # Geometry: the image is resized to `resize` px square, then its centre `crop` px (= height =
    # width) are the input. None, None (artifacts made before these fields): resized straight to
    # height x width, nothing cropped.
    resize: int | None = None
    crop: int | None = None

    @property
    def resize_hw(self) -> tuple[int, int]:
        """The size the whole image is resized to before any crop."""
        return (self.resize, self.resize) if self.crop is not None and self.resize else (self.height, self.width)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)


@dataclass
class BranchCalibration:
    mu: float
    sigma: float


@dataclass
class MapCalibration:
    """Anomaly-map values over all pixels of the held-out normal images: the fixed colour scale of
    overlays (map_scale.py) and the level of defect outlines and masks (`max`)."""

    median: float
    high: float  # the value at `high_quantile`
    max: float  # the largest value on any normal pixel: beyond it is "beyond what normal parts show"
    high_quantile: float = 0.999
    n_pixels: int = 0


@dataclass
class Calibration:
    """Statistics of held-out normal images for the Noisy-OR probabilities and the heat-map scale."""

    local: BranchCalibration
    semantic: BranchCalibration
    beta: float = 3.0
    n_images: int = 0
    # None in artifacts made before the calibrated heat-map scale: overlays then stretch each map.
    anomaly_map: MapCalibration | None = None
    # score_logit of the calibration images at the quantiles 0, 0.01, ..., 1: what the drift watch
    # compares live scores with (decision/drift.py). None in artifacts made before it.
    score_quantiles: list[float] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        quantiles = d.get("score_quantiles")
        return cls(
            local=BranchCalibration(**d["local"]),
            semantic=BranchCalibration(**d["semantic"]),
            beta=float(d.get("beta", 3.0)),
            n_images=int(d.get("n_images", 0)),
            anomaly_map=MapCalibration(**d["anomaly_map"]) if d.get("anomaly_map") else None,
            score_quantiles=[float(q) for q in quantiles] if quantiles else None,
        )


@dataclass
class NamedCalibration:
    """A calibration made on a station's own frames (`dualkd-edge calibrate`): the Noisy-OR statistics,
    the normal anomaly-map range and the threshold at a false-alarm budget, with what they came from."""

    name: str
    calibration: Calibration
    threshold: float  # on the probability `score`
    max_fpr: float | None = None  # the budget the threshold was chosen for
    promised_fpr: float | None = None  # upper confidence bound of the false-alarm rate at the threshold
    frames: int = 0  # frames the statistics came from (outliers not counted)
    outliers: int = 0  # commissioning frames set aside as probably not good
    source: str = ""  # redacted
    created: str = ""  # ISO 8601, UTC
    model_id: str = ""  # the model the frames were scored with
    # The raw branch scores of the frames it was made from (outliers left out): `improve` adds the
    # reviewed good frames to them. {"local": [...], "semantic": [...]}; None in older calibrations.
    raw_scores: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "NamedCalibration":
        d = dict(d)
        d["calibration"] = Calibration.from_dict(d["calibration"])
        return cls(**d)

@dataclass
class TeacherWeights:
    origin: str  # "none", "hub:<name>", or a file path
    pretrained: bool

    @property
    def label(self) -> str:
        return self.origin if self.pretrained else NOT_PRETRAINED_LABEL


@dataclass
class ArtifactMetadata:
    preset: dict
    input: InputSpec
    calibration: Calibration
    teacher_weights: TeacherWeights
    threshold: float = 0.5
    training: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__
    # Station calibrations, oldest first: the last one is the default (`infer --calibration NAME`).
    calibrations: list[NamedCalibration] = field(default_factory=list)
    # Every threshold and calibration change, appended, never rewritten (decision/history.py).
    history: list[dict] = field(default_factory=list)

    def calibration_names(self) -> list[str]:
        return [TRAINING_CALIBRATION] + [c.name for c in self.calibrations]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["teacher_weights"]["label"] = self.teacher_weights.label
        # What is written has this schema's fields, whatever version the artifact was read as.
        d["schema_version"] = SCHEMA_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, source: str = "metadata") -> "ArtifactMetadata":
        try:
            version = int(d["schema_version"])
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"{source}: metadata schema {version} is newer than this dualkd-edge understands "
                    f"({SCHEMA_VERSION}); upgrade dualkd-edge"
                )
            tw = dict(d["teacher_weights"])
            tw.pop("label", None)
            spec = InputSpec.from_dict(d["input"])
            from dualkd_edge.artifacts.checks import check_input_spec

            check_input_spec(spec, source)  # sizes are input, not truth: before anything allocates by them
            return cls(
                preset=d["preset"],
                input=spec,
                calibration=Calibration.from_dict(d["calibration"]),
                teacher_weights=TeacherWeights(**tw),
                threshold=float(d.get("threshold", 0.5)),
                training=d.get("training", {}),
                export=d.get("export", {}),
                schema_version=version,
                tool_version=d.get("tool_version", "unknown"),
                calibrations=[NamedCalibration.from_dict(c) for c in d.get("calibrations", [])],
                history=list(d.get("history", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source}: not dualkd-edge metadata (missing or bad field: {exc})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> "ArtifactMetadata":
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: metadata is not valid JSON ({exc})") from None
