"""The ``pomona`` command: a thin typer layer over the stage functions.

Heavy libraries (torch, ultralytics, gradio) are imported inside commands, so ``pomona run`` on
a robot never loads the training stack. Every :class:`PomonaError` becomes one line on stderr
and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from pomona.errors import PomonaError
from pomona.stdio import stdout_to_stderr

app = typer.Typer(
    help="pomona: apple instance segmentation trained only on synthetic, automatically labelled orchards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
evaluate_app = typer.Typer(help="Measure label quality or a model's accuracy.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


def _emit(result: dict, as_json: bool, table_title: str = "") -> None:
    """--json: one JSON object on stdout and nothing else; otherwise a readable table."""
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=table_title or None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            yield f"{prefix}{k}", v


def parse_size(text: str) -> tuple[int, int]:
    """'640' -> (640, 640); '1280x720' or '1280,720' -> (1280, 720) as (width, height)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts if p]
    except ValueError:
        raise PomonaError(f"--size must be N or WxH, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 32 or max(vals) > 8192:
        raise PomonaError(f"--size must be N or WxH with sides in 32..8192, got {text!r}")
    return vals[0], vals[1]


RAY_HELP = ("Run on a Ray cluster: local (start one here), auto (this machine's cluster), HOST:PORT or "
            "ray://HOST:PORT; needs pomona[cluster].")


class Backend(str, Enum):
    procedural = "procedural"
    diffusers = "diffusers"


@app.command()
def generate(
    out: str = typer.Argument(..., help="Output dataset folder (images/, labels/, manifest.jsonl); with --ray also "
                                        "an fsspec URL (s3://bucket/path, gs://...)."),
    n: int = typer.Option(100, "--n", help="Number of images."),
    backend: Backend = typer.Option(Backend.procedural, help="procedural (offline renderer with exact masks) or diffusers (text-to-image)."),
    size: str = typer.Option("640", help="Image size: N, WxH, or 'W H'."),
    seed: int = typer.Option(0, help="Base seed; image i uses seed + i."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt file, one prompt per line (default: built-in set)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: all cores)."),
    video: bool = typer.Option(False, "--video", help="Procedural: render a drive-by video along a row instead of stills."),
    frames: int = typer.Option(90, help="--video: number of frames."),
    model: Optional[str] = typer.Option(None, help="diffusers: Hub id or local folder of a text-to-image pipeline."),
    steps: Optional[int] = typer.Option(None, help="diffusers: inference steps (default per model)."),
    guidance: Optional[float] = typer.Option(None, help="diffusers: guidance scale (default per model)."),
    batch: int = typer.Option(1, help="diffusers: images per pipeline call."),
    negative_prompt: Optional[str] = typer.Option(None, help="diffusers: negative prompt."),
    device: Optional[str] = typer.Option(None, help="diffusers: cuda, cpu, ... (default: cuda if available)."),
    depth: bool = typer.Option(False, "--depth", help="Procedural: also aligned depth (depth/*.png, uint16 mm, 0 = invalid), "
                                                     "intrinsics and each apple's 3D centre, diameter and visible fraction."),
    depth_noise: Optional[str] = typer.Option(None, "--depth-noise", help="--depth: the depth sensor's noise: d435 (default, "
                                              "RealSense D435-like), clean or 0, or a number (times the d435 error)."),
    ray: Optional[str] = typer.Option(None, "--ray", envvar="RAY_ADDRESS", help=RAY_HELP),
) -> None:
    """Generate synthetic orchard images (and, for the procedural backend, exact apple masks)."""
    from pomona.pipeline.generate import generate as run_generate

    report = run_generate(out, n=n, backend=backend.value, size=parse_size(size), seed=seed, prompts=prompts,
                          workers=workers, video=video, frames=frames, model=model, steps=steps, guidance=guidance,
                          batch=batch, negative_prompt=negative_prompt, device=device, depth=depth, depth_noise=depth_noise,
                          ray=ray)
    typer.echo(report)


class Labeler(str, Enum):
    gt = "gt"
    yolo_sam = "yolo-sam"
    model = "model"


@app.command()
def annotate(
    dataset: Path = typer.Argument(..., help="Dataset folder with images/."),
    labeler: Labeler = typer.Option(Labeler.gt, help="gt: renderer's exact masks; yolo-sam: detector boxes -> SAM masks; model: a trained YOLO-seg model as teacher."),
    detector: Optional[str] = typer.Option(None, help="Detector weights (yolo-sam: default yolo11x.pt; model: the teacher .pt)."),
    segmenter: Optional[str] = typer.Option(None, help="SAM weights: sam2.1_b.pt (default), sam_b.pt, mobile_sam.pt, sam_vit_b_01ec64.pth, ..."),
    conf: float = typer.Option(0.25, help="Detector confidence threshold."),
    min_score: float = typer.Option(0.0, "--min-score", help="Drop labels whose confidence is below this."),
    min_area: int = typer.Option(30, "--min-area", help="Drop mask fragments smaller than this (pixels)."),
    fill_holes: bool = typer.Option(False, "--fill-holes", help="Fill holes inside masks."),
    refine: bool = typer.Option(False, "--refine", help="model labeller: refine the teacher's boxes with SAM."),
    imgsz: int = typer.Option(640, help="Detector inference size."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:0 ... (default: cuda if available)."),
    ray: Optional[str] = typer.Option(None, "--ray", envvar="RAY_ADDRESS", help=RAY_HELP),
) -> None:
    """Label apples automatically: YOLO-seg labels/*.txt and COCO annotations.json (RLE, scores)."""
    from pomona.pipeline.annotate import annotate as run_annotate

    report = run_annotate(dataset, labeler=labeler.value, detector=detector, segmenter=segmenter, conf=conf,
                          min_score=min_score, min_area=min_area, fill_holes=fill_holes, refine=refine,
                          imgsz=imgsz, device=device, ray=ray)
    typer.echo(report)


@app.command()
def split(
    datasets: List[Path] = typer.Argument(..., help="One or more dataset folders (e.g. procedural + generated)."),
    val: float = typer.Option(0.1, help="Fraction of source groups for validation."),
    test: float = typer.Option(0.0, help="Fraction of source groups for test."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Where data.yaml goes (default: the first dataset; required for several)."),
) -> None:
    """Split by source group (no near-duplicates across splits) and write data.yaml."""
    from pomona.pipeline.split import split as run_split

    typer.echo(run_split(datasets, val=val, test=test, seed=seed, out=out))


@app.command()
def train(
    data: List[Path] = typer.Argument(..., help="data.yaml (from pomona split), or one or more dataset folders "
                                               "(e.g. procedural + generated), split by source group into OUT/data.yaml."),
    model: str = typer.Option("yolo11n-seg.yaml", help="A model yaml (train from scratch) or a .pt to fine-tune."),
    epochs: int = typer.Option(30),
    imgsz: int = typer.Option(320),
    batch: int = typer.Option(16),
    out: Path = typer.Option(Path("runs/train"), help="Run folder; weights land in OUT/weights/best.pt."),
    workers: Optional[int] = typer.Option(None, help="Dataloader workers (default: all cores)."),
    device: Optional[str] = typer.Option(None, help="cpu, 0, cuda:0 ... (default: cuda if available)."),
    recipe: Optional[str] = typer.Option(None, help="Named recipe (pomona/recipes/NAME.yaml) for augmentation etc."),
) -> None:
    """Train YOLO11-seg with Ultralytics, offline."""
    from pomona.pipeline.train import resolve_training_data, train as run_train

    data_yaml = resolve_training_data(data, out)
    best = run_train(data_yaml, model=model, epochs=epochs, imgsz=imgsz, batch=batch, out=out, workers=workers,
                     device=device, recipe=recipe)
    typer.echo(f"best weights: {best}")


@evaluate_app.command("labels")
def evaluate_labels(
    pred_dir: Path = typer.Argument(..., help="Labels to judge: a labels/ folder, a dataset folder or a COCO json."),
    ref_dir: Path = typer.Argument(..., help="Reference labels: same forms."),
    iou: float = typer.Option(0.5, help="IoU for a match."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Label quality as in the paper: matched Dice and IoU, precision, recall, F1."""
    from pomona.pipeline.evaluate import evaluate_labels as run

    with stdout_to_stderr(as_json):
        result = run(pred_dir, ref_dir, iou=iou)
    _emit(result, as_json, "label quality")


@evaluate_app.command("model")
def evaluate_model(
    weights: str = typer.Argument(..., help="A trained model (.pt or .onnx) or a shipped model's name (pomona-apple-n)."),
    data_yaml: Path = typer.Argument(..., help="data.yaml to evaluate on (polygon labels; box-only labels give box metrics)."),
    split_name: str = typer.Option("val", "--split", help="val or test."),
    imgsz: Optional[int] = typer.Option(None, help="Inference size (default: the model's own input size)."),
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json and the picture grid (default: next to the weights)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Box and mask precision, recall, mAP50, mAP50-95; writes metrics.json and a prediction grid."""
    from pomona.pipeline.evaluate import evaluate_model as run

    with stdout_to_stderr(as_json):
        result = run(weights, data_yaml, split=split_name, imgsz=imgsz, out=out)
    _emit(result, as_json, "model accuracy")
    if result.get("note") and not as_json:
        typer.echo(f"note: {result['note']}", err=True)


@evaluate_app.command("picking")
def evaluate_picking(
    pred_jsonl: Path = typer.Argument(..., help="JSON Lines of `pomona run --depth` (with polygons)."),
    dataset: Path = typer.Argument(..., help="Dataset rendered with `pomona generate OUT --depth` (labels + 3D truth)."),
    iou: float = typer.Option(0.5, help="Mask IoU for a match."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (figures again under 'target': "
                                                      "apples <= 1 m away and >= 50% visible)."),
) -> None:
    """Picking targets against 3D truth: matched, missed, centre and diameter errors by distance and visibility."""
    from pomona.pipeline.evaluate_picking import evaluate_picking as run

    with stdout_to_stderr(as_json):
        result = run(pred_jsonl, dataset, iou=iou)
    _emit(result, as_json, "picking targets")


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), help="Run folder."),
    real: Optional[Path] = typer.Option(None, help="data.yaml of real photos for evaluation only (default: ../shared/data/fuji-apple-dev if present)."),
    n: Optional[int] = typer.Option(None, "--n", help="Synthetic images to render (default: the recipe's)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the recipe's)."),
    imgsz: Optional[int] = typer.Option(None, help="Train/eval image size (default: the recipe's)."),
    finetune: Optional[str] = typer.Option(None, "--finetune", help="Fine-tune this model (e.g. pomona-apple-n) "
                                                                     "instead of training from scratch."),
) -> None:
    """The whole pipeline offline on CPU: render, label, split, train, evaluate, export, report."""
    from pomona.pipeline.quickstart import quickstart as run

    report = run(out, real=real, n=n, epochs=epochs, imgsz=imgsz, finetune=finetune)
    typer.echo(f"report: {report}")


@app.command()
def recipe(name: str = typer.Argument(..., help="Recipe name: sim2real, quickstart, release (or a recipe .yaml)."),
           out: Optional[Path] = typer.Option(None, help="Run folder (default: runs/NAME; release: "
                                                         "runs/release/MODEL-vVERSION)."),
           hours: Optional[float] = typer.Option(None, help="release: compute budget in hours for the run folder "
                                                           "(default 1; resumed runs count what they spent)."),
           device: Optional[str] = typer.Option(None, help="cpu, 0, cuda:0 ... (default: cuda if available)."),
           chunks: Optional[int] = typer.Option(None, help="release: stop after this many chunks."),
           n: Optional[int] = typer.Option(None, "--n", help="Images to render (release: per chunk; default: the "
                                                             "recipe's)."),
           epochs: Optional[int] = typer.Option(None, help="Training epochs (release: per chunk; default: the recipe's)."),
           ship: bool = typer.Option(False, "--ship", help="release: install the candidate as the shipped model when "
                                                           "it beats it on the real dev photos by more than the noise."),
           from_run: Optional[Path] = typer.Option(None, "--from-run", help="release: gate a finished from-scratch "
                                                   "recipe run (e.g. runs/sim2real) as the next version instead of "
                                                   "training a chunk."),
           imgsz: Optional[int] = typer.Option(None, "--imgsz", help="release --from-run: the input size to ship "
                                               "the run's model at (default: the size the run evaluated it at); it "
                                               "is scored and exported at that size."),
           resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (its renders "
                                                               "kept, training from weights/last.pt); release "
                                                               "resumes by itself."),
           ) -> None:
    """Run a named end-to-end recipe (pomona/recipes/NAME.yaml); `release` continues the shipped model."""
    if name == "release":
        if resume:
            raise PomonaError("`pomona recipe release` resumes by itself: run it again with the same --out")
        return _recipe_release(out, hours, device, chunks, n, epochs, ship, from_run, imgsz)
    if any(v is not None for v in (hours, chunks, from_run, imgsz)) or ship:
        raise PomonaError("--hours, --chunks, --ship, --from-run and --imgsz belong to `pomona recipe release`")
    from pomona.pipeline.recipe import run_recipe

    overrides = {"train": {"device": device}} if device else None
    if resume and (n is not None or epochs is not None):  # Ultralytics' resume takes them from the checkpoint
        raise PomonaError("--resume continues a run with the settings it was started with; --n and --epochs would "
                          "have no effect")
    typer.echo(f"report: {run_recipe(name, out, overrides=overrides, resume=resume, n=n, epochs=epochs)}")


def _recipe_release(out, hours, device, chunks, n, epochs, ship: bool, from_run, imgsz=None) -> None:
    """`pomona recipe release`: continue the shipped model chunk by chunk, or gate a finished run (--from-run)."""
    from pomona.pipeline.release import promote, release

    if from_run is not None:
        ignored = [flag for flag, v in (("--hours", hours), ("--chunks", chunks), ("--n", n), ("--epochs", epochs),
                                        ("--device", device), ("--out", out)) if v is not None]
        if ignored:  # the run is finished: nothing would be trained, and a silently dropped flag misleads
            raise PomonaError(f"--from-run gates a finished run; {', '.join(ignored)} would have no effect")
        verdict, how = promote(from_run, ship=ship, imgsz=imgsz), "a whole recipe run"
    elif imgsz is not None:  # a chunk trains and ships at its recipe's train.imgsz
        raise PomonaError("--imgsz goes with --from-run (the size to ship a finished run's model at); a release "
                          "chunk trains and ships at its recipe's train.imgsz")
    else:
        overrides = {k: v for k, v in (("n", n), ("epochs", epochs)) if v is not None}
        verdict = release(hours=hours if hours is not None or chunks is not None else 1.0, device=device,
                          chunks=chunks, out=out, ship=ship, chunk_overrides=overrides)
        how = f"{verdict['chunks']} chunk(s)"
    typer.echo(f"candidate: {verdict['candidate']} (v{verdict['version']}, {how}, {verdict['hours']:.2f} h)")
    typer.echo(f"gate: {verdict['reason']}" + ("; shipped" if verdict["shipped"] else ""))


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list (name, version, default, task, "
                                                               "imgsz, files, sizes, card)."),
           card: bool = typer.Option(True, "--card/--no-card", help="Print each model's card after the table.")) -> None:
    """The models shipped with pomona: name, version, default, task, input size, file sizes and card."""
    from pomona.models import shipped_models

    found = [m.summary() for m in shipped_models()]
    if as_json:
        typer.echo(json.dumps(found, sort_keys=True))
        return
    if not found:
        raise PomonaError("no shipped models are installed with this pomona")
    from rich.console import Console
    from rich.table import Table

    table = Table(title="shipped models")
    for col in ("name", "version", "default", "task", "imgsz", "files (MB)", "real dev mask mAP50"):
        table.add_column(col)
    for m in found:
        sizes = ", ".join(f"{k} {v}" for k, v in m["size_mb"].items())
        table.add_row(m["name"], str(m["version"]), "yes" if m["default"] else "", m["task"], str(m["imgsz"]), sizes,
                      "-" if m["real_dev_mask_map50"] is None else f"{m['real_dev_mask_map50']:.3f}")
    Console().print(table)
    if card:
        for m in found:
            typer.echo("\n" + Path(m["card"]).read_text())


@app.command()
def demo(
    model: Optional[str] = typer.Option(None, help="Model (.onnx, .engine, .pt) or a shipped model's name; default: "
                                                   "the default shipped model (`pomona models`)."),
    host: str = typer.Option("127.0.0.1", help="Bind address; 0.0.0.0 exposes the demo on the robot's network."),
    port: int = typer.Option(7860),
) -> None:
    """Field demo in the browser (Gradio), on the edge runtime."""
    from pomona.edge.demo import launch

    launch(model=model, host=host, port=port)


def _register_stage_commands() -> None:
    """export/run/bench live with their stages; their modules import only typer at load time."""
    from pomona.edge import commands as edge_commands
    from pomona.export import commands as export_commands

    app.command("export")(export_commands.export)
    app.command("run")(edge_commands.run)
    app.command("bench")(edge_commands.bench)


_register_stage_commands()


def _normalise_argv(argv: list[str]) -> list[str]:
    """Accept ``--size W H`` (two numbers) as well as ``--size WxH``."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--size" and i + 2 < len(argv) and argv[i + 1].isdigit() and argv[i + 2].isdigit():
            out += ["--size", f"{argv[i + 1]}x{argv[i + 2]}"]
            i += 3
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> None:
    args = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="pomona", standalone_mode=False)
    except PomonaError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except (typer.Abort, typer.Exit) as e:  # click's own exits
        raise SystemExit(getattr(e, "exit_code", 1)) from None
    except Exception as e:  # click usage errors (typer vendors click) arrive here in non-standalone mode
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise
    if isinstance(code, int) and code:  # a command's typer.Exit(N): click hands N back in non-standalone mode
        raise SystemExit(code)


if __name__ == "__main__":
    main()
