"""Find model weights on disk, and fail fast (never download) when they are not there."""

from __future__ import annotations

import os
from pathlib import Path

from pomona.errors import PomonaError
from pomona.offline import missing_weights_message, online

ULTRALYTICS_RELEASES = "https://github.com/ultralytics/assets/releases"


def search_dirs() -> list[Path]:
    dirs = [Path.cwd()]
    if os.environ.get("POMONA_WEIGHTS"):
        dirs.insert(0, Path(os.environ["POMONA_WEIGHTS"]))
    try:
        from ultralytics.utils import WEIGHTS_DIR  # where Ultralytics keeps what it downloaded

        dirs.append(Path(WEIGHTS_DIR))
    except Exception:  # ultralytics absent: edge install
        pass
    return dirs


def resolve_weights(name: str | Path, what: str = "model", url_hint: str = ULTRALYTICS_RELEASES) -> str:
    """A local path for ``name``; with POMONA_ONLINE=1 a bare Ultralytics asset name is returned for it to fetch."""
    p = Path(name)
    if p.is_file():
        return str(p)
    if p.exists():
        raise PomonaError(f"{what} weights '{name}' is not a file")
    if p.parent == Path("."):
        for d in search_dirs():
            if (d / p.name).is_file():
                return str(d / p.name)
    if online() and p.parent == Path("."):
        return str(name)
    raise PomonaError(missing_weights_message(str(name), what, url_hint))


def load_yolo(weights: str | Path, what: str = "model"):
    """``ultralytics.YOLO`` from a local .pt/.onnx/.yaml with one-line errors for wrong files."""
    from ultralytics import YOLO

    path = str(weights)
    if not path.endswith(".yaml"):
        path = resolve_weights(path, what)
    try:
        return YOLO(path)
    except Exception as e:  # torch.load / yaml errors on files that are not models
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PomonaError(f"{what} '{weights}' could not be loaded as a YOLO model: {first[:160]}") from None
