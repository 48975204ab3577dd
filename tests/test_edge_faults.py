"""Edge runtime faults: bad frames, bad model files, a full disk, SIGTERM and SIGKILL mid-run.

A robot in the field meets all of these; none may crash the run with a traceback or leave a JSONL
line that does not parse.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pomona.errors import PomonaError

CLI = [sys.executable, "-m", "pomona.cli", "run"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _records(jsonl: Path) -> list[dict]:
    """Every line parsed (json.loads raises on a torn one); the file must end with a newline."""
    text = jsonl.read_text()
    assert text == "" or text.endswith("\n"), repr(text[-80:])
    return [json.loads(line) for line in text.splitlines()]


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), stderr[-2000:]
    return last


@pytest.fixture(scope="session")
def many_frames(frames_dir, tmp_path_factory) -> Path:
    """300 frames (copies of the 4 synthetic ones): a run that lasts long enough to be signalled."""
    folder = tmp_path_factory.mktemp("many")
    originals = sorted(frames_dir.glob("*.jpg"))
    for i in range(300):
        shutil.copyfile(originals[i % len(originals)], folder / f"f{i:04d}.jpg")
    return folder


# --- bad frames ----------------------------------------------------------------------------------------
def test_unreadable_images_are_skipped_and_counted(model_files, frames_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(frames_dir.glob("*.jpg"))[:3]
    for i, p in enumerate(good):
        shutil.copyfile(p, folder / f"g{i}.jpg")
    data = good[0].read_bytes()
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "b_cut.jpg").write_bytes(data[: len(data) // 2])  # still decodes (gray bottom) without our check
    (folder / "b_text.jpg").write_text("not a picture")
    ok, png = cv2.imencode(".png", cv2.imread(str(good[0])))
    (folder / "b_cut.png").write_bytes(png.tobytes()[:-100])
    jsonl = tmp_path / "r.jsonl"
    proc = _cli(str(model_files["onnx"]), "--source", str(folder), "--jsonl", str(jsonl), "--json", "--conf", "0.01")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 3 and summary["skipped"] == 4
    assert sorted(summary["skipped_files"]) == ["b_cut.jpg", "b_cut.png", "b_empty.jpg", "b_text.jpg"]
    assert [r["image"] for r in _records(jsonl)] == ["g0.jpg", "g1.jpg", "g2.jpg"]
    assert "skipped b_empty.jpg (empty file)" in proc.stderr and "skipped b_cut.jpg (truncated)" in proc.stderr


def test_whole_images_with_trailing_bytes_are_not_skipped(frames_dir, tmp_path):
    from pomona.edge.sources import read_image

    data = next(frames_dir.glob("*.jpg")).read_bytes()
    (tmp_path / "trailer.jpg").write_bytes(data + b"\x00" * 64 + b"camera trailer")
    image, why = read_image(tmp_path / "trailer.jpg")
    assert image is not None and why == ""


def test_a_folder_of_only_unreadable_images_is_one_error(model_files, tmp_path):
    from pomona.edge.sources import FrameSource

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.jpg").write_text("nope")
    jsonl = tmp_path / "r.jsonl"
    proc = _cli(str(model_files["onnx"]), "--source", str(folder), "--jsonl", str(jsonl))
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr).startswith(f"error: none of the 2 images in {folder} could be read")
    assert not jsonl.exists()  # an empty JSONL would read as a run that saw no frames
    with pytest.raises(PomonaError, match="cannot read image .*a.jpg: empty file"):
        list(FrameSource(str(folder / "a.jpg")))


# --- bad model files -----------------------------------------------------------------------------------
BROKEN_MODELS = {"half.onnx": "truncated copy", "empty.onnx": "empty file", "text.onnx": "not an ONNX model",
                 "garbage.pt": "not a PyTorch checkpoint", "cut.pt": "truncated checkpoint", "empty.pt": "empty file"}


@pytest.mark.parametrize("kind", sorted(BROKEN_MODELS))
def test_broken_model_files_are_one_line_errors(model_files, tmp_path, kind):
    from pomona.edge import Predictor

    path = tmp_path / kind
    onnx, pt = model_files["onnx"].read_bytes(), model_files["pt"].read_bytes()
    content = {"half.onnx": onnx[: len(onnx) // 2], "text.onnx": b"model = 'yolo11n-seg'\n",
               "garbage.pt": b"\x13" + np.random.default_rng(0).bytes(4096), "cut.pt": pt[: len(pt) // 2]}
    path.write_bytes(content.get(kind, b""))
    with pytest.raises(PomonaError) as error:
        Predictor(path)
    message = str(error.value)
    assert str(path) in message and BROKEN_MODELS[kind] in message and "\n" not in message, message


def test_cli_names_a_truncated_model_in_one_line(model_files, frames_dir, tmp_path):
    half = tmp_path / "half.onnx"
    onnx = model_files["onnx"].read_bytes()
    half.write_bytes(onnx[: len(onnx) // 2])
    proc = _cli(str(half), "--source", str(frames_dir))
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr) == (f"error: cannot load ONNX model {half}: not an ONNX model, or a "
                                            f"truncated copy of one (protobuf parsing failed)")


# --- full disk -----------------------------------------------------------------------------------------
class _DiskFillsUp:
    """``os`` as the runner sees it, on a disk with room for ``whole`` more writes: the next one is cut
    short halfway (as the kernel does when the disk fills mid-write), every later one fails with ENOSPC."""

    def __init__(self, whole: int):
        self.whole, self.full = whole, False

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not self.whole:
            self.full = True
            return os.write(fd, data[: len(data) // 2])
        self.whole -= 1
        return os.write(fd, data)


def test_disk_full_leaves_only_whole_lines(model_files, frames_dir, tmp_path, monkeypatch):
    from pomona.edge import runner

    disk = _DiskFillsUp(whole=2)
    monkeypatch.setattr(runner, "os", disk)
    jsonl = tmp_path / "cut.jsonl"
    with pytest.raises(PomonaError, match=f"^disk full writing {jsonl}$"):
        runner.run(model_files["onnx"], str(frames_dir), conf=0.01, jsonl=jsonl, quiet=True)
    assert disk.full  # the third line was half written ...
    assert [r["frame"] for r in _records(jsonl)] == [0, 1]  # ... and cut off again


def _tmpfs_usable(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{folder}'"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_disk_full_on_a_real_tmpfs(model_files, many_frames, tmp_path):
    """The kernel's own ENOSPC: a 64 KiB tmpfs, mounted in a private mount namespace (no root needed
    where user namespaces are allowed; nothing is left mounted)."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    if not _tmpfs_usable(disk):
        pytest.skip("cannot mount a tmpfs here (unshare or mount not permitted)")
    jsonl = disk / "r.jsonl"
    run = " ".join([*CLI, str(model_files["onnx"]), "--source", str(many_frames), "--jsonl", str(jsonl), "--conf",
                    "0.01", "--max-frames", "150"])
    script = f"mount -t tmpfs -o size=64k tmpfs '{disk}' && {{ {run}; rc=$?; cp '{jsonl}' '{kept}/'; exit $rc; }}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _one_error_line(proc.stderr) == f"error: disk full writing {jsonl}"
    records = _records(kept / "r.jsonl")
    assert 0 < len(records) < 150 and [r["frame"] for r in records] == list(range(len(records)))
    assert (kept / "r.jsonl").stat().st_size <= 64 * 1024


