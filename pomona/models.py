"""Shipped models: names like ``pomona-apple-n`` that resolve to files inside the package.

Each shipped model is a folder ``pomona/models/NAME/`` holding ``NAME.pt`` (workstation: evaluate,
fine-tune, label, export), ``NAME.onnx`` (the edge runtime) and its model card twice: ``card.json``
(read by ``pomona models``) and ``card.md`` (for people). The card is also inside both model files
(the ``.pt`` checkpoint's ``pomona_card`` key, the ``.onnx`` pomona metadata), so a file copied alone
onto a robot still says what it is.

This module imports only the standard library: ``pomona run`` resolves a name without torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pomona.errors import PomonaError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "pomona-apple-n"
KINDS = {"onnx": ".onnx", "pt": ".pt"}


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: Path
    card: dict

    @property
    def version(self) -> str:
        return str(self.card.get("version", "?"))

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_MODEL

    def file(self, kind: str) -> Path:
        """The model file of one kind: ``onnx`` or ``pt``."""
        return self.folder / f"{self.name}{KINDS[kind]}"

    def summary(self) -> dict:
        """What ``pomona models --json`` prints for this model."""
        files = {kind: self.file(kind) for kind in KINDS}
        real = (self.card.get("scores") or {}).get("real_dev") or {}
        return {
            "name": self.name, "version": self.version, "default": self.default,
            "task": self.card.get("task", "segment"), "imgsz": self.card.get("imgsz"),
            "files": {k: str(p) for k, p in files.items() if p.is_file()},
            "size_mb": {k: round(p.stat().st_size / 2**20, 2) for k, p in files.items() if p.is_file()},
            "real_dev_mask_map50": (real.get("mask") or {}).get("map50"),
            "card": str(self.folder / "card.md"), "card_data": self.card,
        }


def models_dir() -> Path:
    """Where shipped models live: the package's ``models/`` (``$POMONA_MODELS_DIR`` overrides it, e.g. in tests)."""
    return Path(os.environ.get("POMONA_MODELS_DIR") or MODELS_DIR)


def shipped_models(root: Path | None = None) -> list[ShippedModel]:
    """Every complete shipped model (a folder with a card), the default first."""
    root = root or models_dir()
    found = []
    for folder in sorted(root.glob("*/")) if root.is_dir() else []:
        card_path = folder / "card.json"
        if not card_path.is_file():
            continue
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PomonaError(f"shipped model card {card_path} is unreadable ({e})") from None
        found.append(ShippedModel(folder.name, folder, card))
    return sorted(found, key=lambda m: (not m.default, m.name))


def get_model(name: str) -> ShippedModel | None:
    for model in shipped_models():
        if model.name == name:
            return model
    return None


def _shipped_name(spec: str) -> tuple[ShippedModel, str | None] | None:
    """``pomona-apple-n`` -> (its model, None); ``pomona-apple-n.onnx`` -> (its model, 'onnx'); else None.

    Only bare names count: anything with a folder in it is a path, and a file of that name in the
    working directory (or ``$POMONA_WEIGHTS``) wins over the shipped one, as paths always do.
    """
    if os.sep in spec or "/" in spec or Path(spec).exists():
        return None
    if os.environ.get("POMONA_WEIGHTS") and (Path(os.environ["POMONA_WEIGHTS"]) / spec).exists():
        return None
    stem, suffix = os.path.splitext(spec)
    kind = next((k for k, s in KINDS.items() if s == suffix.lower()), None)
    if kind is None:
        stem = spec
    model = get_model(stem)
    return (model, kind) if model is not None else None


def is_shipped_name(spec: str | Path | None) -> bool:
    return spec is not None and _shipped_name(str(spec)) is not None


def resolve_model(spec: str | Path | None, prefer: str = "onnx") -> Path:
    """A model argument as the user gave it -> a file.

    ``None`` is the default shipped model; a shipped name gives its ``prefer`` file (``onnx`` for the
    edge runtime, ``pt`` for training, evaluation and labelling); anything else is a path, returned as is.
    """
    if spec is None:
        model = get_model(DEFAULT_MODEL)
        if model is None:
            raise PomonaError(f"no model given and the default model {DEFAULT_MODEL} is not installed with this "
                              f"pomona (looked in {models_dir()}); pass a model path")
        return model.file(prefer)
    hit = _shipped_name(str(spec))
    if hit is None:
        return Path(spec)
    model, kind = hit
    path = model.file(kind or prefer)
    if not path.is_file():
        raise PomonaError(f"shipped model {model.name} has no {kind or prefer} file ({path})")
    return path


def shipped_imgsz(path: str | Path) -> int | None:
    """The input size of a shipped model's file, from its card (None for other files)."""
    path = Path(path).resolve()
    for model in shipped_models():
        if path.parent == model.folder.resolve():
            return int(model.card["imgsz"]) if model.card.get("imgsz") else None
    return None
