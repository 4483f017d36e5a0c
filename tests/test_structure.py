"""The structure the code promises: one artifact table, a staged Detector, sinks behind one
protocol, the library below the commands, torch only where training and tracing need it, and the
deployment recipe in export/."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, needs_torch, parts, run_cli
from torchless import run_torchless

PACKAGE = REPO / "dualkd_edge"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_library_never_imports_the_commands():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "commands" or rel.name == "cli.py":
            continue
        if any(m == "dualkd_edge.commands" or m.startswith("dualkd_edge.commands.") for m in _imports(path)):
            offenders.append(str(rel))
    assert offenders == []


MAX_MODULES_PER_PACKAGE = 12


def test_no_package_folder_holds_more_than_twelve_modules():
    """Packages by domain (issue 26): a folder past 12 modules is split by what its modules do.
    `commands/` is the exception: one module per command."""
    crowded = {}
    for folder in [PACKAGE, *[p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        count = len(list(folder.glob("*.py")))
        if count > MAX_MODULES_PER_PACKAGE and folder.name != "commands":
            crowded[str(folder.relative_to(REPO))] = count
    assert not crowded, f"more than {MAX_MODULES_PER_PACKAGE} modules: {crowded}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, lazy imports inside functions included (they
    run sooner or later, and a cycle between them is a cycle of the design)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        resolved = set()
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycle_lazy_imports_included():
    cycles = _cycles(_import_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_wheel_holds_no_test_code():
    """Loopback servers and test-only readers live in tests/support/, not in the package."""
    assert not (PACKAGE / "testing").exists()
    leaks = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "support" in _imports(p)
             or any(m.startswith("support.") for m in _imports(p))]
    assert leaks == []


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_sixty_lines():
    """Long functions were split into named steps (issue 14); keep it so."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines: " + ", ".join(long)


def test_torch_stays_in_model_train_and_trace():
    allowed = {"model", "train", "trace"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in ("torch", "timm") for m in mods) and rel.parts[0] not in allowed:
                offenders.append(str(rel))
    assert offenders == []


