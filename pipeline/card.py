"""Model cards and packaging: a trained ``best.pt`` -> a shipped model folder (``.pt``, ``.onnx``, card).

The card says where a model came from and how good it is, in numbers a user can check: the data
(renderer version, seeds, images, images seen), the training (recipe, every chunk, epochs, CPU and GPU
hours), the scores (synthetic val, real dev photos), export parity, latency and the commit. It is kept in
three places: ``card.json`` and ``card.md`` beside the files, and inside both model files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from pomona import __version__, atomic
from pomona.errors import PomonaError

METRIC_KEYS = ("precision", "recall", "map50", "map50_95")


def git_commit(repo: Path | None = None) -> str:
    """The commit this code runs from (``+dirty`` when the tree has changes), or ``unknown`` outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def scores_of(result: dict | None) -> dict | None:
    """The card's view of an ``evaluate_model`` result: images, box and mask P / R / mAP50 / mAP50-95."""
    if not result:
        return None
    out = {"images": result["images"], "imgsz": result["imgsz"], "data": Path(result["data"]).parent.name}
    for kind in ("box", "mask"):
        if result.get(kind):
            out[kind] = {k: round(float(result[kind][k]), 4) for k in METRIC_KEYS}
    return out


def training_totals(chunks: list[dict]) -> dict:
    return {
        "chunks": len(chunks),
        "epochs": sum(c["epochs"] for c in chunks),
        "images": sum(c["images"] for c in chunks),
        "images_seen": sum(c["images_seen"] for c in chunks),
        "cpu_hours": round(sum(c["hours"] for c in chunks if c["device"] == "cpu"), 3),
        "gpu_hours": round(sum(c["hours"] for c in chunks if c["device"] != "cpu"), 3),
    }


def build_card(name: str, version: int, chunks: list[dict], scores: dict, imgsz: int, recipe: str,
               notes: str = "") -> dict:
    """A card from the training chunks (oldest first) and the final model's scores."""
    from pomona.pipeline.procedural import RENDERER_VERSION

    totals = training_totals(chunks)
    return {
        "name": name, "version": int(version), "task": "segment", "arch": chunks[0].get("arch", "yolo11n-seg"),
        "imgsz": int(imgsz), "classes": {"0": "apple"},
        "created": dt.date.today().isoformat(), "commit": git_commit(), "pomona_version": __version__,
        "data": {"source": _data_source(chunks), "labels": "renderer ground truth",
                 "renderer_versions": sorted({c.get("renderer_version", RENDERER_VERSION) for c in chunks}),
                 "seeds": [c["seeds"] for c in chunks], "images": totals["images"], "images_seen": totals["images_seen"]},
        "training": {"recipe": recipe, **totals, "chunk_list": chunks},
        "scores": scores, "notes": notes,
    }


def start_kind(chunk: dict) -> str:
    """How a chunk's training began: ``scratch`` (random weights), ``pretrained`` (weights trained elsewhere),
    ``pretrained-layers`` (a model yaml with another checkpoint's layers) or ``continued`` (a previous chunk).
    Cards written before the ``start`` field say it only in words (``from``), read as a fallback."""
    if chunk.get("start"):
        return chunk["start"]
    said = chunk.get("from", "")
    if said.endswith("(from scratch)"):
        return "scratch"
    if "with the layers of" in said:
        return "pretrained-layers"
    return "pretrained" if "pretrained start" in said else "continued"


def is_pretrained(chunk: dict) -> bool:
    return start_kind(chunk) in ("pretrained", "pretrained-layers")


def _data_source(chunks: list[dict]) -> str:
    if any(is_pretrained(c) for c in chunks):
        return ("procedural renderer only (no orchard photos, no hand labels of ours); the start weights were "
                "pretrained elsewhere on hand-labelled photos (Ultralytics' COCO models: 80 everyday classes, apple among them)")
    return "procedural renderer only (no real photos, no hand labels)"


