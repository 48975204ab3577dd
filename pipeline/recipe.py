"""Named end-to-end recipes: generate -> label -> split -> train -> evaluate (synthetic and real) -> export -> report.

A recipe is a YAML file (``pomona/recipes/NAME.yaml`` or any path) with one section per stage; the
quickstart is the recipe ``quickstart``. Everything a run did is in its folder: ``data/``, Ultralytics'
training outputs and ``weights/``, ``eval-*/`` and ``report.md``.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import yaml
from rich.console import Console

from pomona import __version__, atomic
from pomona.errors import PomonaError


REAL_DEV = "shared/data/fuji-apple-dev/data.yaml"
STAGE_TIMES = "stages.json"  # a run folder's stage times so far (see _Run.ledger)


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
    # what a run records as its recipe, so that `release --from-run` and the card can load it again: the name of
    # a packaged recipe, the full path of one given as a file
    packaged = path.resolve().parent == _recipes_dir().resolve()
    recipe["_ref"] = path.stem if packaged else str(path.resolve())
    return recipe


def default_real() -> Path | None:
    """The real dev photos, looked for beside the repository and the working directory."""
    for base in (Path.cwd().parent, Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / REAL_DEV
        if candidate.is_file():
            return candidate
    return None


_SECTIONS = ("generate", "annotate", "split", "train", "evaluate", "export")


def run_recipe(name: str | Path, out: Path | None = None, real: Path | None = None, overrides: dict | None = None,
               resume: bool = False, **shorthand) -> Path:
    """Run every stage of a recipe into ``out``; returns the path of report.md.

    ``overrides`` sets keys per section, e.g. ``{"generate": {"disable": ["blur"]}}``; ``shorthand``
    replaces a key wherever a section has it (``n=40``, ``epochs=1``, ``imgsz=256``); None is ignored.
    ``resume`` continues an interrupted run in ``out``: its rendered data is kept (not rendered again) and
    training goes on from ``weights/last.pt`` with the settings it was started with (Ultralytics' resume).
    """
    _import_stages()
    recipe = load_recipe(name)
    out = Path(out or Path("runs") / recipe["_name"])
    sections = _merge_sections(recipe, overrides, shorthand)
    real = _real_data(real)

    if not resume:
        _check_start(sections["train"])
    run = _Run(recipe["_ref"], out / STAGE_TIMES)
    if resume:
        sp = _resumed_data(run, out, sections["split"])
        best = _train_stage(run, sp.data_yaml, out, {**sections["train"], "resume": True})
    else:
        data = _clean_run_folder(out)
        _generate_stage(run, data, sections["generate"])
        _annotate_stage(run, data, sections["annotate"])
        sp = _split_stage(run, data, sections["split"])
        best = _train_stage(run, sp.data_yaml, out, sections["train"])
    # Evaluate (and export) at the size trained at unless the recipe says otherwise.
    imgsz = int(sections["evaluate"].get("imgsz", sections["train"].get("imgsz", 320)))
    _evaluate_stage(run, best, sp.data_yaml, real, imgsz, out)
    _export_stage(run, best, imgsz, sections["export"])
    return _finish(run, out, real)


def _import_stages() -> None:
    """Import every stage's module before anything else: a broken install fails before the run clears its
    folder, and no stage's time includes loading them."""
    from pomona.pipeline.annotate import annotate  # noqa: F401
    from pomona.pipeline.evaluate import evaluate_model  # noqa: F401
    from pomona.pipeline.generate import generate_procedural  # noqa: F401
    from pomona.pipeline.prompts import load_prompts  # noqa: F401
    from pomona.pipeline.split import split  # noqa: F401
    from pomona.pipeline.train import train  # noqa: F401


def _check_start(train_cfg: dict) -> None:
    """Pretrained start weights (``model`` as a .pt, or ``pretrained``: a file whose matching layers a model yaml
    takes) must be there, or downloadable, before anything is rendered: a missing file would otherwise end the
    run minutes later, at its training stage."""
    start = str(train_cfg.get("model", "yolo11n-seg.yaml"))
    if not start.endswith((".yaml", ".yml")):
        _start_weights(start)
    if isinstance(train_cfg.get("pretrained"), str):
        _start_weights(train_cfg["pretrained"])


def _start_weights(name: str) -> Path | str:
    """The start weights' file (one line when absent and downloads are off), or the name for Ultralytics to
    download."""
    from pomona.pipeline.weights import find_weights

    return find_weights(name, "start") or name


def _merge_sections(recipe: dict, overrides: dict | None, shorthand: dict) -> dict[str, dict]:
    """The recipe's sections with the shorthand keys, then the per-section overrides, applied."""
    sections = {k: dict(recipe.get(k) or {}) for k in _SECTIONS}
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
    return sections


def _real_data(real: Path | None) -> Path | None:
    """The real photos' data.yaml: the one given (which must exist), else the dev photos if found."""
    if real is not None and not Path(real).exists():
        raise PomonaError(f"--real data.yaml not found: {real}")
    return Path(real) if real else default_real()


class _Run:
    """One recipe run's console, wall time per stage and results (results.json), in the order they happen."""

    def __init__(self, recipe_name: str, ledger: Path):
        self.console = Console(stderr=True)
        self.timings: dict[str, float] = {}
        self.results: dict = {"recipe": recipe_name, "pomona_version": __version__}
        self.ledger = ledger  # the stage times so far, kept on disk: a resumed run counts what came before

    @contextmanager
    def stage(self, key: str, label: str):
        """Announce a stage and add its time to ``timings[key]`` (not recorded if the stage raises); a resumed
        run's stage starts from what it had spent before the interruption."""
        self.console.rule(f"[bold]{label}")
        t = time.perf_counter()
        yield
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t
        atomic.write_json(self.ledger, self.seconds())

    def seconds(self) -> dict[str, float]:
        """Each stage's time so far, to a tenth of a second."""
        return {k: round(v, 1) for k, v in self.timings.items()}


def _clean_run_folder(out: Path) -> Path:
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)  # a recipe run owns its folder: start from a clean dataset
    (out / STAGE_TIMES).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return data


