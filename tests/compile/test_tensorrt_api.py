"""Our TensorRT code against NVIDIA's real Python bindings of TensorRT 10.3 (JetPack 6), 10.13 and
11.4, without TensorRT's libraries or a GPU.

PyPI's tensorrt-cu12-bindings wheels hold the bindings module alone; it links to libnvinfer,
libnvonnxparser and libnvinfer_plugin, which come from NVIDIA's own index. Stand-in libraries that
export the nine symbols the module resolves at import (compiled here) are enough to import it and
read every class, enum and property per version. The table in `tests/support/tensorrt_api.py`
lists what our code touches per path; this checks the table against the bindings and our code
against the table."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

RELEASES = {"10.3": "10.3.0", "10.13": "10.13.3.9", "11.4": "11.4.0.106"}
CACHE = Path(os.environ.get("DUALKD_TENSORRT_BINDINGS", REPO / ".ci" / "cache" / "tensorrt-bindings"))
TENSORRT_SOURCES = [REPO / "dualkd_edge" / "compile" / "tensorrt" / "build.py",
                    REPO / "dualkd_edge" / "runtime" / "tensorrt_backend.py"]
STUB_SYMBOLS = """
void* createInferBuilder_INTERNAL(void* a, int b) { return 0; }
void* createInferRefitter_INTERNAL(void* a, void* b, int c) { return 0; }
void* createInferRuntime_INTERNAL(void* a, int b) { return 0; }
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c) { return 0; }
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c) { return 0; }
void* getBuilderPluginRegistry(int a) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void* a, const char* b) { return 0; }
"""


def _wheel(version: str) -> Path | None:
    found = sorted(CACHE.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    try:  # from the package registry, once; .ci/run does the same
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "-d", str(CACHE),
                        f"tensorrt-cu12-bindings=={version}"], check=True, capture_output=True, timeout=180)
    except (subprocess.SubprocessError, OSError):
        return None
    found = sorted(CACHE.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def bindings(tmp_path_factory) -> dict[str, dict]:
    """release -> {"path": unpacked bindings, "libs": stand-in libraries}."""
    if sys.platform != "linux" or os.uname().machine != "x86_64" or sys.version_info[:2] != (3, 11):
        pytest.skip("the audited bindings wheels are CPython 3.11 x86-64 Linux builds")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler for the stand-in TensorRT libraries")
    root = tmp_path_factory.mktemp("trt")
    libs = root / "lib"
    libs.mkdir()
    (root / "stub.c").write_text(STUB_SYMBOLS)
    for name in ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin"):
        for major in ("10", "11"):
            soname = f"{name}.so.{major}"
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(libs / soname), f"-Wl,-soname,{soname}",
                            str(root / "stub.c")], check=True)
    out = {}
    for release, version in RELEASES.items():
        wheel = _wheel(version)
        if wheel is None:
            pytest.skip(f"tensorrt-cu12-bindings=={version} not available (offline?); .ci/run downloads it")
        target = root / release
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
        out[release] = {"path": target, "libs": libs}
    return out


def _in_bindings(binding: dict, code: str) -> str:
    script = "import sys, json\nimport tensorrt_bindings as trt\nsys.modules['tensorrt'] = trt\n" + code
    env = dict(os.environ, LD_LIBRARY_PATH=str(binding["libs"]),
               PYTHONPATH=os.pathsep.join([str(binding["path"]), str(REPO), str(REPO / "tests")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("release", list(RELEASES))
def test_every_member_our_code_uses_exists_in_that_release(bindings, release):
    out = _in_bindings(bindings[release], f"""
from support.tensorrt_api import missing_members
print(json.dumps({{"version": trt.__version__, "missing": missing_members(trt, {release!r})}}))
""")
    result = json.loads(out)
    assert result["version"].startswith(RELEASES[release])
    assert all(not members for members in result["missing"].values()), result["missing"]


def test_weak_typing_and_dla_are_absent_where_we_do_not_use_them(bindings):
    """What made the old build code fail on 11: builder precision flags, calibrators and per-layer
    precision are gone there; our plan never takes that path on >= 10.12."""
    out = _in_bindings(bindings["11.4"], """
from support.tensorrt_api import WEAK_TYPING, resolve
print(json.dumps([m for m in WEAK_TYPING if not resolve(trt, m)]))
""")
    gone = set(json.loads(out))
    assert {"BuilderFlag.INT8", "BuilderFlag.FP16", "IInt8EntropyCalibrator2", "ILayer.precision"} <= gone
    from dualkd_edge.compile.tensorrt.plan import weak_typing_available

    assert not weak_typing_available("11.4.0.106") and not weak_typing_available("10.13.3.9")
    assert weak_typing_available("10.3.0")


def test_network_flags_and_types_resolve_with_the_real_enums(bindings):
    for release in RELEASES:
        out = _in_bindings(bindings[release], """
import numpy as np
flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
print(json.dumps({"flags": flags, "uint8": str(np.dtype(trt.nptype(trt.DataType.UINT8))),
                  "half": str(np.dtype(trt.nptype(trt.DataType.HALF)))}))
""")
        result = json.loads(out)
        assert result["flags"] > 0 and result["uint8"] == "uint8" and result["half"] == "float16"


def _used_members(path: Path) -> set[str]:
    """`trt.A.B` chains and members used on variables named after TensorRT classes."""
    from support.tensorrt_api import VARIABLE_CLASSES

    def chain(node: ast.AST) -> list[str] | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        return None

    used = set()
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
            continue  # only maximal chains
        parts = chain(node)
        if not parts:
            continue
        if parts[0] == "self" and len(parts) > 2:
            parts = parts[1:]  # self.engine.get_tensor_name -> engine.get_tensor_name
        root = parts[0].lstrip("_")
        if root == "trt":
            used.add(".".join(parts[1:]))
        elif root in VARIABLE_CLASSES and len(parts) == 2:
            used.add(f"{VARIABLE_CLASSES[root]}.{parts[1]}")
    return used


def test_our_tensorrt_code_touches_only_audited_members():
    from support.tensorrt_api import all_members

    used = set().union(*(_used_members(p) for p in TENSORRT_SOURCES))
    assert "Builder.create_network" in used and "IExecutionContext.execute_async_v3" in used
    assert used - all_members() == set(), "add these to tests/support/tensorrt_api.py (and its groups)"
    text = "".join(p.read_text() for p in TENSORRT_SOURCES)
    unused = [m for m in all_members() if m.split(".")[-1] not in text]
    assert unused == [], "listed in tensorrt_api.py but not used"
