"""Named end-to-end recipes: generate -> label -> split -> train -> evaluate (synthetic and real) -> export -> report.

A recipe is a YAML file (``pomona/recipes/NAME.yaml`` or any path) with one section per stage; the
quickstart is the recipe ``quickstart``. Everything a run did is in its folder: ``data/``, Ultralytics'
training outputs and ``weights/``, ``eval-*/`` and ``report.md``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml
from rich.console import Console

from pomona import __version__, atomic
from pomona.errors import PomonaError


REAL_DEV = "shared/data/fuji-apple-dev/data.yaml"


def _recipes_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("pomona") / "recipes"))


def load_recipe(name: str | Path) -> dict:
    path = Path(name)
    if not path.is_file():
        path = _recipes_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _recipes_dir().glob("*.yaml")))
        raise PomonaError(f"unknown recipe '{name}' (known: {known}; or give a path to a recipe .yaml)")
    recipe = yaml.safe_load(path.read_text()) or {}
    recipe["_name"] = path.stem
    return recipe


def default_real() -> Path | None:
    """The real dev photos, looked for beside the repository and the working directory."""
    for base in (Path.cwd().parent, Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / REAL_DEV
        if candidate.is_file():
            return candidate
    return None


def run_recipe(name: str | Path, out: Path | None = None, real: Path | None = None, overrides: dict | None = None,
               **shorthand) -> Path:
    """Run every stage of a recipe into ``out``; returns the path of report.md.

    ``overrides`` sets keys per section, e.g. ``{"generate": {"disable": ["blur"]}}``; ``shorthand``
    replaces a key wherever a section has it (``n=40``, ``epochs=1``, ``imgsz=256``); None is ignored.
    """
    from pomona.pipeline.annotate import annotate
    from pomona.pipeline.evaluate import evaluate_model
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.prompts import load_prompts
    from pomona.pipeline.split import split
    from pomona.pipeline.train import train

    recipe = load_recipe(name)
    out = Path(out or Path("runs") / recipe["_name"])
    sections = {k: dict(recipe.get(k) or {}) for k in ("generate", "annotate", "split", "train", "evaluate", "export")}
    for key, value in shorthand.items():
        if value is None:
            continue
        owners = [s for s in sections.values() if key in s] or [sections["train"]]
        for s in owners:
            s[key] = value
    for section, values in (overrides or {}).items():
        if section not in sections:
            raise PomonaError(f"unknown recipe section '{section}' (known: {', '.join(sections)})")
        sections[section].update(values)
    if real is not None and not Path(real).exists():
        raise PomonaError(f"--real data.yaml not found: {real}")
    real = Path(real) if real else default_real()

    console = Console(stderr=True)
    timings: dict[str, float] = {}
    results: dict = {"recipe": recipe["_name"], "pomona_version": __version__}
    data = out / "data"

    def stage(label: str):
        console.rule(f"[bold]{label}")
        return time.perf_counter()

    if data.exists():
        shutil.rmtree(data)  # a recipe run owns its folder: start from a clean dataset
    out.mkdir(parents=True, exist_ok=True)

    g = sections["generate"]
    t = stage(f"1/6 generate {g.get('n', 100)} procedural images")
    size = g.get("size", 640)
    size = (size, size) if isinstance(size, int) else tuple(size)
    gen = generate_procedural(data, int(g.get("n", 100)), size, int(g.get("seed", 0)),
                              load_prompts(g.get("prompts")), g.get("workers"), frozenset(g.get("disable", ())))
    timings["generate"] = time.perf_counter() - t
    results["generate"] = {"images": gen.images, "apples": gen.instances, "images_per_s": gen.images / max(gen.seconds, 1e-9)}

    t = stage("2/6 annotate")
    annotate(data, **sections["annotate"])
    timings["annotate"] = time.perf_counter() - t

    t = stage("3/6 split")
    sp = split([data], **sections["split"])
    timings["split"] = time.perf_counter() - t
    results["split"] = sp.counts

    tr = sections["train"]
    average_last = int(tr.pop("average_last", 0) or 0)
    t = stage(f"4/6 train {tr.get('model', 'yolo11n-seg.yaml')} for {tr.get('epochs', 30)} epochs")
    results["train_from"] = str(tr.get("model", "yolo11n-seg.yaml"))
    best = train(sp.data_yaml, out=out, **tr)
    if average_last > 1:
        from pomona.pipeline.average import average_last_epochs

        best, epochs = average_last_epochs(out, average_last)
        results["averaged_epochs"] = epochs
    timings["train"] = time.perf_counter() - t

    ev = sections["evaluate"]
    imgsz = int(ev.get("imgsz", tr.get("imgsz", 320)))
    t = stage("5/6 evaluate (synthetic val" + (", real dev photos)" if real else ")"))
    results["synthetic_val"] = evaluate_model(best, sp.data_yaml, "val", imgsz, out / "eval-synthetic-val")
    if real:
        results["real_dev"] = evaluate_model(best, real, "val", imgsz, out / "eval-real-dev")
    timings["evaluate"] = time.perf_counter() - t

    ex = sections["export"]
    if not ex.get("skip"):
        t = stage("6/6 export to ONNX + parity check")
        results["export"] = _export(best, imgsz, ex)
        timings["export"] = time.perf_counter() - t

    results["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    results["seconds"]["total"] = round(sum(timings.values()), 1)
    atomic.write_json(out / "results.json", results)
    report = write_report(out, results, real)
    console.rule(f"[bold green]done in {results['seconds']['total'] / 60:.1f} min: {report}")
    return report


def _export(best: Path, imgsz: int, section: dict) -> dict:
    from pomona.export.exporter import export_model

    return export_model(best, format=section.get("format", "onnx"), half=bool(section.get("half", False)), imgsz=imgsz)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(out: Path, results: dict, real: Path | None) -> Path:
    lines = [f"# pomona {results['recipe']} report", "",
             "Trained only on procedural synthetic images with automatic (renderer) labels; the real photos are "
             "used for evaluation only.", "", "## Accuracy", "",
             "| data | images | box P | box R | box mAP50 | box mAP50-95 | mask P | mask R | mask mAP50 | mask mAP50-95 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("synthetic_val", "synthetic val"), ("real_dev", f"real dev ({real.parent.name if real else ''})")):
        r = results.get(key)
        if not r:
            continue
        b, m = r["box"], r["mask"]
        lines.append(f"| {label} | {r['images']} | " + " | ".join(
            _fmt(d[k]) for d in (b, m) for k in ("precision", "recall", "map50", "map50_95")) + " |")
    start = results.get("train_from", "yolo11n-seg.yaml")
    lines += ["", f"Training started from `{start}`: " + ("random weights (from scratch)." if start.endswith((".yaml", ".yml"))
                                                           else "these weights (fine-tuned).")]
    if results.get("averaged_epochs"):
        ep = results["averaged_epochs"]
        lines += ["", f"Model: weight average of epochs {ep[0]}-{ep[-1]} (`weights/best.pt`; Ultralytics' own pick is "
                  "`weights/best_epoch.pt`)."]
    if "real_dev" not in results:
        lines += ["", "No real photos were found (pass `--real DATA_YAML`), so there is no sim-to-real number."]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results["seconds"].items()]
    gen = results["generate"]
    lines += ["", f"Rendering: {gen['images']} images, {gen['apples']} apples, {gen['images_per_s']:.1f} images/s.",
              f"Split: {json.dumps(results['split'])}.", "", "## Export", "",
              "```json", json.dumps(results.get("export", "skipped"), indent=2, default=str), "```", "", "## Pictures", ""]
    for rel, caption in (("eval-synthetic-val/predictions.jpg", "Predictions (filled) over ground truth (white) on synthetic val"),
                         ("eval-real-dev/predictions.jpg", "Predictions (filled) over ground truth (white) on real dev photos"),
                         ("results.png", "Training curves"), ("train_batch0.jpg", "A training batch (mosaic)")):
        if (out / rel).exists():
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    return atomic.write_text(out / "report.md", "\n".join(lines) + "\n")
