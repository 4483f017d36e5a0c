"""The command line's shape (issue 26): one module per command, options declared once, fixed choices
as Enums that match what the library accepts, and `import dualkd_edge.cli` free of heavy imports."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_the_cli_imports_no_heavy_module():
    """--help must stay instant: the command modules import typer and the standard library only."""
    code = ("import sys, dualkd_edge.cli\n"
            "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'cv2', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_command_is_a_module_of_its_own():
    from dualkd_edge.cli import COMMANDS, app

    assert [c.name for c in app.registered_commands] == list(COMMANDS)
    for name, module in COMMANDS.items():
        assert module.__name__ == f"dualkd_edge.commands.{name.replace('-', '_')}"
        assert app.registered_commands[list(COMMANDS).index(name)].callback is module.command


def test_the_choices_are_what_the_library_accepts():
    from dualkd_edge.commands import build, deepstream, export, infer, options, quantize, triton
    from dualkd_edge.compile.int8 import quantize as int8
    from dualkd_edge.compile.tensorrt.plan import PRECISIONS
    from dualkd_edge.serving.deepstream import DeepStreamOptions
    from dualkd_edge.serving.triton_repository import BACKENDS
    from dualkd_edge.stream.pipeline import StreamOptions
    from dualkd_edge.trace.onnx_export import ExportOptions

    def values(enum) -> set[str]:
        return {c.value for c in enum}

    assert values(quantize.Method) == set(int8.METHODS) | {"auto"}
    assert values(quantize.Target) == set(int8.TARGETS)
    assert values(build.Precision) == set(PRECISIONS)
    assert values(triton.Backend) == set(BACKENDS)
    for precision in values(deepstream.Precision):
        DeepStreamOptions(precision=precision).validate()
    for dtype in values(export.InputDtype):
        for precision in values(options.FloatPrecision):
            ExportOptions(input_dtype=dtype, precision=precision).validate()
    for decoder in values(options.Decoder):
        for save in values(infer.SaveImages):
            StreamOptions(decoder=decoder, save_images=save, out=REPO / "unused").validate()
