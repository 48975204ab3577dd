"""pomona uses every core it may: Ultralytics alone would leave one idle."""

from __future__ import annotations


def test_ultralytics_runs_torch_on_every_core():
    import torch
    from ultralytics.utils.torch_utils import select_device

    from pomona.machine import cpu_cores
    from pomona.pipeline.weights import load_yolo

    load_yolo("yolo11n-seg.yaml", task="segment")
    select_device("cpu", verbose=False)  # what training, validation and prediction call when they pick the CPU
    assert torch.get_num_threads() == cpu_cores()