def _resumed_data(run: _Run, out: Path, split_section: dict):
    """An interrupted run's data as it was rendered and labelled (the split again: same seed, same lists), and what
    its generate stage would have recorded (its speed is not known any more)."""
    from rich.markup import escape

    from pomona.dataset import read_manifest

    if (out / "results.json").exists():
        raise PomonaError(f"{out} is a finished run (results.json): nothing to resume")
    rows = read_manifest(out / "data")
    if not rows or not (out / "weights" / "last.pt").is_file():
        raise PomonaError(f"nothing to resume in {out}: it needs data/ and weights/last.pt from an interrupted run")
    run.console.rule(f"[bold]1-3/6 resume {escape(str(out))}: its {len(rows)} renders kept, training on from "
                     "weights/last.pt")
    run.results["generate"] = {"images": len(rows), "apples": sum(int(r.get("apples", 0)) for r in rows),
                               "images_per_s": None}
    run.results["resumed"] = True
    _restore_stage_times(run, out)
    sp = _split_stage(run, out / "data", split_section)
    run.timings["train"] = run.results["trained_before_s"]  # the train stage adds the resumed epochs to it
    return sp


def _restore_stage_times(run: _Run, out: Path) -> None:
    """The stages the interrupted run finished before training keep their recorded times (when it recorded them);
    training's time before the interruption is read from Ultralytics' results.csv, epoch by epoch."""
    from pomona.pipeline.train import seconds_trained

    try:
        before = json.loads((out / STAGE_TIMES).read_text())
    except (OSError, ValueError):
        before = {}
    run.timings.update({k: float(before[k]) for k in ("generate", "annotate") if k in before})
    run.results["stage_times_before"] = sorted(run.timings)
    run.results["trained_before_s"] = round(seconds_trained(out), 1)


def _generate_stage(run: _Run, data: Path, g: dict) -> None:
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.prompts import load_prompts

    with run.stage("generate", f"1/6 generate {g.get('n', 100)} procedural images"):
        size = g.get("size", 640)
        size = (size, size) if isinstance(size, int) else tuple(size)
        gen = generate_procedural(data, int(g.get("n", 100)), size, int(g.get("seed", 0)),
                                  load_prompts(g.get("prompts")), g.get("workers"), frozenset(g.get("disable", ())))
    run.results["generate"] = {"images": gen.images, "apples": gen.instances, "images_per_s": gen.images / max(gen.seconds, 1e-9)}


def _annotate_stage(run: _Run, data: Path, section: dict) -> None:
    from pomona.pipeline.annotate import annotate

    with run.stage("annotate", "2/6 annotate"):
        annotate(data, **section)


def _split_stage(run: _Run, data: Path, section: dict):
    from pomona.pipeline.split import split

    with run.stage("split", "3/6 split"):
        sp = split([data], **section)
    run.results["split"] = sp.counts
    return sp


