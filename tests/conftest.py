"""Shared fixtures: tiny hand-made datasets (no renderer, no model) for the core tests."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("POMONA_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "pomona-test"))

from pomona.dataset import write_labels  # noqa: E402
from pomona.instances import Instances  # noqa: E402


def disc(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def make_dataset(root: Path, specs: list[list[tuple[int, int, int]]], size=(96, 128)) -> Path:
    """A dataset folder with one image per spec; each spec lists discs (cx, cy, r) = apples."""
    h, w = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, discs in enumerate(specs):
        image = np.full((h, w, 3), (40, 120, 40), np.uint8)
        masks = [disc(h, w, *d) for d in discs]
        for m in masks:
            image[m] = (30, 30, 200)
        cv2.imwrite(str(root / "images" / f"im{i:03d}.png"), image)
        inst = Instances.from_masks(np.stack(masks), image_size=size) if masks else Instances.empty(size)
        write_labels(root / "labels" / f"im{i:03d}.txt", inst)
    return root


def kill_training_after_its_first_epoch(monkeypatch) -> type:
    """Arm every model train() loads to raise (a killed job) when its first epoch ends; returns the exception."""
    from pomona.pipeline import weights

    class Killed(Exception):
        pass

    def kill_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Killed

    real_load = weights.load_yolo

    def load_and_arm(*args, **kwargs):  # train() imports load_yolo when called: this one arms the kill
        model = real_load(*args, **kwargs)
        model.add_callback("on_fit_epoch_end", kill_after_first_epoch)
        return model

    monkeypatch.setattr(weights, "load_yolo", load_and_arm)
    return Killed


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)], [], [(20, 70, 8), (100, 30, 10)]])


# Session fixtures shared by the edge, fault and reliability tests: defined here so the tiny model is built once
# per run, not once per test module that would import it.
@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict:
    """A random one-class YOLO11n-seg: .pt and its pomona ONNX export (static and dynamic)."""
    pytest.importorskip("ultralytics", reason="building the test model needs the pipeline extras")
    from pomona.export.exporter import export_model
    from tests.test_export import make_random_model

    root = tmp_path_factory.mktemp("edge")
    pt = make_random_model(root / "rand.pt")
    onnx = Path(export_model(pt, format="onnx", parity=False)["path"])
    dyn = Path(export_model(pt, format="onnx", dynamic=True, out=root / "rand.dyn.onnx", parity=False)["path"])
    return {"pt": pt, "onnx": onnx, "dynamic": dyn}


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory) -> Path:
    from pomona.edge.bench import synthetic_frames

    return synthetic_frames(tmp_path_factory.mktemp("frames"), n=4, size=(240, 180))
