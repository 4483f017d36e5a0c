"""GPU check of the PyTorch model: the full dual-student inference forward (teacher + both students +
Noisy-OR scoring, the forward the ONNX export traces) in three modes x three precisions x two batch
sizes, with latency, throughput, peak GPU memory and parity against an FP32 CPU reference.

    bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]        # the wrapper records nvidia-smi too
    python benchmarks/gpu_check.py --out DIR [--dry-run]

Real run (one CUDA GPU, ~7 min): presets edge-s224 and paper-b392, batch 1 and 8. --dry-run (CPU,
< 1 min on 2 cores): preset tiny, batch 1 and 2, a few iterations; CUDA graphs are skipped ('no CUDA')
and torch.compile too (CPU inductor takes minutes on 2 cores; --with-compile runs it anyway).

Choices (recorded in results.json under "method"):
- Teachers are random-init (timm, pretrained=False): speed does not depend on the weights. One model
  per preset is built on the CPU with a fixed seed and copied to the GPU, so the CPU reference has
  exactly the same weights. The semantic centre is set to the mean teacher class token of the parity
  images and the scoring is calibrated on them (beta 0), so that `score` spreads over (0, 1) instead
  of saturating: its parity and rank agreement then mean something.
- Modes: `eager`; `cuda_graph`: torch.cuda.CUDAGraph capture of the eager forward on a static input
  buffer (warm-up on a side stream as the PyTorch docs prescribe; the timed call is replay() alone,
  the input being already in the static buffer); `compile`: torch.compile(mode="default",
  dynamic=False). Default, not "max-autotune-no-cudagraphs": max-autotune benchmarks GEMM configs
  per shape and takes minutes per (preset, batch, precision) for paper-b392, which does not fit 8
  minutes for 12 compiles (--compile-mode changes it).
- Precisions: FP32 is strict IEEE FP32 on the GPU (TF32 off for matmul and cuDNN) so that it is
  comparable to the CPU; FP16/BF16 by torch.autocast (cache_enabled=False, required for CUDA graphs):
  the weights, the frozen teacher's included, stay FP32, matmuls/convolutions run in half precision,
  autocast keeps its FP32 ops (layer_norm, softmax, cosine_similarity, exp, log on CUDA) in FP32.
  --precision-method cast converts model (teacher shared) and input with .to(dtype) instead.
- Latency: synchronize, perf_counter, forward, synchronize (one call = one batch; p50/p90 over the
  iterations); throughput = batch / mean latency. Peak memory (peak_mem_mib): this model's FP32
  weights + torch.cuda.max_memory_allocated over the step (set-up, warm-up, timing, parity; reset
  before each step) above what was allocated before it; peak_mem_process_mib is the raw figure, with
  the other preset's model that stays resident.
- Parity: the mode's outputs on the parity images (run in chunks of the step's batch) against the FP32
  CPU reference: max abs diff of every output (score and anomaly_map in the table), Spearman rank
  correlation of `score` and the fraction of image pairs in the same order.
- Time boxes: warm-up and timing stop at an iteration count or a time limit, whichever comes first;
  every step first checks the remaining budget (--budget-s, from process start) against its estimate
  and records 'skipped: time budget' instead of overrunning. Cheap steps (eager, CUDA graphs) run
  first, torch.compile last, in the order FP16, BF16, FP32 (batch 1 then 8, presets alternating). A failing step records its error and the run goes on. results.json and
  results.md are rewritten (temp file + os.replace) after every step, so a killed run keeps its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

T_START = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PRECISIONS = ("fp32", "fp16", "bf16")
COMPILE_PRIORITY = ("fp16", "bf16", "fp32")  # what a deployment would use first, when the budget runs out
MODES = ("eager", "cuda_graph", "compile")

# Iteration and time boxes per step; the compile estimate is a prior until one compile was measured.
REAL = dict(presets=("edge-s224", "paper-b392"), batches=(1, 8), n_parity=8, warm_iters=20, warm_s=1.0,
            min_iters=20, max_iters=300, measure_s=2.0, budget_s=420.0,
            compile_prior_s={"edge-s224": 75.0, "paper-b392": 110.0})
DRY = dict(presets=("tiny",), batches=(1, 2), n_parity=4, warm_iters=2, warm_s=0.5,
           min_iters=3, max_iters=10, measure_s=0.5, budget_s=120.0, compile_prior_s={})
RESERVE_S = 8.0  # kept for the final files


class Interrupted(BaseException):
    """SIGTERM (the wrapper's `timeout`): stop, keep what was measured."""


def _on_term(signum, frame):  # noqa: ARG001
    raise Interrupted(f"signal {signum}")


def elapsed() -> float:
    return time.monotonic() - T_START


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def error_text(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:400]


# ---------------------------------------------------------------- the package's model, found robustly

def _import_first(names: list[str]):
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("; ".join(errors))


def model_components():
    """(get_preset, DualStudentModel, NoisyOrScoring, InferenceModel, OUTPUT_NAMES). The classes live
    in dualkd_edge.model.dual_student today; any module of dualkd_edge.model that has them will do."""
    from dualkd_edge.presets import get_preset

    wanted = ("DualStudentModel", "NoisyOrScoring", "InferenceModel")
    try:
        mod = importlib.import_module("dualkd_edge.model.dual_student")
    except ImportError:
        import pkgutil

        import dualkd_edge.model as pkg

        mod = None
        for info in pkgutil.walk_packages(pkg.__path__, "dualkd_edge.model."):
            try:
                candidate = importlib.import_module(info.name)
            except ImportError:
                continue
            if all(hasattr(candidate, w) for w in wanted):
                mod = candidate
                break
        if mod is None:
            raise ImportError("no module of dualkd_edge.model defines " + ", ".join(wanted)) from None
    names = getattr(mod, "OUTPUT_NAMES", None)
    if names is None:
        names = _import_first(["dualkd_edge.artifacts.contract", "dualkd_edge.contract"]).OUTPUT_NAMES
    return get_preset, mod.DualStudentModel, mod.NoisyOrScoring, mod.InferenceModel, tuple(names)


def parity_images(preset, n: int, seed: int):
    """n normalised NCHW float32 images at the model size: generated parts (some with defects) and,
    every fourth, uniform noise; all noise if the generator is not importable."""
    import numpy as np
    import torch

    size = preset.img_size
    rng = np.random.default_rng(seed)
    try:
        render_part = _import_first(["dualkd_edge.data.synth", "dualkd_edge.synth"]).render_part
    except (ImportError, AttributeError):
        render_part = None
    defects = (None, "spot", None, "scratch", None, "missing")
    images = []
    for i in range(n):
        if render_part is None or i % 4 == 3:
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        else:
            img = render_part("washer" if i % 2 else "bracket", seed + i, size=size, defect=defects[i % len(defects)])[0]
        images.append(img)
    x = np.stack(images)[..., ::-1].astype(np.float32) / 255.0  # BGR -> RGB
    x = (x - np.asarray(preset.mean, np.float32)) / np.asarray(preset.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def build_preset(name: str, n_parity: int, seed: int, components) -> dict:
    """The inference model (random-init teacher, fixed seed) on the CPU and its FP32 reference outputs."""
    import torch

    get_preset, DualStudentModel, NoisyOrScoring, InferenceModel, output_names = components
    preset = get_preset(name)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = DualStudentModel(preset).eval()
    scoring = NoisyOrScoring(preset).eval()
    module = InferenceModel(model, scoring, "float").eval()
    build_s = time.perf_counter() - t0
    x = parity_images(preset, n_parity, seed)
    t0 = time.perf_counter()
    notes = []
    with torch.inference_mode():
        feats = model(x)  # one CPU pass of the network; the scoring head is re-run on its features
        try:  # centre = mean teacher class token (the forward returns t_cls - centre, centre is 0 here)
            centre = feats.teacher_cls.mean(0)
            model.semantic_centre.copy_(centre)
            feats = dataclasses.replace(feats, teacher_cls=feats.teacher_cls - centre)
        except (AttributeError, TypeError) as exc:
            notes.append(f"semantic centre left at 0 ({error_text(exc)})")
        raw = scoring(feats)
        local, semantic = raw["local_score"], raw["semantic_score"]
        stats = [local.mean(), local.std().clamp_min(1e-6), semantic.mean(), semantic.std().clamp_min(1e-6)]
        scoring.calib.copy_(torch.stack([*stats, torch.tensor(0.0)]))  # mu_L s_L mu_S s_S beta
        out = scoring(feats)
        reference = {k: out[k].float().clone() for k in output_names}
        # The reference above is scoring(model(x)), which is InferenceModel's float forward: check it.
        check = module(x[:1])
        self_check = max(float((c.float() - reference[k][:1]).abs().max()) for k, c in zip(output_names, check))
    ref_s = time.perf_counter() - t0
    log(f"{name}: built in {build_s:.1f}s, CPU reference ({n_parity} images) in {ref_s:.1f}s")
    score = reference["score"]
    return {"module": module, "preset": preset, "x": x, "reference": reference, "output_names": output_names,
            "info": {"img_size": preset.img_size, "build_s": round(build_s, 2), "reference_s": round(ref_s, 2),
                     "n_parity": n_parity, "reference_self_check_max_abs": self_check,
                     "reference_score_min": float(score.min()), "reference_score_max": float(score.max()),
                     "reference_score_std": float(score.std()) if len(score) > 1 else 0.0,
                     "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 2),
                     "notes": notes}}


# ---------------------------------------------------------------- metrics

def _ranks(v):
    import numpy as np

    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def parity_metrics(outputs: dict, reference: dict) -> dict:
    import numpy as np

    res: dict = {"max_abs": {}}
    nonfinite = 0
    for k, ref in reference.items():
        got = outputs[k].numpy().astype(np.float64)
        exp = ref.numpy().astype(np.float64)
        nonfinite += int((~np.isfinite(got)).sum())
        d = np.abs(got - exp)
        res["max_abs"][k] = float(np.nanmax(d)) if np.isfinite(d).any() else float("nan")
    res["score_max_abs"] = res["max_abs"].get("score")
    res["map_max_abs"] = res["max_abs"].get("anomaly_map")
    ref_map = reference["anomaly_map"].numpy()
    res["map_ref_range"] = float(ref_map.max() - ref_map.min())
    res["nonfinite"] = nonfinite
    a = outputs["score"].numpy().astype(np.float64).ravel()
    b = reference["score"].numpy().astype(np.float64).ravel()
    res["n_images"] = len(b)
    if len(b) >= 2 and np.isfinite(a).all():
        ra, rb = _ranks(a), _ranks(b)
        sa, sb = ra - ra.mean(), rb - rb.mean()
        denom = math.sqrt(float((sa**2).sum() * (sb**2).sum()))
        res["spearman"] = float((sa * sb).sum() / denom) if denom else None
        i, j = np.triu_indices(len(b), 1)
        keep = b[i] != b[j]
        same = np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])
        res["pair_agreement"] = float(same[keep].mean()) if keep.any() else None
    else:
        res["spearman"] = res["pair_agreement"] = None
    return res


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


