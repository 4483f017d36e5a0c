"""How an engine is built from a given ONNX file, per TensorRT version: decided before TensorRT is
touched, so the decision is tested anywhere and `--print-trtexec` tells the same story.

- Strongly typed (every TensorRT 10.x and 11): precision comes from the graph. FP32 builds the
  FP32 export; FP16 builds the mixed FP16 graph (LayerNorm, Softmax, reductions and the whole
  scoring stay FP32, so the squared feature norms never overflow); INT8 builds a Q/DQ graph from
  `dualkd-edge quantize` (FP16 between the INT8 matmuls), quantizing here with `--calib` on
  TensorRT >= 10.12.
- Weak typing only where it cannot be avoided: INT8 by implicit calibration (no Q/DQ in the
  graph, `--calib`) on TensorRT < 10.12, whose builder flags are deprecated from 10.12 and gone in
  11. Every layer that must stay FP32 is pinned there (norms, softmax, reductions, TopK and every
  layer of the scoring head)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dualkd_edge.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8", "best")
STRONG_TYPING_SINCE = (10, 12)  # weak typing deprecated from here; strongly typed exists in every 10.x


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def weak_typing_available(tensorrt_version: str) -> bool:
    """Builder precision flags and INT8 calibrators: deprecated in 10.12, removed in 11."""
    return parse_version(tensorrt_version) < STRONG_TYPING_SINCE


@dataclass
class BuildOptions:
    precision: str = "fp16"
    calib: Path | None = None
    batch: str | None = None  # "MIN:OPT:MAX" for dynamic-batch models
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    dla_core: int | None = None
    optimization_level: int = 3
    calib_cache: Path | None = None
    check: bool = True  # run the offline TensorRT rules on the graph before building
    cuda_graph: bool = False

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workspace_gib <= 0:
            raise UserError(f"--workspace: must be > 0 GiB, got {self.workspace_gib}")
        if not 0 <= self.optimization_level <= 5:
            raise UserError(f"--opt-level: expected 0..5, got {self.optimization_level}")
        if self.dla_core is not None and self.precision == "fp32":
            raise UserError("--dla: DLA runs FP16 or INT8 only; choose --precision fp16, int8 or best")
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError(f"--dla: expected a DLA core index >= 0, got {self.dla_core}")
        self.batch_profile()

    def batch_profile(self) -> tuple[int, int, int] | None:
        if self.batch is None:
            return None
        try:
            lo, opt, hi = (int(v) for v in self.batch.split(":"))
        except ValueError:
            raise UserError(f"--batch: expected MIN:OPT:MAX (e.g. 1:4:8), got {self.batch!r}") from None
        if not 1 <= lo <= opt <= hi:
            raise UserError(f"--batch: need 1 <= MIN <= OPT <= MAX, got {self.batch!r}")
        return lo, opt, hi


@dataclass
class BuildPlan:
    strongly_typed: bool
    graph: str  # "as-is" | "to-fp16" | "quantize": what happens to the ONNX file before parsing
    precision: str  # what the engine computes in: fp32 | fp16 | int8
    calibrator: bool = False  # weak typing: implicit INT8 through an entropy calibrator
    notes: list[str] = field(default_factory=list)

    @property
    def path_taken(self) -> str:
        return "strongly-typed" if self.strongly_typed else "weak-typed (builder flags, implicit INT8 calibration)"


def plan_build(meta, opts: BuildOptions, tensorrt_version: str, static_batch: int | None,
               source: Path) -> BuildPlan:
    """Decide the path for `source` (its metadata `meta`) on this TensorRT version."""
    quantization = meta.export.get("quantization", {})
    if quantization.get("target") == "cpu":
        raise UserError(f"{source}: quantized for the CPU (UINT8 activations), which TensorRT rejects; "
                        "quantize with --target tensorrt")
    if opts.dla_core is not None and static_batch is None:
        raise UserError("--dla: DLA needs static shapes; export the model with a fixed --batch N")
    if static_batch is not None and opts.batch is not None:
        raise UserError(f"--batch: {source} has a static batch of {static_batch}; export it with --batch dynamic "
                        "for a batch profile")
    have = meta.export.get("precision", "fp32")
    want = opts.precision
    if want == "best":
        want = "int8" if have == "int8" or opts.calib else "fp16"
    if want == "fp32":
        if have != "fp32":
            raise UserError(f"--precision fp32: {source} is a {have} model; build from the FP32 export")
        return BuildPlan(True, "as-is", "fp32")
    if want == "fp16":
        if have == "int8":
            raise UserError(f"--precision fp16: {source} is an INT8 Q/DQ model, which builds as int8; give the FP32 "
                            "or FP16 export for an FP16 engine")
        return BuildPlan(True, "to-fp16" if have == "fp32" else "as-is", "fp16")
    # int8
    if have == "int8":
        return BuildPlan(True, "as-is", "int8")
    if opts.calib is None:
        raise UserError("--precision int8: give the Q/DQ model from `dualkd-edge quantize`, or --calib DIR to "
                        "quantize now")
    if have != "fp32":
        raise UserError(f"--calib: INT8 calibration starts from the FP32 export, not a {have} model")
    if weak_typing_available(tensorrt_version):
        return BuildPlan(False, "as-is", "int8", calibrator=True,
                         notes=["implicit INT8 with an entropy calibrator (TensorRT < 10.12); the unquantized "
                                "layers run FP16 with norms, softmax and the scoring pinned to FP32"])
    return BuildPlan(True, "quantize", "int8",
                     notes=["quantized here with `dualkd-edge quantize` rules (Q/DQ, FP16 between the INT8 "
                            "matmuls); quantize beforehand to gate its accuracy"])


def input_shapes(meta, opts: BuildOptions, static_batch: int | None) -> tuple[tuple, tuple, tuple]:
    spec = meta.input
    per_image = (spec.height, spec.width, 3) if spec.dtype == "uint8" else (3, spec.height, spec.width)
    if static_batch is not None:
        s = (static_batch, *per_image)
        return s, s, s
    lo, opt, hi = opts.batch_profile() or (1, 1, 8)
    return (lo, *per_image), (opt, *per_image), (hi, *per_image)


# Layers a weak-typed FP16/INT8 build must keep in FP32 (by TensorRT layer type, and by name for the
# scoring head, whose cosine multiplies squared feature norms of ~1e5 in elementwise layers).
FP32_ONNX_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "TopK")
FP32_SCOPE = "/scoring/"


def pinned_fp32_nodes(proto) -> list[tuple[str, str]]:
    """(name, op type) of the ONNX nodes to pin to FP32; the parser names each TensorRT layer after its node."""
    return [(n.name, n.op_type) for n in proto.graph.node
            if n.name and (n.name.startswith(FP32_SCOPE) or n.op_type in FP32_ONNX_OPS)]


def trtexec_command(onnx_path: Path, engine: Path, opts: BuildOptions, shapes: tuple[tuple, tuple, tuple],
                    plan: BuildPlan, input_name: str = "images", pinned: list[tuple[str, str]] | None = None) -> str:
    """The equivalent command line for NVIDIA's trtexec (for the graph as it is parsed)."""
    dims = ["x".join(map(str, s)) for s in shapes]
    cmd = [f"trtexec --onnx={onnx_path} --saveEngine={engine}"]
    if shapes[0] != shapes[2]:
        cmd.append(f"--minShapes={input_name}:{dims[0]} --optShapes={input_name}:{dims[1]} "
                   f"--maxShapes={input_name}:{dims[2]}")
    if plan.strongly_typed:
        cmd.append("--stronglyTyped")
    else:
        cmd.append("--int8 --fp16" + (f" --calib={opts.calib_cache}" if opts.calib_cache else ""))
        if pinned:  # TopK's second output holds indices: its output types stay TensorRT's choice
            precisions = ",".join(f"{name}:fp32" for name, _ in pinned)
            outputs = ",".join(f"{name}:fp32" for name, op in pinned if op != "TopK")
            cmd.append(f"--precisionConstraints=obey --layerPrecisions={precisions} --layerOutputTypes={outputs}")
    cmd.append(f"--memPoolSize=workspace:{int(opts.workspace_gib * 1024)}M")
    cmd.append(f"--builderOptimizationLevel={opts.optimization_level}")
    if opts.timing_cache:
        cmd.append(f"--timingCacheFile={opts.timing_cache}")
    if opts.dla_core is not None:
        cmd.append(f"--useDLACore={opts.dla_core} --allowGPUFallback")
    return " ".join(cmd)


def calibration_cache_path(onnx_path: Path, calib_dir: Path, engine: Path) -> Path:
    """Keyed by the model's content and the calibration set: a retrained model (or other images)
    never picks up scales calibrated for another one."""
    import hashlib

    from dualkd_edge.compile.int8.calibration_images import list_calibration_files

    model_digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:12]
    listing = "\n".join(f"{p.name}:{p.stat().st_size}" for p in list_calibration_files(calib_dir))
    images_digest = hashlib.sha256(listing.encode()).hexdigest()[:8]
    return engine.parent / f"{Path(onnx_path).stem}.{model_digest}.{images_digest}.calib_cache"