def card_markdown(card: dict) -> str:
    """The card for people: what the model is, what it saw, how it scores, how to reproduce or continue it."""
    t, d, s = card["training"], card["data"], card["scores"]
    lines = [f"# {card['name']} v{card['version']}", "",
             f"Apple instance segmentation ({card['arch']}, {card['imgsz']} px input, one class: apple), {_origin(t)} "
             f"procedurally rendered orchards with the renderer's exact masks. Commit `{card['commit']}`, "
             f"pomona {card['pomona_version']}, {card['created']}.", "", "## Scores", "",
             "| data | images | px | box P | box R | box mAP50 | box mAP50-95 | mask P | mask R | mask mAP50 | mask mAP50-95 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("synthetic_val", "synthetic val (own renders)"), ("real_dev", "real dev photos (Fuji-SfM, eval only)")):
        r = s.get(key)
        if r:
            cells = [f"{r[kind][k]:.3f}" if r.get(kind) else "-" for kind in ("box", "mask") for k in METRIC_KEYS]
            lines.append(f"| {label} | {r['images']} | {r.get('imgsz', '-')} | " + " | ".join(cells) + " |")
    if s.get("noise"):
        lines += ["", f"Noise: {s['noise']}"]
    lines += ["", "## Data", "",
              f"{d['images']} rendered images (renderer version {', '.join(map(str, d['renderer_versions']))}), "
              f"seeds {', '.join(f'{a}-{b - 1}' for a, b in d['seeds'])}; {d['images_seen']} training images seen "
              f"(images x epochs). The real photos were never trained on. Source: {d.get('source', '-')}.", "",
              "## Training", "",
              f"Recipe `{t['recipe']}`: {t['chunks']} chunk(s), {t['epochs']} epochs, {t['cpu_hours']:.2f} CPU hours, "
              f"{t['gpu_hours']:.2f} GPU hours.", "",
              "| chunk | from | seeds | images | epochs | px | device | hours | synthetic mask mAP50 | real mask mAP50 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in t["chunk_list"]:
        lines.append(f"| {c['chunk']} | {c['from']} | {c['seeds'][0]}-{c['seeds'][1] - 1} | {c['images']} | {c['epochs']} | "
                     f"{c['imgsz']} | {c['device']} | {c['hours']:.2f} | {_num(c.get('synthetic_mask_map50'))} | "
                     f"{_num(c.get('real_mask_map50'))} |")
    if card.get("export"):
        lines += ["", "## Export and latency", "", "```json", json.dumps(card["export"], indent=2), "```"]
    if card.get("latency"):
        lines += ["", "```json", json.dumps(card["latency"], indent=2), "```"]
    lines += ["", "## Reproduce or continue", "",
              "`pomona recipe release --hours H [--device 0]` continues this model on freshly rendered images (new seeds "
              "every chunk) and writes a candidate with its card; the candidate replaces this model only when it beats "
              "it on the real dev photos by more than the noise above.", ""]
    if card.get("notes"):
        lines += ["## Notes", "", card["notes"], ""]
    return "\n".join(lines)


def _origin(training: dict) -> str:
    """From random weights, or from pretrained ones (the first chunk's start names them)."""
    first = training["chunk_list"][0] if training.get("chunk_list") else {}
    if first and is_pretrained(first):
        return f"fine-tuned from pretrained weights ({first['from'].split(' (')[0]}, see Training) only on"
    return "trained only on"


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def embed_card_pt(src: Path, dest: Path, card: dict) -> Path:
    """Copy a checkpoint with the card inside (``ckpt['pomona_card']``) and no optimizer state."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PomonaError(f"{src} is not an Ultralytics checkpoint")
    ckpt.update(pomona_card=card, optimizer=None)
    with atomic.atomic_path(dest) as tmp:
        torch.save(ckpt, tmp)
    return dest


def embed_card_onnx(path: Path, card: dict) -> None:
    """Put the card into the ONNX file's pomona metadata (``extra.card``); the graph is untouched."""
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "pomona":
            info = json.loads(prop.value)
            info.setdefault("extra", {})["card"] = card
            prop.value = json.dumps(info, sort_keys=True)
            break
    else:
        raise PomonaError(f"{path} has no pomona metadata to put the card in")
    with atomic.atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def measure_latency(onnx_path: Path, frames: int = 40) -> dict:
    """Model time (pre + infer + post) of the ONNX model on rendered frames, on this machine."""
    from pomona.edge.bench import bench

    r = bench(onnx_path, None, frames=frames)
    m = r["machine"]
    return {"machine": f"{m['cpu']} ({m['cores']} cores), onnxruntime FP32", "frames": r["frames"],
            "model_ms_p50": round(r["model_ms"]["p50"], 2), "model_ms_p95": round(r["model_ms"]["p95"], 2),
            "fps_e2e": round(r["fps_e2e"], 1), "note": "CPUs of one kind differ about 2x; compare only within one run"}


def package_model(weights: Path, card: dict, dest: Path, latency_frames: int = 40) -> Path:
    """Write a shipped-model folder ``dest`` (``NAME.pt``, ``NAME.onnx``, ``card.json``, ``card.md``).

    The ONNX is exported from the ``.pt`` with pomona's parity check against PyTorch; parity and latency go
    into the card before it is embedded. Everything is built in a temp folder and renamed at the end.
    """
    from pomona.export.exporter import export_model

    name = card["name"]
    with atomic.atomic_dir(dest) as tmp:
        pt = embed_card_pt(Path(weights), tmp / f"{name}.pt", card)
        result = export_model(pt, format="onnx", imgsz=int(card["imgsz"]), out=tmp / f"{name}.onnx")
        parity = result.get("parity") or {}
        card["export"] = {"onnx": {"precision": result["precision"], "imgsz": result["imgsz"],
                                   "parity_vs_pytorch_mean_mask_iou": parity.get("mean_mask_iou"),
                                   "parity_status": parity.get("status"), "parity_matched": parity.get("matched")}}
        card["latency"] = measure_latency(tmp / f"{name}.onnx", latency_frames)
        for extra in tmp.iterdir():  # parity reports and staging files stay out of the package
            if extra.name not in (f"{name}.pt", f"{name}.onnx"):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        embed_card_pt(pt, pt, card)
        embed_card_onnx(tmp / f"{name}.onnx", card)
        atomic.write_json(tmp / "card.json", card)
        atomic.write_text(tmp / "card.md", card_markdown(card))
    return Path(dest)


def chunk_from_recipe_run(run: Path) -> tuple[dict, dict]:
    """The first chunk of a model trained by a whole recipe run (e.g. ``runs/sim2real``) and its scores,
    read from the run's ``results.json`` and Ultralytics' ``args.yaml``."""
    import yaml

    from pomona.pipeline.procedural import RENDERER_VERSION
    from pomona.pipeline.recipe import load_recipe

    run = Path(run)
    try:
        results = json.loads((run / "results.json").read_text())
        args = yaml.safe_load((run / "args.yaml").read_text())
    except OSError as e:
        raise PomonaError(f"{run} is not a finished recipe run ({e.strerror}: {e.filename})") from None
    recipe = load_recipe(results["recipe"])
    seed, n = int(recipe["generate"].get("seed", 0)), int(results["generate"]["images"])
    train_images = int(results["split"]["train"])
    epochs = _epochs_run(run, int(args["epochs"]))
    start = Path(str(results.get("train_from") or args["model"]))  # args.yaml of a resumed run names its last.pt
    pretrained = Path(results["pretrained_from"]) if results.get("pretrained_from") else None
    chunk = {"chunk": 0, "from": describe_start(start, pretrained), "start": _kind_of_start(start, pretrained),
             "recipe": results["recipe"],
             "seeds": [seed, seed + n], "images": n, "train_images": train_images, "epochs": epochs,
             "imgsz": int(args["imgsz"]), "images_seen": train_images * epochs,
             "device": "cpu" if str(args.get("device", "cpu")) == "cpu" else str(args["device"]),
             "hours": round(results["seconds"]["total"] / 3600, 4), "renderer_version": RENDERER_VERSION,
             "arch": start.stem,
             "synthetic_mask_map50": round(results["synthetic_val"]["mask"]["map50"], 4),
             "real_mask_map50": round(results["real_dev"]["mask"]["map50"], 4) if results.get("real_dev") else None}
    scores = {"synthetic_val": scores_of(results["synthetic_val"]), "real_dev": scores_of(results.get("real_dev"))}
    return chunk, scores


def describe_start(start: Path, pretrained: Path | None = None) -> str:
    """How a recipe run's training began, for its card: random weights (a model yaml), pretrained weights, or a
    model yaml whose matching layers came from ``pretrained``; weights are named with their sha256, so that
    anyone can check they start from the same file."""
    def named(weights: Path) -> str:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else "file not found here"
        return f"{weights.name} (pretrained start, sha256 {digest})"

    kind = _kind_of_start(start, pretrained)
    if kind == "pretrained":
        return named(start)
    return f"{start.name} (from scratch)" if kind == "scratch" else f"{start.name} with the layers of {named(pretrained)}"


def _kind_of_start(start: Path, pretrained: Path | None) -> str:
    """A recipe run's start as the card's ``start`` field: weights, a model yaml alone, or a yaml with the layers
    of ``pretrained`` (``describe_start`` puts the same decision into words)."""
    if start.suffix not in (".yaml", ".yml"):
        return "pretrained"
    return "scratch" if pretrained is None else "pretrained-layers"


def _epochs_run(run: Path, planned: int) -> int:
    """Epochs actually trained (Ultralytics' results.csv has one row per epoch; a time-boxed run plans its own)."""
    csv = Path(run) / "results.csv"
    if not csv.is_file():
        return planned
    return max(0, len([line for line in csv.read_text().splitlines() if line.strip()]) - 1)


def package_recipe_run(run: Path, dest: Path, name: str, version: int = 1, notes: str = "",
                       latency_frames: int = 40) -> Path:
    """A recipe run's ``weights/best.pt`` as a shipped model folder (how version 1 of a model is made)."""
    chunk, scores = chunk_from_recipe_run(run)
    card = build_card(name, version, [chunk], scores, chunk["imgsz"], chunk["recipe"], notes)
    return package_model(Path(run) / "weights" / "best.pt", card, dest, latency_frames)


if __name__ == "__main__":  # python -m pomona.pipeline.card RUN DEST NAME [VERSION]
    import sys

    print(package_recipe_run(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1))
