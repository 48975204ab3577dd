"""Which torch device a stage runs on: one rule for labelling, training and evaluation."""

from __future__ import annotations

from pomona.errors import PomonaError


def normalize_device(device: str | None) -> str:
    """``None`` -> ``cuda:0`` when available else ``cpu``; ``cuda``/``0`` -> ``cuda:0``."""
    import torch

    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    device = str(device).strip().lower()
    if "," in device:
        return _gpu_list(device)
    if device.isdigit():
        device = f"cuda:{device}"
    elif device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PomonaError(f"device '{device}' requested but CUDA is not available (use --device cpu)")
    if device != "cpu" and not device.startswith(("cuda:", "mps")):
        raise PomonaError(f"unknown device '{device}' (use cpu, cuda, cuda:0, ...)")
    return device


def _gpu_list(device: str) -> str:
    """``0,1,2,3`` (training): several GPUs of this machine, which Ultralytics trains on with DDP."""
    import torch

    ids = [part.strip() for part in device.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise PomonaError(f"device list '{device}' must be distinct GPU numbers such as 0,1,2,3")
    if not torch.cuda.is_available():
        raise PomonaError(f"GPUs {device} requested but CUDA is not available (use --device cpu)")
    count = torch.cuda.device_count()
    missing = [i for i in ids if int(i) >= count]
    if missing:
        raise PomonaError(f"GPU {missing[0]} requested but this machine has {count} GPU(s) (0..{count - 1})")
    return ",".join(ids)