# --- signals -------------------------------------------------------------------------------------------
def _start_and_wait_for_lines(model: Path, source: Path, jsonl: Path, lines: int = 3) -> subprocess.Popen:
    proc = subprocess.Popen([*CLI, str(model), "--source", str(source), "--jsonl", str(jsonl), "--conf", "0.01",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= lines:
            return proc
        time.sleep(0.05)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"the run never wrote {lines} lines (exit {proc.returncode}): {err[-2000:]}")


def test_sigterm_ends_the_run_like_ctrl_c(model_files, many_frames, tmp_path):
    jsonl = tmp_path / "term.jsonl"
    proc = _start_and_wait_for_lines(model_files["onnx"], many_frames, jsonl)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    # 143 = 128 + SIGTERM: a supervisor sees the run was stopped; its outputs are complete
    assert proc.returncode == 143, err[-2000:]
    summary = json.loads(out)
    assert summary["interrupted"] and summary["signal"] == "SIGTERM" and 3 <= summary["frames"] < 300
    records = _records(jsonl)
    assert len(records) == summary["frames"] and [r["frame"] for r in records] == list(range(len(records)))


def test_sigkill_leaves_only_complete_lines(model_files, many_frames, tmp_path):
    jsonl = tmp_path / "kill.jsonl"
    proc = _start_and_wait_for_lines(model_files["onnx"], many_frames, jsonl)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    records = _records(jsonl)
    assert 3 <= len(records) < 300 and [r["frame"] for r in records] == list(range(len(records)))


# --- the benchmark's table (benchmarks/reliability/files.py) -----------------------------------------------------
def _files_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks/reliability/files.py"
    spec = importlib.util.spec_from_file_location("pomona_reliability_files_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_file_faults_benchmark_rows(model_files, frames_dir, tmp_path):
    """The benchmark's own judgement on three of its faults, and a row that fails when the outcome is wrong: a
    "broken model" fault given a good model runs to the end (exit 0) and leaves a JSONL."""
    files = _files_benchmark()
    ctx = files.Ctx(model_files["onnx"], tmp_path, sorted(frames_dir.glob("*.jpg")))
    rows = [files.fault_bad_images(ctx), files.fault_cut_model(ctx), files.fault_sigterm(ctx)]
    assert [r["ok"] for r in rows] == [True, True, True], rows
    bad, cut, term = rows
    assert bad["skipped"] == len(files.bad_files(ctx.images[0])) and bad["lost"] == 0 and bad["jsonl_lines"] == 4
    assert cut["exit"] == 2 and cut["error"].startswith("error: cannot load ONNX model")
    assert term["exit"] == 143 and term["lost"] == 0 and term["torn"] == 0 and 20 <= term["frames"] < files.LONG
    table = "\n".join(files.markdown({"machine": {"cpus": 2, "python": "3", "opencv": "5"}, "model": "m",
                                      "command": "c", "faults": rows}))
    assert table.count("\n| ") == 1 + len(rows) and "**failed**" not in table  # the header, then a row each
    wrong = files._error_row("not_broken", "a good model", ctx, frames_dir, model_files["onnx"])
    assert wrong["exit"] == 0 and wrong["ok"] is False
    assert "**failed**" in "\n".join(files.markdown({"machine": {"cpus": 2, "python": "3", "opencv": "5"},
                                                     "model": "m", "command": "c", "faults": [wrong]}))
    traceback = files.Run(2, "", "Traceback (most recent call last):\n  ...\nValueError: boom\n", 0.1)
    assert traceback.error_line.startswith("TRACEBACK")
    assert files.read_lines(_torn(tmp_path)) == ([{"frame": 0}], 1)


def _torn(tmp_path: Path) -> Path:
    path = tmp_path / "torn.jsonl"
    path.write_text('{"frame": 0}\n{"frame": 1, "app')
    return path
