"""Faults on the output side (issue 15): an output location that cannot be written, a disk that
fills up late, an output that is one of the inputs, a threshold update of a symlinked or shared
model, SIGTERM and kill -9 during a write, and damaged model files. Real files, real tmpfs mounts
(a full disk is a full disk), real signals to real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from helpers import (
    assert_one_line_error,
    fill_disk,
    needs_torch,
    parts,
    run_cli,
    run_main,
)

from dualkd_edge.fileio import read_image

# -- every output location is checked before the work starts ------------------------------------------------


def _commands(run: Path, onnx: Path, data: Path, calib: Path, image: Path, out: Path, folder: Path) -> list:
    """(argv, option) of every command with an output: `out` is a file output, `folder` a folder output."""
    def named(suffix: str) -> Path:
        return out.with_name(out.name + suffix)

    return [
        (["export", run, "--out", named(".onnx")], "--out"),
        (["quantize", onnx, "--calib", calib, "--out", named(".onnx")], "--out"),
        (["build", onnx, "--out", named(".engine")], "--out"),
        (["eval", onnx, data, "--json", named(".json")], "--json"),
        (["eval", onnx, data, "--markdown", named(".md")], "--markdown"),
        (["eval", onnx, data, "--per-image", named(".csv")], "--per-image"),
        (["eval", onnx, data, "--plot", named(".png")], "--plot"),
        (["eval", onnx, data, "--save-overlays", folder], "--save-overlays"),
        (["bench", onnx, "--json", named(".json")], "--json"),
        (["bench", onnx, "--csv", named(".csv")], "--csv"),
        (["bench", onnx, "--markdown", named(".md")], "--markdown"),
        (["bench", onnx, "--plot", named(".png")], "--plot"),
        (["compare", onnx, onnx, "--images", calib, "--json", named(".json")], "--json"),
        (["infer", onnx, image, "--jsonl", named(".jsonl")], "--jsonl"),
        (["infer", onnx, image, "--out", folder, "--save-images", "all"], "--out"),
        (["calib-sample", data, "--out", folder], "--out"),
        (["train", data, "--out", folder, "--steps", "1"], "--out"),
        (["demo", "--out", folder], "--out"),
    ]


@pytest.fixture(scope="module")
def inputs(trained_run, dynamic_onnx, small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    calib = root / "calib"
    calib.mkdir()
    for i, img in enumerate(parts(2)):
        cv2.imwrite(str(calib / f"{i}.png"), img)
    return trained_run, dynamic_onnx, small_dataset, calib, calib / "0.png"


def _assert_refused(capsys, argv: list, option: str, needles: tuple[str, ...]) -> None:
    proc = run_main(capsys, *argv)
    assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
    assert_one_line_error(proc, option, *needles)


def test_output_is_a_folder_or_under_a_file(capsys, inputs, tmp_path):
    """Output is a folder where a file is expected (and the reverse), or its parent is a file."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, option in _commands(*inputs, out=tmp_path / "taken", folder=a_file):
        for arg in argv:  # every file output exists, as a folder
            if isinstance(arg, Path) and arg.name.startswith("taken"):
                arg.mkdir(exist_ok=True)
        wrong = "is a file; expected a folder" if a_file in argv else "is a folder; expected a file name"
        _assert_refused(capsys, argv, option, (wrong,))
    for argv, option in _commands(*inputs, out=a_file / "x", folder=a_file / "sub"):
        _assert_refused(capsys, argv, option, ("a_file is a file, not a folder",))
    assert a_file.read_text() == "x"


def test_read_only_output_location(capsys, inputs, read_only_folder):
    folder, seal = read_only_folder
    seal()
    for argv, option in _commands(*inputs, out=folder / "r", folder=folder / "results"):
        _assert_refused(capsys, argv, option, (str(folder),))
    assert list(folder.iterdir()) == []  # nothing created, not even a probe