# ---------------------------------------------------------------- one step

class Runner:
    def __init__(self, cfg: dict, device: str, precision_method: str, compile_mode: str) -> None:
        import torch

        self.torch = torch
        self.cfg = cfg
        self.device = device
        self.cuda = device == "cuda"
        self.precision_method = precision_method
        self.compile_mode = compile_mode
        self.dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def precision(self, module, prec: str):
        """(module to run, input converter, context factory) for a precision."""
        torch = self.torch
        dtype = self.dtypes[prec]
        if prec == "fp32":
            return module, (lambda x: x), contextlib.nullcontext
        if self.precision_method == "cast":
            return copy.deepcopy(module).to(dtype), (lambda x: x.to(dtype)), contextlib.nullcontext
        return module, (lambda x: x), (lambda: torch.autocast(self.device, dtype=dtype, cache_enabled=False))

    def measure(self, call) -> dict:
        c = self.cfg
        t_end = time.monotonic() + c["warm_s"]
        for i in range(c["warm_iters"]):
            call()
            self.sync()
            if i >= 2 and time.monotonic() > t_end:
                break
        lat = []
        t_end = time.monotonic() + c["measure_s"]
        while len(lat) < c["max_iters"] and (len(lat) < c["min_iters"] or time.monotonic() < t_end):
            self.sync()
            t = time.perf_counter()
            call()
            self.sync()
            lat.append(time.perf_counter() - t)
        return {"iters": len(lat), "latency_ms_p50": percentile(lat, 50) * 1e3,
                "latency_ms_p90": percentile(lat, 90) * 1e3,
                "latency_ms_mean": sum(lat) / len(lat) * 1e3}

    def run_parity(self, fn, p: dict, batch: int) -> dict:
        torch = self.torch
        x = p["x"].to(self.device)
        chunks: dict = {k: [] for k in p["output_names"]}
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            n = len(xb)
            if n < batch:
                xb = torch.cat([xb, xb[-1:].expand(batch - n, *xb.shape[1:])])
            outs = fn(xb)
            self.sync()
            for k, t in zip(p["output_names"], outs):
                chunks[k].append(t[:n].detach().float().cpu().clone())
        return parity_metrics({k: torch.cat(v) for k, v in chunks.items()}, p["reference"])

    def step(self, p: dict, batch: int, mode: str, prec: str) -> dict:
        torch = self.torch
        module = p["device_module"]
        row: dict = {}
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        run_module, prep, ctx = self.precision(module, prec)  # a cast copy is allocated inside the step
        x_time = p["x"][torch.arange(batch) % len(p["x"])].to(self.device)

        if mode in ("eager", "compile"):
            target = run_module
            if mode == "compile":
                torch._dynamo.reset()
                with contextlib.suppress(Exception):
                    from torch._dynamo.utils import counters

                    counters.clear()
                target = torch.compile(run_module, mode=None if self.compile_mode == "default" else self.compile_mode,
                                       dynamic=False)

            def fn(x):
                with torch.inference_mode(), ctx():
                    return target(prep(x))

            t = time.perf_counter()
            fn(x_time)
            self.sync()
            row["setup_s"] = time.perf_counter() - t  # first call: the compile for `compile`
            if mode == "compile":
                with contextlib.suppress(Exception):
                    from torch._dynamo.utils import counters

                    row["graph_breaks"] = int(sum(counters["graph_break"].values()))
            row.update(self.measure(lambda: fn(x_time)))
        else:  # cuda_graph
            static_in = prep(x_time).clone()

            def body():
                with torch.no_grad(), ctx():
                    return run_module(static_in)

            t = time.perf_counter()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = body()
            self.sync()
            row["setup_s"] = time.perf_counter() - t  # warm-up + capture

            def fn(x):
                static_in.copy_(prep(x))
                graph.replay()
                return static_out

            row.update(self.measure(graph.replay))
        row["throughput_ips"] = batch / (row["latency_ms_mean"] / 1e3)
        row["parity"] = self.run_parity(fn, p, batch)
        if self.cuda:
            # Both presets' models stay on the GPU (compile runs last): count this model's weights and
            # what the step allocated on top of what was there before it.
            weights = 0 if run_module is not module else sum(
                t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
            row["peak_mem_mib"] = (torch.cuda.max_memory_allocated() - before + weights) / 2**20
            row["peak_mem_process_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return row


# ---------------------------------------------------------------- results files

def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and ((digits >= 4 and abs(v) < 10 ** -digits) or abs(v) >= 1e5):
            return f"{v:.1e}"
        return f"{v:.{digits}f}"
    return str(v)


def markdown(results: dict) -> str:
    env = results["environment"]
    m = results["method"]
    lines = [f"# GPU check ({'dry run, CPU' if results['config']['dry_run'] else 'GPU'})", "",
             f"- device: {env.get('device_name', '?')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"timm {env.get('timm')}; {env.get('timestamp_utc')}",
             f"- precision: {m['precision']}; compile: {m['compile']}; latency: {m['latency']}",
             f"- parity: against an FP32 CPU forward of the same weights on {m['parity_images']} images; "
             "score/map = max abs diff; rank = Spearman of score / fraction of pairs in the same order",
             "- peak MiB: this model's weights + the step's peak GPU allocation (set-up, timing, parity); "
             "setup s: first call (compile) or warm-up + capture (CUDA graph)",
             f"- wall time {results.get('wall_s', 0):.0f} s{' (interrupted)' if results.get('interrupted') else ''}",
             "",
             "| preset | batch | mode | precision | status | p50 ms | p90 ms | img/s | peak MiB | setup s "
             "| score diff | map diff | Spearman | pairs | note |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["rows"]:
        par = r.get("parity") or {}
        note = r.get("reason") or ""
        if r.get("graph_breaks"):
            note = f"{r['graph_breaks']} graph breaks"
        if par.get("nonfinite"):
            note = (note + f"; {par['nonfinite']} non-finite").strip("; ")
        note = note.replace("|", "/").replace("\n", " ")
        lines.append("| " + " | ".join([
            r["preset"], str(r["batch"]), r["mode"], r["precision"], r["status"],
            _fmt(r.get("latency_ms_p50")), _fmt(r.get("latency_ms_p90")), _fmt(r.get("throughput_ips"), 1),
            _fmt(r.get("peak_mem_mib"), 0), _fmt(r.get("setup_s"), 1),
            _fmt(par.get("score_max_abs"), 4), _fmt(par.get("map_max_abs"), 4),
            _fmt(par.get("spearman"), 3), _fmt(par.get("pair_agreement"), 3),
            note[:120]]) + " |")
    return "\n".join(lines) + "\n"


def save(results: dict, out: Path) -> None:
    results["wall_s"] = round(elapsed(), 1)
    atomic_write(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write(out / "results.md", markdown(results))


# ---------------------------------------------------------------- main

def environment(torch_mod, device: str) -> dict:
    env = {"timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "device": device}
    with contextlib.suppress(Exception):
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    if torch_mod is None:
        return env
    env.update(torch=torch_mod.__version__, cuda=torch_mod.version.cuda, torch_threads=torch_mod.get_num_threads(),
               cudnn=torch_mod.backends.cudnn.version() if torch_mod.backends.cudnn.is_available() else None)
    with contextlib.suppress(Exception):
        import timm

        env["timm"] = timm.__version__
    if device == "cuda":
        props = torch_mod.cuda.get_device_properties(0)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return env


def strict_fp32(torch) -> None:
    """FP32 means FP32 on the GPU too (TF32 off), so that the FP32 rows compare with the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, few iterations (< 1 min)")
    ap.add_argument("--presets", help="comma-separated presets (default: edge-s224,paper-b392; dry: tiny)")
    ap.add_argument("--batches", help="comma-separated batch sizes (default 1,8; dry: 1,2)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"subset of {','.join(PRECISIONS)}")
    ap.add_argument("--budget-s", type=float, help="time budget from process start (default 420; dry: 120)")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode: default | reduce-overhead | max-autotune-no-cudagraphs | ...")
    ap.add_argument("--precision-method", choices=("autocast", "cast"), default="autocast")
    ap.add_argument("--with-compile", action="store_true", help="run torch.compile in --dry-run too (slow on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cfg = dict(DRY if args.dry_run else REAL)
    if args.presets:
        cfg["presets"] = tuple(s.strip() for s in args.presets.split(",") if s.strip())
    if args.batches:
        cfg["batches"] = tuple(int(s) for s in args.batches.split(","))
    if args.budget_s:
        cfg["budget_s"] = args.budget_s
    modes = [m for m in MODES if m in args.modes.split(",")]
    precisions = [p for p in PRECISIONS if p in args.precisions.split(",")]
    deadline = T_START + cfg["budget_s"]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_term)

    results: dict = {
        "config": {"dry_run": args.dry_run, "presets": list(cfg["presets"]), "batches": list(cfg["batches"]),
                   "modes": modes, "precisions": precisions, "budget_s": cfg["budget_s"], "seed": args.seed,
                   "iterations": {k: cfg[k] for k in ("warm_iters", "warm_s", "min_iters", "max_iters", "measure_s")},
                   "argv": sys.argv[1:]},
        "method": {
            "precision": ("autocast (cache_enabled=False), FP32 weights incl. the teacher; FP32 = TF32 off"
                          if args.precision_method == "autocast" else "model (teacher shared) and input .to(dtype); "
                          "FP32 = TF32 off"),
            "compile": f"torch.compile(mode={args.compile_mode!r}, dynamic=False), first call = setup_s",
            "cuda_graph": "CUDAGraph of the eager forward on a static input, side-stream warm-up x3; timed: replay()",
            "latency": "synchronize + perf_counter per call; img/s = batch / mean latency",
            "parity_images": cfg["n_parity"],
            "teacher": "random init (timm pretrained=False), fixed seed, same weights on CPU and GPU",
        },
        "environment": {}, "presets": {}, "rows": [], "interrupted": False,
    }
    try:
        import torch
    except ImportError as exc:
        results["environment"] = environment(None, "none")
        results["error"] = f"PyTorch is not importable: {exc}"
        save(results, out)
        print(results["error"], file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        results["environment"] = environment(torch, "none")
        results["error"] = "no CUDA device visible to PyTorch (use --dry-run for the CPU check)"
        save(results, out)
        print(results["error"], file=sys.stderr)
        return 2
    strict_fp32(torch)
    results["environment"] = environment(torch, device)
    log(f"device {results['environment'].get('device_name')}, torch {torch.__version__}, budget {cfg['budget_s']:.0f}s")
    runner = Runner(cfg, device, args.precision_method, args.compile_mode)
    prepared: dict = {}

    def add_row(preset: str, batch: int, mode: str, prec: str, status: str, **extra) -> None:
        row = {"preset": preset, "batch": batch, "mode": mode, "precision": prec, "status": status, **extra}
        results["rows"].append(row)
        save(results, out)
        if status == "ok":
            par = row["parity"]
            log(f"{preset} b{batch} {mode} {prec}: p50 {row['latency_ms_p50']:.2f} ms, {row['throughput_ips']:.1f} img/s, "
                f"score diff {_fmt(par['score_max_abs'], 4)}, setup {row['setup_s']:.1f}s, step {row['step_s']:.1f}s")
        else:
            reason = str(row.get("reason"))
            log(f"{preset} b{batch} {mode} {prec}: {reason if reason.startswith(status) else status + ': ' + reason}")

    def run_step(name: str, batch: int, mode: str, prec: str, estimate_s: float) -> None:
        p = prepared.get(name)
        if p is None or "error" in p:
            add_row(name, batch, mode, prec, "error", reason=f"preset set-up failed: {p['error'] if p else '?'}")
            return
        if mode == "cuda_graph" and device != "cuda":
            add_row(name, batch, mode, prec, "skipped", reason="skipped: no CUDA")
            return
        if mode == "compile" and args.dry_run and not args.with_compile:
            add_row(name, batch, mode, prec, "skipped",
                    reason="skipped: dry run (CPU inductor compile takes minutes on 2 cores; --with-compile runs it)")
            return
        left = deadline - time.monotonic() - RESERVE_S
        if left < estimate_s:
            add_row(name, batch, mode, prec, "skipped",
                    reason=f"skipped: time budget (needs ~{estimate_s:.0f}s, {max(left, 0):.0f}s left)")
            return
        t = time.perf_counter()
        try:
            row = runner.step(p, batch, mode, prec)
        except Exception as exc:  # noqa: BLE001 - one failing mode must not end the run
            add_row(name, batch, mode, prec, "error", reason=error_text(exc), step_s=time.perf_counter() - t,
                    traceback=traceback.format_exc()[-3000:])
            with contextlib.suppress(Exception):
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
            return
        finally:
            if mode == "compile":
                with contextlib.suppress(Exception):
                    torch._dynamo.reset()
            gc.collect()
        add_row(name, batch, mode, prec, "ok", step_s=time.perf_counter() - t, **row)

    try:
        components = model_components()
        cheap = [m for m in modes if m != "compile"]
        step_estimate = cfg["warm_s"] + cfg["measure_s"] + 3.0
        for name in cfg["presets"]:
            try:
                p = build_preset(name, cfg["n_parity"], args.seed, components)
                p["device_module"] = p["module"] if device == "cpu" else copy.deepcopy(p["module"]).to(device)
                prepared[name] = p
                results["presets"][name] = p["info"]
            except Exception as exc:  # noqa: BLE001
                prepared[name] = {"error": error_text(exc)}
                results["presets"][name] = {"error": error_text(exc), "traceback": traceback.format_exc()[-3000:]}
                log(f"{name}: set-up failed: {error_text(exc)}")
            for mode in cheap:
                for batch in cfg["batches"]:
                    for prec in precisions:
                        run_step(name, batch, mode, prec, step_estimate)
        if "compile" in modes:  # the expensive steps last, round-robin so that each preset gets some
            measured: dict = {}
            for prec in [p for p in COMPILE_PRIORITY if p in precisions]:
                for batch in cfg["batches"]:
                    for name in cfg["presets"]:
                        # This preset's last compile, else the prior (and 1.4x another preset's compile)
                        prior = measured.get(name) or max(cfg["compile_prior_s"].get(name, 60.0),
                                                          1.4 * max(measured.values(), default=0.0))
                        before = len(results["rows"])
                        run_step(name, batch, "compile", prec, prior + step_estimate)
                        new = results["rows"][before:]
                        if new and new[0]["status"] == "ok":
                            measured[name] = 1.1 * new[0]["setup_s"]
    except Interrupted as exc:
        results["interrupted"] = True
        log(f"interrupted ({exc}); keeping {len(results['rows'])} rows")
    except ImportError as exc:
        results["error"] = f"the package's model is not importable: {error_text(exc)}"
        log(results["error"])
    save(results, out)
    print()
    print(markdown(results))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    if results.get("interrupted"):
        return 124
    return 2 if results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