def test_runtime_modules_import_without_torch():
    proc = run_torchless("""
        import dualkd_edge.artifacts, dualkd_edge.detector, dualkd_edge.stream.pipeline, dualkd_edge.evaluation.comparison
        import dualkd_edge.compile.int8.quantize, dualkd_edge.compile.tensorrt.rules, dualkd_edge.compile.tensorrt.build
        import dualkd_edge.runtime.onnx_backend, dualkd_edge.bench.runner, dualkd_edge.cli
        print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_the_artifact_table_recognises_each_kind_and_refuses_the_rest(trained_run, dynamic_onnx, tmp_path):
    from dualkd_edge.artifacts import ENGINE, KINDS, ONNX, RUN, LoadOptions, kind_of, read_metadata, update_threshold
    from dualkd_edge.artifacts.engines import write_sidecar
    from dualkd_edge.errors import UserError

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"\x00")
    write_sidecar(engine, {"tensorrt_version": "10.3.0", "gpu": {}, "precision": "fp16",
                           "metadata": read_metadata(dynamic_onnx).to_dict()})
    assert [kind_of(p) for p in (trained_run, dynamic_onnx, engine)] == [RUN, ONNX, ENGINE]
    assert {k.extra for k in KINDS} == {"train", None, "tensorrt"}
    assert ".plan" in ENGINE.suffixes and "sidecar" in ENGINE.description
    for path in (engine,):  # threshold updates go where each kind keeps its metadata
        assert update_threshold(path, 0.77) == read_metadata(dynamic_onnx).threshold
        assert read_metadata(path).threshold == 0.77
        assert json.loads((tmp_path / "m.plan.json").read_text())["precision"] == "fp16"  # the rest kept
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match="not a dualkd-edge artifact"):
        kind_of(text)
    with pytest.raises(UserError, match="not found"):
        kind_of(tmp_path / "missing.onnx")
    opts = LoadOptions(cuda_graph=True, onnx=dynamic_onnx)
    assert opts.for_path(engine) is opts and not opts.for_path(dynamic_onnx).cuda_graph
    assert opts.for_path(dynamic_onnx).onnx is None


def test_engine_options_on_other_kinds_are_errors(dynamic_onnx):
    from dualkd_edge.artifacts import open_backend
    from dualkd_edge.errors import UserError

    with pytest.raises(UserError, match="--cuda-graph"):
        open_backend(dynamic_onnx, cuda_graph=True)
    with pytest.raises(UserError, match="--onnx"):
        open_backend(dynamic_onnx, onnx=dynamic_onnx)


def test_detector_stages_make_predict(dynamic_onnx):
    from dualkd_edge import Detector

    det = Detector.load(dynamic_onnx, threshold=0.4)
    images = parts(3)
    batch = det.prepare(images)
    assert batch.count == 3 and batch.sizes == [im.shape[:2] for im in images]
    staged = det.decide(det.run(batch), batch.sizes)
    direct = det.predict(images)
    # a stream's way: each frame's input made apart (on its capture thread), then stacked
    from dualkd_edge.preprocess import model_input

    inputs = det.prepare_inputs([model_input(im, det.meta.input) for im in images], batch.sizes)
    streamed = det.decide(det.run(inputs), inputs.sizes)
    for a, b, c in zip(staged, direct, streamed):
        assert a.score == b.score == c.score and np.array_equal(a.anomaly_map, b.anomaly_map)
        assert np.array_equal(c.anomaly_map, b.anomaly_map)
        assert a.is_anomaly == (a.score >= 0.4)  # the threshold the Detector owns


def test_a_sink_is_anything_with_write_and_close(dynamic_onnx, tmp_path):
    """A library user's own sink (next: MQTT, PLC, dashboard) gets every scored frame, in order,
    with its latency so far, and can stop the run."""
    import cv2

    from dualkd_edge import Detector
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.outputs.sinks import JsonlSink, Sink
    from dualkd_edge.stream.capture.sources import parse_source

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(parts(6)):
        cv2.imwrite(str(folder / f"{i}.png"), img)

    class Collect(Sink):
        def __init__(self) -> None:
            self.records: list[dict] = []

        def write(self, result) -> None:
            self.records.append(result.record())
            self.stop_requested = len(self.records) == 4

        def close(self) -> list[str]:
            return ["collected"]

    collect = Collect()
    with Detector.load(dynamic_onnx) as det:
        summary = StreamRunner(det, parse_source(str(folder)), StreamOptions(),
                               sinks=[collect, JsonlSink(tmp_path / "f.jsonl")]).run()
    assert summary.frames == 4 and [r["frame"] for r in collect.records] == [0, 1, 2, 3]
    assert "collected" in summary.outputs and str(tmp_path / "f.jsonl") in summary.outputs
    assert all({"inference_ms", "output_ms", "e2e_ms"} <= set(r["latency_ms"]) for r in collect.records)
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(lines) == 4  # the JSONL sink saw the same frames, after the collector


@needs_torch
def test_jetson_recipe_composes_the_commands_and_its_check_step_runs(dynamic_onnx, tmp_path):
    script = REPO / "export" / "jetson" / "build_and_bench.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run([str(script), str(dynamic_onnx), "q.onnx", "--calib", "cal", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=dict(os.environ, DRY_RUN="1"))
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert [c.split()[1] for c in commands] == ["check", "build", "check", "build", "compare", "bench"]
    assert "--precision fp16" in commands[1] and "--precision int8" in commands[3]
    check = commands[0].split()
    assert run_cli(*check[1:]).returncode == 0  # the ONNX passes the rules of the TensorRT it names
    bad = subprocess.run([str(script), "notes.txt"], capture_output=True, text=True, env=dict(os.environ, DRY_RUN="1"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_every_command_prints_its_help_with_literal_brackets():
    """Typer renders help text as Rich markup: `[/UNIT]` was a closing tag (a traceback) and `[s]` a
    strike-through. Every command's help must print, and show option syntax as written."""
    from dualkd_edge.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    failed = {name: proc.stderr[-300:] for name in names if (proc := run_cli(name, "--help", timeout=120)).returncode}
    assert not failed, failed
    infer_help = run_cli("infer", "--help").stdout
    assert "HOST:PORT[/UNIT]" in infer_help and "mqtt[s]://" in infer_help
