"""Stage: the quickstart — the ``quickstart`` recipe with the CLI's overrides."""

from __future__ import annotations

from pathlib import Path

from pomona.pipeline.recipe import run_recipe


def quickstart(out: Path = Path("runs/quickstart"), real: Path | None = None, n: int | None = None,
               epochs: int | None = None, imgsz: int | None = None, finetune: str | None = None) -> Path:
    """The whole pipeline from scratch (it shows the method); ``finetune`` (e.g. ``pomona-apple-n``) starts
    training from that model instead, and the report says which one ran."""
    overrides = {"train": {"model": finetune}} if finetune else None
    return run_recipe("quickstart", out, real=real, overrides=overrides, n=n, epochs=epochs, imgsz=imgsz)