def test_full_disk_is_found_before_the_work(capsys, inputs, tmpfs):
    disk = tmpfs(256)
    filler = fill_disk(disk)
    for argv, option in _commands(*inputs, out=disk / "r", folder=disk / "results"):
        _assert_refused(capsys, argv, option, (str(disk), "No space left on device"))
    assert [p.name for p in disk.iterdir()] == [filler.name]


def test_tune_threshold_on_a_read_only_model_fails_before_evaluating(capsys, dynamic_onnx, small_dataset,
                                                                     read_only_folder):
    folder, seal = read_only_folder
    shutil.copyfile(dynamic_onnx, folder / "m.onnx")
    seal()
    proc = run_main(capsys, "eval", folder / "m.onnx", small_dataset, "--tune-threshold")
    assert_one_line_error(proc, "--tune-threshold", str(folder / "m.onnx"))
    assert "MEAN" not in proc.stdout  # refused before the evaluation, not after it


# -- an output may not be one of the inputs ---------------------------------------------------------------


def test_outputs_never_overwrite_inputs(capsys, inputs, tmp_path):
    run, onnx, data, calib, image = inputs
    model = tmp_path / "m.onnx"
    shutil.copyfile(onnx, model)
    alias = tmp_path / "alias.onnx"
    alias.symlink_to(model)
    before = model.read_bytes()
    train_image = sorted((data / "bracket" / "train" / "good").iterdir())[0]
    cases = [
        (["eval", model, data, "--json", alias], "--json", "is MODEL itself"),  # the same file by another name
        (["eval", model, data, "--per-image", model], "--per-image", "is MODEL itself"),
        (["eval", model, data, "--markdown", train_image], "--markdown", "is a file of DATA"),
        (["eval", model, data, "--save-overlays", data], "--save-overlays", "is DATA itself"),
        (["bench", model, "--csv", model], "--csv", "is MODEL itself"),
        (["compare", model, onnx, "--images", calib, "--json", onnx], "--json", "is MODEL itself"),
        (["infer", model, image, "--jsonl", image], "--jsonl", "is SOURCE itself"),
        (["infer", model, calib, "--out", calib], "--out", "is SOURCE itself"),
        (["build", model, "--out", tmp_path / "m.engine", "--timing-cache", model], "--timing-cache", "is MODEL"),
        (["calib-sample", data, "--out", data], "--out", "is DATA itself"),
        (["calib-sample", data, "--out", data / "bracket" / "train"], "--out", "overlap"),
        (["quantize", model, "--calib", calib, "--out", alias], "--out", "is the FP32 input itself"),
        (["eval", model, data, "--json", tmp_path / "r.json", "--markdown", tmp_path / "r.json"], "--markdown",
         "is also --json"),
    ]
    for argv, option, why in cases:
        _assert_refused(capsys, argv, option, (why,))
    assert model.read_bytes() == before and alias.is_symlink()
    assert read_image(image) is not None and read_image(train_image) is not None
    assert sorted(p.name for p in calib.iterdir()) == ["0.png", "1.png"]


def test_failed_quantize_of_a_foreign_model_leaves_nothing(capsys, inputs, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              str(foreign))
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run_main(capsys, "quantize", foreign, "--calib", inputs[3], "--out", out / "q.onnx"),
                          "foreign.onnx")
    assert list(out.iterdir()) == []


# -- results computed before a late write failure are kept ----------------------------------------------------


