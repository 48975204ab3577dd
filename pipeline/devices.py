"""Which torch device a stage runs on: one rule for labelling, training and evaluation."""

from __future__ import annotations

from pomona.errors import PomonaError


def normalize_device(device: str | None) -> str:
    """``None`` -> ``cuda:0`` when available else ``cpu``; ``cuda``/``0`` -> ``cuda:0``."""
    import torch

    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    device = str(device).strip().lower()
    if device.isdigit():
        device = f"cuda:{device}"
    elif device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PomonaError(f"device '{device}' requested but CUDA is not available (use --device cpu)")
    if device != "cpu" and not device.startswith(("cuda:", "mps")):
        raise PomonaError(f"unknown device '{device}' (use cpu, cuda, cuda:0, ...)")
    return device
