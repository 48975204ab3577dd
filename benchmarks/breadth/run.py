"""Breadth: each model on held-out renders, one condition at a time (cultivar colour, light, occlusion, distance).

    python benchmarks/breadth/run.py [--models pomona-apple-n runs/X/weights/best.pt pomona-apple-n@512 ...] [--n 30]

The real dev photos are one cultivar (Fuji), one camera and sunny days; pomona models are also scored on orchards
of other cultivars (green and yellow ones), other light and other cameras that nobody here has photos of. This
benchmark is the only view of those conditions there is: for each condition, ``--n`` renders whose prompt fixes
that condition and leaves everything else random, on seeds no recipe trains on (900000 up), labelled with the
renderer's exact masks; every model scored on the same images with ``pomona evaluate model`` at its own input size,
or at the size after an ``@`` (``pomona-apple-n@512``: does a larger input help beyond the real dev photos too?).

It is a synthetic measure: the renders are of the current renderer, so a model trained on an older renderer is
scored off its own distribution. Compare rows (which conditions a model is weak on) and models trained on the same
renderer; the real-photo numbers decide what ships (`pomona recipe release`).

Writes results.md, results.json and breadth.png beside this file.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED_BASE = 900_000  # far above every recipe's and release chunk's seeds
SIZE = (640, 640)

# (condition, prompt): each prompt fixes one thing and leaves the rest to the renderer's randomisation
CONDITIONS = (
    ("red cultivars, sunny", "fuji apples in a sunny orchard"),
    ("green cultivar (granny smith)", "granny smith apples in an orchard"),
    ("yellow cultivar (golden)", "golden apples in an orchard"),
    ("overcast", "apple orchard, overcast"),
    ("backlit", "apple orchard, backlit against the sun"),
    ("dusk", "apple orchard at dusk"),
    ("night, flash", "apple orchard at night, camera flash"),
    ("rain", "apple orchard in the rain, wet leaves"),
    ("heavily occluded", "apples heavily hidden by leaves"),
    ("far view", "distant apple trees, wide view"),
)


def render_condition(work: Path, k: int, prompt: str, n: int) -> Path:
    """``n`` renders of one condition as a dataset (images/, labels/, data.yaml); reused when already there. The
    folder is named by the renderer version and ``n``, so a changed renderer or count never reuses old renders."""
    from pomona.dataset import write_data_yaml
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.procedural import RENDERER_VERSION

    ds = work / f"renderer{RENDERER_VERSION}-n{n}" / f"condition{k}"
    if not (ds / "data.yaml").is_file():
        generate_procedural(ds, n, SIZE, seed=SEED_BASE + 1000 * k, prompts=[prompt])
        write_data_yaml(ds / "data.yaml", {"train": "images", "val": "images"})
    return ds


def score(model: str, ds: Path, out: Path) -> dict:
    """One model on one condition. An evaluation already in ``out`` is reused when it is of the same weights file
    and newer than both the renders and that file (a release replaces a shipped model's file in place)."""
    import json

    from pomona.models import resolve_model
    from pomona.pipeline.evaluate import evaluate_model

    model, imgsz = split_size(model)
    weights, done = resolve_model(model, prefer="pt"), out / "metrics.json"
    if done.is_file() and done.stat().st_mtime > max((ds / "data.yaml").stat().st_mtime, Path(weights).stat().st_mtime):
        r = json.loads(done.read_text())
        if Path(r["weights"]) == Path(weights) and r["mask"] is not None and imgsz in (None, r["imgsz"]):
            return _scores(r)
    return _scores(evaluate_model(model, ds / "data.yaml", split="val", imgsz=imgsz, out=out, grid_images=0))


def split_size(model: str) -> tuple[str, int | None]:
    """``pomona-apple-n@512`` -> ('pomona-apple-n', 512); a model without ``@SIZE`` runs at its own size (None)."""
    name, at, size = model.rpartition("@")
    return (name, int(size)) if at and size.isdigit() else (model, None)


def _scores(r: dict) -> dict:
    return {"mask_map50": round(r["mask"]["map50"], 3), "mask_recall": round(r["mask"]["recall"], 3),
            "box_map50": round(r["box"]["map50"], 3), "imgsz": r["imgsz"]}


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in model)[-80:]


