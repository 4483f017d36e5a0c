"""The `dualkd-edge` command line: the Typer app, the registration of the commands (one module each in
commands/, where heavy imports stay inside functions so --help is instant) and main()'s error handling."""

from __future__ import annotations

import logging
import sys

import typer

from dualkd_edge.commands import (
    bench,
    build,
    calib_sample,
    calibrate,
    check,
    compare,
    deepstream,
    demo,
    export,
    improve,
    infer,
    info,
    presets,
    quantize,
    serve,
    train,
    triton,
)
from dualkd_edge.commands import eval as evaluate
from dualkd_edge.errors import UserError

app = typer.Typer(
    name="dualkd-edge",
    help="Dual-student anomaly detection from training to NVIDIA Jetson: train, eval, export, "
    "quantize, build, infer, bench. Start with `dualkd-edge demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# One module per command (commands/<name>.py: its options, its request, its work), in --help's order.
COMMANDS = {
    "presets": presets,
    "train": train,
    "demo": demo,
    "eval": evaluate,
    "export": export,
    "quantize": quantize,
    "calib-sample": calib_sample,
    "build": build,
    "check": check,
    "compare": compare,
    "infer": infer,
    "calibrate": calibrate,
    "improve": improve,
    "info": info,
    "bench": bench,
    "triton": triton,
    "serve": serve,
    "deepstream": deepstream,
}
for _name, _module in COMMANDS.items():
    app.command(_name)(_module.command)


def _click_exceptions():
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _fail(message: str, code: int) -> None:
    """One `error:` line (credentials in URLs hidden), then exit with `code`."""
    from dualkd_edge.stream.capture.sources import redact

    print(f"error: {redact(' '.join(message.split()))}", file=sys.stderr)
    sys.exit(code)


def _usage_error(exc) -> str:
    """Click's usage error (bad number, missing argument, unknown option) as one line naming it."""
    where = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) is not None else ""
    return f"{exc.format_message()}{where}"


def _raise_terminated(signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
    from dualkd_edge.errors import Terminated

    raise Terminated()


def main() -> None:
    """Every failure ends as one line on stderr: `error: ...` and exit 2 for what the user gave us
    (arguments, files, output locations: any OSError lands here as a last line of defence),
    130 for Ctrl-C, 143 for SIGTERM (after the same clean-up as Ctrl-C)."""
    import signal

    from dualkd_edge.errors import Terminated
    from dualkd_edge.output_paths import describe_os_error

    # Our messages at INFO; third-party libraries (quantization tools, timm) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("dualkd_edge").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_terminated)
    click_errors = _click_exceptions()
    try:
        code = app(standalone_mode=False, prog_name="dualkd-edge")
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        if exc.name != "cv2":
            raise
        # Not a base dependency on aarch64 Linux, where a Jetson's OpenCV comes with JetPack (pyproject.toml).
        _fail("OpenCV (cv2) is not installed: on a Jetson use JetPack's (python3-opencv; a venv made with "
              "--system-site-packages sees it), elsewhere pip install 'dualkd-edge[opencv]'", 2)
    except OSError as exc:
        _fail(describe_os_error(exc), 2)
    except click_errors.NoArgsIsHelpError:
        sys.exit(2)  # the help was shown
    except click_errors.UsageError as exc:
        _fail(_usage_error(exc), 2)
    except click_errors.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        sys.exit(Terminated.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
