"""The robot's install, built for real: ``pip install pomona`` (no extras) into a fresh venv.

Checks the contracts of the base install: no torch, ultralytics or gradio imported by the CLI and the
edge runtime (tracking and drawing included), none of the heavy packages installed at all, exactly one
distribution providing ``cv2`` (opencv-python beside opencv-python-headless breaks installs), and
site-packages at most 450 MB. benchmarks/install/run.py measures the same install and records it.

About a minute here (pip resolves and unpacks ~25 wheels); skipped when pip can reach no package index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_MB = 450
NEVER_INSTALLED = ("torch", "torchvision", "ultralytics", "gradio", "opencv-python", "opencv-contrib-python",
                   "scipy", "matplotlib", "av", "supervision", "trackers")
NEVER_IMPORTED = ("torch", "torchvision", "ultralytics", "gradio", "scipy", "matplotlib", "av", "supervision",
                  "trackers")
PIP = ["--disable-pip-version-check", "--no-input", "--no-cache-dir"]

PROBE = r"""
import json, sys, sysconfig
from importlib.metadata import distributions
import numpy as np
import typer
import pomona.cli, pomona.edge
from pomona.edge import AppleTracker, draw_instances
from pomona.instances import Instances

command = typer.main.get_command(pomona.cli.app)  # the whole CLI, every command registered
tracker = AppleTracker(detection_conf=0.25)
for t in range(6):  # two apples moving right: tracked, confirmed, counted
    masks = np.zeros((2, 60, 120), bool)
    masks[0, 10:30, 5 + 4 * t:25 + 4 * t] = masks[1, 35:55, 50 + 4 * t:70 + 4 * t] = True
    inst = Instances.from_masks(masks, scores=np.full(2, 0.9, np.float32), image_size=(60, 120))
    inst = tracker.update(inst)
drawn = draw_instances(np.zeros((60, 120, 3), np.uint8), inst, show_ids=True)
cv2_dists = sorted({d.metadata["Name"] for d in distributions()
                    if any(f.parts[:1] == ("cv2",) for f in (d.files or []))})
print(json.dumps({
    "commands": sorted(command.commands),
    "count": tracker.count, "ids": inst.track_ids.tolist(), "drawn": bool(drawn.any()),
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
    "dists": sorted(d.metadata["Name"].lower() for d in distributions()),
    "cv2_dists": cv2_dists,
    "site_packages": sysconfig.get_paths()["purelib"],
}))
"""


def _pip_reaches_an_index(python: str, tmp: Path) -> bool:
    """pip fetches one tiny pinned wheel of the base install (from whatever index pip is set up with)."""
    proc = subprocess.run([python, "-m", "pip", "download", *PIP, "--no-deps", "--only-binary=:all:",
                           "-d", str(tmp), "shellingham==1.5.4"], capture_output=True, text=True, timeout=300)
    return proc.returncode == 0


def _disk_mb(folder: Path) -> float:
    """Disk usage like ``du -sm``: allocated blocks, each file once."""
    total, seen = 0, set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def _install_benchmark():
    spec = importlib.util.spec_from_file_location("install_benchmark", REPO / "benchmarks" / "install" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("edge-install")
    # what the repo's own wheel is built from (as in Dockerfile.jetson): a copy, so a stale build/ folder
    # or another process building in the work tree cannot leak into the install; the same copy the
    # install benchmark measures
    src = root / "src"
    _install_benchmark().sources("worktree", src)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = str(venv / "bin" / "python")
    if not _pip_reaches_an_index(python, root / "probe"):
        pytest.skip("pip cannot reach a package index (pip download of one small wheel failed): "
                    "the edge install cannot be built here")
    proc = subprocess.run([python, "-m", "pip", "install", *PIP, str(src)], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, "pip install pomona (no extras) failed:\n" + (proc.stdout + proc.stderr)[-4000:]
    probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=root)
    assert probe.returncode == 0, probe.stderr[-4000:]
    return {"venv": venv, "python": python, **json.loads(probe.stdout.strip().splitlines()[-1])}


@pytest.mark.slow
def test_edge_install_imports_nothing_heavy(edge_venv):
    assert {"run", "bench", "export", "models", "demo"} <= set(edge_venv["commands"])
    imported = set(edge_venv["modules"]) & set(NEVER_IMPORTED)
    assert not imported, f"the CLI and edge runtime import {sorted(imported)}"


@pytest.mark.slow
def test_edge_install_has_one_opencv_and_no_heavy_packages(edge_venv):
    assert edge_venv["cv2_dists"] == ["opencv-python-headless"], edge_venv["cv2_dists"]
    installed = set(edge_venv["dists"]) & set(NEVER_INSTALLED)
    assert not installed, f"pip install pomona (no extras) installs {sorted(installed)}"


@pytest.mark.slow
def test_edge_install_tracks_and_draws(edge_venv):
    # --track works on the base install: two apples, confirmed after a few frames, counted once each
    assert edge_venv["count"] == 2 and sorted(edge_venv["ids"]) == [1, 2]
    assert edge_venv["drawn"]


@pytest.mark.slow
def test_edge_install_fits(edge_venv):
    mb = _disk_mb(Path(edge_venv["site_packages"]))
    assert mb <= MAX_MB, f"site-packages of the edge install is {mb:.0f} MB (limit {MAX_MB} MB)"


def test_tracking_without_its_package_is_one_line(monkeypatch):
    from pomona.edge.tracking import AppleTracker
    from pomona.errors import PomonaError

    monkeypatch.setitem(sys.modules, "edgefirst.tracker", None)  # as if edgefirst-tracker were not installed
    with pytest.raises(PomonaError, match=r"tracking needs the 'edgefirst-tracker' package") as e:
        AppleTracker()
    assert "\n" not in str(e.value)
