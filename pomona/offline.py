"""Make every library pomona drives run offline by default, before any of them is imported.

pomona must never hang on a download: Ultralytics fetches fonts, weights and AMP-check models,
Gradio phones home, Hugging Face resolves hub ids. By default all of that is off; set
``POMONA_ONLINE=1`` (or the libraries' own variables) on a machine with internet to allow it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def online() -> bool:
    return os.environ.get("POMONA_ONLINE", "0").lower() in ("1", "true", "yes")


def cache_dir() -> Path:
    return Path(os.environ.get("POMONA_CACHE", Path.home() / ".cache" / "pomona"))


def configure_environment() -> None:
    """Set offline defaults (never overriding what the user set) and provide Ultralytics' fonts."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics-config"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not online():
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _install_fonts(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")


def _install_fonts(config_dir: Path) -> None:
    """Ultralytics draws labels with Arial from its config dir and downloads it when absent;
    give it matplotlib's DejaVuSans (always installed with Ultralytics) under those names."""
    if all((config_dir / n).exists() for n in FONT_NAMES):
        return
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return
    font = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.exists():
        return
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        for name in FONT_NAMES:
            if not (config_dir / name).exists():
                shutil.copyfile(font, config_dir / name)
    except OSError:
        pass  # read-only home: Ultralytics will fall back to its own temp dir logic


def missing_weights_message(name: str, what: str, url_hint: str = "") -> str:
    hint = f" (e.g. from {url_hint})" if url_hint else ""
    return (
        f"{what} weights '{name}' not found on disk and downloads are off; download the file{hint} on a "
        f"machine with internet and pass its path, or set POMONA_ONLINE=1 to let pomona fetch it"
    )