def measure(models: list[str], n: int, work: Path) -> list[dict]:
    from pomona.dataset import read_manifest

    rows = []
    for k, (name, prompt) in enumerate(CONDITIONS):
        ds = render_condition(work, k, prompt, n)
        apples = sum(r["apples"] for r in read_manifest(ds))
        row = {"condition": name, "prompt": prompt, "seeds": [SEED_BASE + 1000 * k, SEED_BASE + 1000 * k + n],
               "apples": apples, "models": {}}
        for model in models:
            row["models"][model] = score(model, ds, ds / f"eval-{_slug(model)}")
            print(f"{name:32s} {model}: mask mAP50 {row['models'][model]['mask_map50']:.3f}", flush=True)
        rows.append(row)
    return rows


def label(model: str) -> str:
    """A shipped model's name with the version installed now (the name alone moves with each release)."""
    from pomona.models import shipped_models

    versions = {m.name: m.version for m in shipped_models()}
    name, size = split_size(model)
    at = f" @{size} px" if size else ""
    return f"{name} v{versions[name]}{at}" if name in versions else model


def markdown(result: dict) -> list[str]:
    models = result["models"]
    head = ["# Breadth: the model by condition, on held-out renders", "",
            f"`{result['command']}`. Renderer {result['renderer']}, {result['n']} renders of 640x640 per condition "
            f"(seeds {SEED_BASE} up, never trained on), exact masks; each model at its own input size (or the size after an @). A synthetic "
            "measure of conditions the real dev photos (Fuji, sunny, one camera) do not cover: compare rows, and "
            "models trained on the same renderer (a model of an older renderer is scored off its own distribution). "
            "What ships is decided on the real photos.", "",
            "Mask mAP50 (mask recall) per condition:", "",
            "| condition | apples | " + " | ".join(f"`{result['labels'][m]}`" for m in models) + " |",
            "|---|---|" + "---|" * len(models)]
    for row in result["rows"]:
        cells = [f"{row['models'][m]['mask_map50']:.3f} ({row['models'][m]['mask_recall']:.2f})" for m in models]
        head.append(f"| {row['condition']} | {row['apples']} | " + " | ".join(cells) + " |")
    means = [sum(r["models"][m]["mask_map50"] for r in result["rows"]) / len(result["rows"]) for m in models]
    head += ["| mean over conditions | | " + " | ".join(f"{v:.3f}" for v in means) + " |", "",
             "![mask mAP50 by condition](breadth.png)", ""]
    return head


def picture(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, models = result["rows"], result["models"]
    y = np.arange(len(rows))
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for j, m in enumerate(models):
        ax.barh(y + j * height, [r["models"][m]["mask_map50"] for r in rows], height, label=result["labels"][m])
    ax.set_yticks(y + height * (len(models) - 1) / 2, [r["condition"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("mask mAP50 on held-out renders")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["pomona-apple-n"], help="shipped model names or weight files")
    ap.add_argument("--n", type=int, default=30, help="renders per condition")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pomona-breadth"), help="renders and evaluations")
    args = ap.parse_args()
    from pomona import atomic
    from pomona.pipeline.procedural import RENDERER_VERSION

    t0 = time.perf_counter()
    rows = measure(args.models, args.n, args.work)
    command = "python benchmarks/breadth/run.py --models " + " ".join(args.models) + f" --n {args.n}"
    result = {"command": command, "renderer": RENDERER_VERSION, "n": args.n, "models": args.models,
              "labels": {m: label(m) for m in args.models}, "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1)}
    atomic.write_json(HERE / "results.json", result)
    atomic.write_text(HERE / "results.md", "\n".join(markdown(result)))
    picture(result, HERE / "breadth.png")
    print(f"wrote {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
