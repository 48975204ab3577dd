"""Stage: the quickstart — the ``quickstart`` recipe with the CLI's overrides."""

from __future__ import annotations

from pathlib import Path

from pomona.pipeline.recipe import run_recipe


def quickstart(out: Path = Path("runs/quickstart"), real: Path | None = None, n: int | None = None,
               epochs: int | None = None, imgsz: int | None = None) -> Path:
    return run_recipe("quickstart", out, real=real, n=n, epochs=epochs, imgsz=imgsz)