def _train_stage(run: _Run, data_yaml: Path, out: Path, tr: dict) -> Path:
    """Train; with ``average_last`` > 1 the model is the weight average of the last epochs (timed as training)."""
    from pomona.pipeline.train import train

    average_last = int(tr.pop("average_last", 0) or 0)  # a recipe key, not a train() argument
    with run.stage("train", f"4/6 train {tr.get('model', 'yolo11n-seg.yaml')} for {tr.get('epochs', 30)} epochs"):
        run.results["train_from"] = str(tr.get("model", "yolo11n-seg.yaml"))
        if isinstance(tr.get("pretrained"), str):  # a model yaml whose matching layers start from these weights
            tr["pretrained"] = run.results["pretrained_from"] = str(_start_weights(tr["pretrained"]))
        if tr.get("resume"):  # the interrupted run's own checkpoint; it started from the recipe's model
            tr["model"] = str(out / "weights" / "last.pt")
        best = train(data_yaml, out=out, **tr)
        if average_last > 1:
            best = _average_stage(run, out, average_last)
    return best


def _average_stage(run: _Run, out: Path, last: int) -> Path:
    from pomona.pipeline.average import average_last_epochs

    best, epochs = average_last_epochs(out, last)
    run.results["averaged_epochs"] = epochs
    return best


def _evaluate_stage(run: _Run, best: Path, data_yaml: Path, real: Path | None, imgsz: int, out: Path) -> None:
    from pomona.pipeline.evaluate import evaluate_model

    with run.stage("evaluate", "5/6 evaluate (synthetic val" + (", real dev photos)" if real else ")")):
        run.results["synthetic_val"] = evaluate_model(best, data_yaml, "val", imgsz, out / "eval-synthetic-val")
        if real:
            run.results["real_dev"] = evaluate_model(best, real, "val", imgsz, out / "eval-real-dev")


def _export_stage(run: _Run, best: Path, imgsz: int, ex: dict) -> None:
    if ex.get("skip"):
        return
    with run.stage("export", "6/6 export to ONNX + parity check"):
        run.results["export"] = _export(best, imgsz, ex)


def _finish(run: _Run, out: Path, real: Path | None) -> Path:
    """Stage times into the results; write results.json and report.md."""
    results = run.results
    results["seconds"] = run.seconds()
    results["seconds"]["total"] = round(sum(run.timings.values()), 1)
    atomic.write_json(out / "results.json", results)
    report = write_report(out, results, real)
    run.console.rule(f"[bold green]done in {results['seconds']['total'] / 60:.1f} min: {report}")
    return report


def resumed_note(results: dict) -> str:
    """What the stage times of a resumed run cover."""
    before = results.get("stage_times_before", [])
    note = (f"Resumed after an interruption: train includes {results.get('trained_before_s', 0) / 60:.1f} min of "
            "epochs trained before it (Ultralytics' results.csv; an unfinished epoch is not counted); ")
    if before:
        return note + f"{' and '.join(before)} as recorded before the interruption."
    return note + "generate and annotate were not recorded by the interrupted run, so the total leaves them out."


def _export(best: Path, imgsz: int, section: dict) -> dict:
    from pomona.export.exporter import export_model

    return export_model(best, format=section.get("format", "onnx"), half=bool(section.get("half", False)), imgsz=imgsz)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(out: Path, results: dict, real: Path | None) -> Path:
    lines = [f"# pomona {Path(results['recipe']).stem} report", "",
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
    if results.get("pretrained_from"):
        how = f"its matching layers from `{Path(results['pretrained_from']).name}`, the rest random."
    else:
        how = "random weights (from scratch)." if start.endswith((".yaml", ".yml")) else "these weights (fine-tuned)."
    lines += ["", f"Training started from `{start}`: {how}"]
    if results.get("averaged_epochs"):
        ep = results["averaged_epochs"]
        lines += ["", f"Model: weight average of epochs {ep[0]}-{ep[-1]} (`weights/best.pt`; Ultralytics' own pick is "
                  "`weights/best_epoch.pt`)."]
    if "real_dev" not in results:
        lines += ["", "No real photos were found (pass `--real DATA_YAML`), so there is no sim-to-real number."]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results["seconds"].items()]
    gen = results["generate"]
    speed = "rendered before the run was resumed" if gen["images_per_s"] is None else f"{gen['images_per_s']:.1f} images/s"
    if results.get("resumed"):
        lines += ["", resumed_note(results)]
    lines += ["", f"Rendering: {gen['images']} images, {gen['apples']} apples, {speed}.",
              f"Split: {json.dumps(results['split'])}.", "", "## Export", "",
              "```json", json.dumps(results.get("export", "skipped"), indent=2, default=str), "```", "", "## Pictures", ""]
    for rel, caption in (("eval-synthetic-val/predictions.jpg", "Predictions (filled) over ground truth (white) on synthetic val"),
                         ("eval-real-dev/predictions.jpg", "Predictions (filled) over ground truth (white) on real dev photos"),
                         ("results.png", "Training curves"), ("train_batch0.jpg", "A training batch (mosaic)")):
        if (out / rel).exists():
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    return atomic.write_text(out / "report.md", "\n".join(lines) + "\n")