def test_eval_keeps_a_result_the_disk_cannot_take(dynamic_onnx, small_dataset, tmpfs, tmp_path):
    """There is room for the JSON report but not for the plot: the report is written, the plot is
    kept in the fallback folder and the one error line says where."""
    disk = tmpfs(1024)
    fill_disk(disk, leave_kib=80)  # the 64 KiB check before the work passes; two models' plot (~130 KB) does not fit
    kept_root = tmp_path / "tmpdir"
    kept_root.mkdir()
    proc = run_cli("eval", dynamic_onnx, dynamic_onnx, small_dataset, "--json", disk / "r.json", "--plot",
                   disk / "r.png", env={"TMPDIR": str(kept_root)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line_error(proc, "--plot", str(disk / "r.png"), "No space left on device", "kept in")
    assert json.loads((disk / "r.json").read_text())["models"][0]["mean"]["image_auroc"] is not None
    kept = list(kept_root.glob("dualkd-edge-kept-*/r.png"))
    assert len(kept) == 1 and str(kept[0]) in proc.stderr and cv2.imread(str(kept[0])) is not None
    assert not (disk / "r.png").exists() and not [p for p in disk.iterdir() if p.name.startswith(".")]


@needs_torch
def test_train_keeps_the_trained_run_when_its_folder_fills_up(small_dataset, tmpfs, tmp_path):
    from dualkd_edge.artifacts.run_dirs import is_run_dir, read_run_metadata

    disk = tmpfs(512)  # passes the check; the weights (~30 MB) do not fit
    kept_root = tmp_path / "tmpdir"
    kept_root.mkdir()
    proc = run_cli("train", small_dataset, "--out", disk / "run", "--steps", "2", "--batch-size", "2",
                   env={"TMPDIR": str(kept_root)})
    assert_one_line_error(proc, "--out", str(disk / "run"), "No space left on device", "kept in")
    [kept] = kept_root.glob("dualkd-edge-kept-*/run")
    assert str(kept) in proc.stderr and is_run_dir(kept) and read_run_metadata(kept).training["finished"] is True
    assert not [p for p in disk.rglob(".*")]  # no staging file left on the full disk


def test_calib_sample_on_a_full_disk_keeps_the_previous_set(capsys, small_dataset, tmpfs):
    disk = tmpfs(1024)
    calib = disk / "calib"
    assert run_main(capsys, "calib-sample", small_dataset, "--n", "2", "--out", calib).returncode == 0
    (calib / "README.md").write_text("our notes")
    before = {p.name: p.read_bytes() for p in calib.iterdir()}
    fill_disk(disk, leave_kib=100)
    proc = run_main(capsys, "calib-sample", small_dataset, "--n", "30", "--out", calib)
    assert_one_line_error(proc, "--out", str(calib), "No space left on device", "left as it was")
    assert {p.name: p.read_bytes() for p in calib.iterdir()} == before
    assert not [p for p in disk.iterdir() if p.name.startswith(".")]  # no partial staging folder


def test_calib_sample_replaces_its_own_set_and_keeps_other_files(capsys, small_dataset, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "README.md").write_text("pick normal parts")
    assert run_main(capsys, "calib-sample", small_dataset, "--n", "8", "--out", calib).returncode == 0
    first = {p.name for p in calib.glob("*.png")}
    assert run_main(capsys, "calib-sample", small_dataset, "--n", "2", "--out", calib).returncode == 0
    second = {p.name for p in calib.glob("*.png")}
    assert len(first) >= 8 and len(second) == 2  # the earlier sample was replaced, not added to
    assert (calib / "README.md").read_text() == "pick normal parts"
    assert [p.name for p in tmp_path.iterdir()] == ["calib"]


# -- eval --tune-threshold: symlinks, owners and two tunings at once --------------------------------------


def test_threshold_update_keeps_symlink_mode_and_owner(dynamic_onnx, tmp_path):
    from dualkd_edge.artifacts import read_metadata, update_threshold

    target = tmp_path / "v1.onnx"
    shutil.copyfile(dynamic_onnx, target)
    target.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(target, 1234, 1234)
    link = tmp_path / "current.onnx"
    link.symlink_to(target.name)
    update_threshold(link, 0.37)
    assert link.is_symlink() and os.readlink(link) == "v1.onnx"
    assert read_metadata(target).threshold == pytest.approx(0.37)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (1234, 1234)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.onnx", "v1.onnx"]


def test_two_threshold_updates_at_once_are_both_applied(dynamic_onnx, tmp_path):
    """Each tuning reads the metadata again under a lock: the second sees the first's threshold as
    the old one (no update silently lost), and the file stays a valid model."""
    from dualkd_edge.artifacts import read_metadata

    model = tmp_path / "m.onnx"
    shutil.copyfile(dynamic_onnx, model)
    original = read_metadata(model).threshold
    go = tmp_path / "go"
    script = ("import sys, time, pathlib\nfrom dualkd_edge.artifacts import update_threshold\n"
              "go = pathlib.Path(sys.argv[2])\nwhile not go.exists(): time.sleep(0.005)\n"
              "print(update_threshold(sys.argv[1], float(sys.argv[3])))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(model), str(go), value], stdout=subprocess.PIPE,
                              text=True) for value in ("0.25", "0.75")]
    time.sleep(1.5)  # both started and waiting
    go.touch()
    olds = [float(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    final = read_metadata(model).threshold
    assert final in (pytest.approx(0.25), pytest.approx(0.75))
    first_new = 0.25 if final == pytest.approx(0.75) else 0.75
    assert sorted(olds) == sorted([original, first_new])  # one saw the original, the other the first update


# -- SIGTERM / SIGINT / kill -9 during a write -------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 240) -> None:
    t_end = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None and time.monotonic() < t_end, "the command ended before the moment to signal it"
        time.sleep(0.02)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@needs_torch
def test_sigterm_during_export_removes_its_staging_file_and_kill9_leftovers_are_swept(trained_run, tmp_path):
    out = tmp_path / "deploy"
    out.mkdir()
    (out / ".notes.tmp").write_text("not ours")  # a hidden file of someone else's: never swept
    proc = _start("export", trained_run, "--out", out / "m.onnx")
    _wait_for(lambda: any(".unverified-" in n for n in _hidden(out)), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr and "terminated" in stderr
    assert _hidden(out) == [".notes.tmp"] and not (out / "m.onnx").exists()

    proc = _start("export", trained_run, "--out", out / "m.onnx")
    _wait_for(lambda: any(n.endswith(".onnx") and ".unverified-" in n for n in _hidden(out)), proc)
    proc.kill()  # kill -9: no clean-up possible
    proc.communicate(timeout=60)
    left = [n for n in _hidden(out) if n != ".notes.tmp"]
    assert left and all(f"-{proc.pid}" in n for n in left)
    # The next write to that folder (a new process) sweeps what the killed one left, and only that.
    sweep = subprocess.run([sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.INFO); "
                            "from dualkd_edge.fileio import write_json_atomic; write_json_atomic(sys.argv[1], {})",
                            str(out / "other.json")], capture_output=True, text=True, timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    assert _hidden(out) == [".notes.tmp"] and "removed" in sweep.stderr


@needs_torch
def test_sigterm_during_training_writes_a_checkpoint_to_resume_from(small_dataset, tmp_path):
    from dualkd_edge.artifacts.run_dirs import read_run_metadata
    from dualkd_edge.model.checkpoint import load_train_state

    run = tmp_path / "run"
    proc = _start("train", small_dataset, "--out", run, "--steps", "5000", "--batch-size", "2",
                  "--checkpoint-every", "1")
    _wait_for(lambda: (run / "train_state.pt").is_file(), proc)  # training is under way
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stdout and "--resume" in stdout
    meta = read_run_metadata(run)
    steps = load_train_state(run)["step"]
    assert meta.training["finished"] is False and meta.training["step"] == steps >= 1
    assert _hidden(run) == []


# -- damaged inputs and usage errors: one line, never a traceback ---------------------------------------


@needs_torch
def test_damaged_run_files_are_one_line_errors(capsys, trained_run, small_dataset, tmp_path):
    bad_preset = tmp_path / "bad_preset"
    shutil.copytree(trained_run, bad_preset)
    meta = json.loads((bad_preset / "run.json").read_text())
    meta["preset"] = {"name": "no-such-preset"}
    (bad_preset / "run.json").write_text(json.dumps(meta))
    assert_one_line_error(run_main(capsys, "eval", bad_preset, small_dataset), "run.json", "no-such-preset")
    meta["preset"] = "no-such-preset"
    (bad_preset / "run.json").write_text(json.dumps(meta))
    assert_one_line_error(run_main(capsys, "export", bad_preset, "--out", tmp_path / "x.onnx"), "does not exist")

    cut = tmp_path / "cut"
    shutil.copytree(trained_run, cut)
    state = cut / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    assert_one_line_error(run_main(capsys, "train", small_dataset, "--out", cut, "--resume", "--steps", "50"),
                          "--resume", "train_state.pt", "not a readable training state")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    proc = run_main(capsys, "eval", cut, small_dataset)
    assert_one_line_error(proc, "model.safetensors", "not a readable weights file")
    assert "do not match" not in proc.stderr


def test_usage_errors_are_one_line(capsys, tmp_path):
    for argv, needle in [(["calib-sample", tmp_path, "--n", "many"], "--n"),
                         (["infer"], "Missing argument"),
                         (["eval", tmp_path, "--batch-size", "1.5"], "--batch-size"),
                         (["bench", tmp_path, "--no-such-option"], "--no-such-option"),
                         (["no-such-command"], "no-such-command")]:
        proc = run_main(capsys, *argv)
        assert proc.returncode == 2 and "╭" not in proc.stderr and "Usage:" not in proc.stderr, proc.stderr
        assert_one_line_error(proc, needle)


def test_an_output_that_is_a_device_or_a_symlink(capsys, dynamic_onnx, tmp_path):
    """A device (/dev/full, /dev/null) is never replaced by a file (as root that would replace the
    device node); a symlinked output is written where it points and stays a link."""
    for device in ("/dev/full", "/dev/null"):
        before = os.stat(device, follow_symlinks=False)
        proc = run_main(capsys, "bench", dynamic_onnx, "--json", device)
        assert_one_line_error(proc, "--json", device, "device, pipe or socket")
        assert os.stat(device, follow_symlinks=False) == before
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "v1.json").write_text("{}")
    (tmp_path / "latest.json").symlink_to(reports / "v1.json")
    from dualkd_edge.fileio import write_json_atomic

    write_json_atomic(tmp_path / "latest.json", {"run": 2})
    assert (tmp_path / "latest.json").is_symlink() and json.loads((reports / "v1.json").read_text()) == {"run": 2}


def test_non_finite_numbers_are_usage_errors(capsys, dynamic_onnx, tmp_path):
    for argv, option in [(["bench", dynamic_onnx, "--min-time", "nan"], "--min-time"),  # would never end
                         (["infer", dynamic_onnx, tmp_path, "--fps-limit", "inf"], "--fps-limit"),
                         (["infer", dynamic_onnx, tmp_path, "--read-timeout", "nan"], "--read-timeout"),
                         (["quantize", dynamic_onnx, "--calib", tmp_path, "--out", tmp_path / "q.onnx",
                           "--max-drop", "-inf"], "--max-drop")]:
        assert_one_line_error(run_main(capsys, *argv), option, "finite number")


@needs_torch
def test_export_and_quantize_on_a_disk_that_fills_up_name_the_output(capsys, trained_run, dynamic_onnx, tmpfs,
                                                                     tmp_path):
    """The check before the work passes (room for a first block); the model does not fit: one
    error naming --out and the file asked for (not a hidden staging name), nothing left behind."""
    disk = tmpfs(1024)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(parts(2)):
        cv2.imwrite(str(calib / f"{i}.png"), img)
    for argv in (["export", trained_run, "--out", disk / "m.onnx"],
                 ["quantize", dynamic_onnx, "--calib", calib, "--samples", "2", "--out", disk / "m.onnx"]):
        proc = run_main(capsys, *argv)
        assert_one_line_error(proc, "--out", f"could not write {disk / 'm.onnx'}", "No space left on device",
                              "no file was left there")
        assert list(disk.iterdir()) == []
