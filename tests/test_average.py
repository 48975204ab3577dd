"""Weight averaging of epoch checkpoints (pipeline/average.py) on small randomly initialised models."""

from __future__ import annotations

import pytest

pytest.importorskip("ultralytics")

import torch  # noqa: E402

from pomona.errors import PomonaError  # noqa: E402
from pomona.pipeline.average import average_checkpoints, average_last_epochs, epoch_checkpoints  # noqa: E402


def _epoch_ckpt(path, seed: int, ema: bool = True):
    """An Ultralytics-style training checkpoint: EMA weights plus the raw model, like save_period writes."""
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel("yolo11n-seg.yaml", nc=1, verbose=False)
    model.names = {0: "apple"}
    ckpt = {"model": model.half(), "ema": model.half() if ema else None, "epoch": seed, "optimizer": {"state": 1},
            "train_args": {"imgsz": 64, "task": "segment"}, "date": None}
    torch.save(ckpt, path)
    return model


def test_average_is_the_elementwise_mean_and_loads_in_ultralytics(tmp_path):
    a = _epoch_ckpt(tmp_path / "epoch0.pt", 0)
    b = _epoch_ckpt(tmp_path / "epoch1.pt", 1, ema=False)  # a stripped checkpoint (ema None) counts too
    out = average_checkpoints([tmp_path / "epoch0.pt", tmp_path / "epoch1.pt"], tmp_path / "avg.pt")
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["optimizer"] is None and ckpt["ema"] is None and ckpt["epoch"] == -1
    sa, sb, sm = a.float().state_dict(), b.float().state_dict(), ckpt["model"].float().state_dict()
    key = next(k for k, v in sm.items() if v.dtype.is_floating_point and v.numel() > 100)
    torch.testing.assert_close(sm[key], (sa[key] + sb[key]) / 2, atol=2e-3, rtol=2e-3)
    assert not torch.equal(sm[key], sa[key])

    from ultralytics import YOLO

    import numpy as np

    result = YOLO(str(out), task="segment").predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False)
    assert len(result) == 1


def test_last_epochs_are_found_in_numeric_order_and_replace_best(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    for n in (1, 2, 9, 10):
        _epoch_ckpt(weights / f"epoch{n}.pt", n)
    (weights / "best.pt").write_bytes(b"ultralytics pick")
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [2, 3, 10, 11]  # 0-based names, epochs completed
    best, epochs = average_last_epochs(tmp_path, 3)
    assert epochs == [3, 10, 11] and best == weights / "best.pt"
    assert (weights / "best_epoch.pt").read_bytes() == b"ultralytics pick"
    assert torch.load(best, map_location="cpu", weights_only=False)["averaged_from"] == ["epoch2.pt", "epoch9.pt", "epoch10.pt"]


def test_nothing_to_average_is_a_clear_error(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(PomonaError, match="save_period"):
        average_last_epochs(tmp_path, 8)
