"""The release recipe: keep training the shipped model on fresh renders, chunk by chunk, and gate the result.

``pomona recipe release [--hours H] [--device D] [--chunks K] [--ship]``:

1. Start from the shipped model (or any .pt with a card) and read its card: which seeds its images came from.
2. Each chunk renders ``n`` new images from the next unused seeds (the data never repeats), trains from the
   previous chunk's weights, averages its last epochs and scores itself (own synthetic val, real dev photos).
3. Chunks run until ``--hours`` (the run folder's total, across restarts) or ``--chunks`` is spent.
4. The last chunk's model becomes a candidate folder with its card (``OUT/candidate/NAME``). It replaces the
   shipped model (``--ship``) only when it beats it on the real dev photos, both measured in this run, by more
   than the recipe's measured noise. The photos are only ever evaluated on, never trained on or selected from.
   Both are scored as they would ship, each at its own input size; the base is also scored at the candidate's
   size, so that a gain the input size alone gives is told apart (and the card's latency shows what it costs).

``promote`` puts a finished from-scratch recipe run (``--from-run RUN``) through the same gate as the next version.

Everything resumes: a finished chunk is never redone (``OUT/state.json``), a rendered chunk is not re-rendered,
and an interrupted training continues from its ``last.pt`` (Ultralytics' resume).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pomona import atomic
from pomona.errors import PomonaError

console = Console(stderr=True)


@dataclass
class Base:
    """The model a release run continues: its weights (.pt), name, version and card."""

    weights: Path
    name: str
    version: int
    card: dict


def read_card(weights: Path) -> dict:
    """The card inside a checkpoint (``pomona_card``), or the shipped ``card.json`` beside it."""
    beside = Path(weights).parent / "card.json"
    if beside.is_file():
        import json

        return json.loads(beside.read_text())
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    card = ckpt.get("pomona_card") if isinstance(ckpt, dict) else None
    if not card:
        raise PomonaError(f"{weights} has no model card: a release continues a shipped model or a packaged candidate")
    return card


def load_base(model: str) -> Base:
    from pomona.pipeline.weights import find_weights

    weights = find_weights(model, "model")
    card = read_card(weights)
    return Base(weights=Path(weights), name=card["name"], version=int(card["version"]), card=card)


def next_free_seed(card: dict) -> int:
    """The first seed above every seed range the model's images came from, rounded up to a round number."""
    ends = [int(b) for _, b in card["data"]["seeds"]] or [0]
    return -(-max(ends) // 1000) * 1000


# --- state -------------------------------------------------------------------------------------------


def load_state(out: Path, base: Base) -> dict:
    import json

    path = out / "state.json"
    if not path.is_file():
        return {"base": {"name": base.name, "version": base.version, "weights": str(base.weights)},
                "next_seed": next_free_seed(base.card), "chunks": [], "seconds": 0.0}
    state = json.loads(path.read_text())
    if (state["base"]["name"], state["base"]["version"]) != (base.name, base.version):
        raise PomonaError(f"{out} holds a release run of {state['base']['name']} v{state['base']['version']}, not "
                          f"{base.name} v{base.version}; pass another --out or remove it")
    return state


def save_state(out: Path, state: dict) -> None:
    atomic.write_json(out / "state.json", state)


def budget_allows(state: dict, hours: float | None, chunks: int | None, started: float) -> bool:
    """Start another chunk? Within ``chunks``, and when the last chunk's duration still fits in ``hours``."""
    done = len(state["chunks"])
    if chunks is not None and done >= chunks:
        return False
    if not done:
        return True  # the first chunk always runs: nothing is known yet about how long one takes
    if hours is None:
        return chunks is not None  # --chunks alone counts chunks; no limit at all means one chunk
    spent = state["seconds"] + (time.time() - started)
    return spent + state["chunks"][-1]["hours"] * 3600 <= hours * 3600


# --- one chunk ---------------------------------------------------------------------------------------


def render_chunk(folder: Path, seed: int, cfg: dict) -> Path:
    """Render, label (renderer ground truth) and split the chunk's images; returns its data.yaml (kept on resume)."""
    from pomona.pipeline.annotate import annotate
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.prompts import load_prompts
    from pomona.pipeline.split import split

    data = folder / "data"
    if (data / "data.yaml").is_file():
        return data / "data.yaml"
    if data.exists():  # rendered but not yet labelled and split: labels are quick, redo them from scratch
        shutil.rmtree(data)
    size = cfg.get("size", 640)
    generate_procedural(data, int(cfg["n"]), (size, size), seed, load_prompts(cfg.get("prompts")))
    annotate(data, labeler="gt")
    return split([data], val=float(cfg.get("val", 0.1)), seed=0).data_yaml


def train_chunk(folder: Path, data_yaml: Path, start: Path, cfg: dict, train_cfg: dict, average_last: int,
                device: str | None) -> Path:
    """Train from ``start`` (or resume an interrupted chunk) and return the chunk's weight-averaged model."""
    from pomona.pipeline.average import average_last_epochs
    from pomona.pipeline.train import train

    args = dict(train_cfg)
    trained = folder / "trained.json"  # written once training has finished: a finished run cannot be resumed
    if trained.is_file():
        pass
    elif (folder / "weights" / "last.pt").is_file():
        console.print(f"resuming the interrupted training in {folder}")
        train(data_yaml, model=str(folder / "weights" / "last.pt"), out=folder, device=device, resume=True,
              ema_decay=args.get("ema_decay"), ema_tau=args.get("ema_tau"))
    else:
        train(data_yaml, model=str(start), epochs=int(cfg["epochs"]), out=folder, device=device, **args)
    atomic.write_json(trained, {"start": str(start), "epochs": int(cfg["epochs"])})
    if average_last > 1 and int(cfg["epochs"]) > 1:
        return average_last_epochs(folder, min(average_last, int(cfg["epochs"])))[0]
    return folder / "weights" / "best.pt"


def run_chunk(k: int, seed: int, start: Path, cfg: dict, out: Path, device: str | None, real: Path | None) -> dict:
    """One chunk, start to finish; returns its record for the state and the card."""
    from pomona.pipeline.devices import normalize_device
    from pomona.pipeline.evaluate import evaluate_model
    from pomona.pipeline.procedural import RENDERER_VERSION
    from pomona.pipeline.train import seconds_trained

    chunk_cfg, train_cfg = cfg["chunk"], dict(cfg["train"])
    imgsz = int(train_cfg.pop("imgsz", 416))
    folder = out / f"chunk-{k}"
    t0 = time.perf_counter()
    trained_before = seconds_trained(folder)  # an interrupted chunk's epochs count in its hours (its render does not)
    console.rule(f"[bold]chunk {k}: {chunk_cfg['n']} new images from seed {seed}, {chunk_cfg['epochs']} epochs")
    data_yaml = render_chunk(folder, seed, chunk_cfg)
    weights = train_chunk(folder, data_yaml, start, chunk_cfg, dict(train_cfg, imgsz=imgsz),
                          int(cfg.get("average_last", 0)), device)
    synthetic = evaluate_model(weights, data_yaml, "val", imgsz, folder / "eval-synthetic-val")
    real_result = evaluate_model(weights, real, "val", imgsz, folder / "eval-real-dev") if real else None
    from pomona.dataset import read_data_yaml

    train_images = len(read_data_yaml(data_yaml).images("train"))
    dev = normalize_device(device)
    return {"chunk": k, "from": Path(start).name, "start": "continued", "recipe": "release",
            "seeds": [seed, seed + int(chunk_cfg["n"])],
            "images": int(chunk_cfg["n"]), "train_images": train_images, "epochs": int(chunk_cfg["epochs"]),
            "imgsz": imgsz, "images_seen": train_images * int(chunk_cfg["epochs"]),
            "device": "cpu" if dev == "cpu" else dev, "hours": round((time.perf_counter() - t0 + trained_before) / 3600, 4),
            "renderer_version": RENDERER_VERSION, "weights": str(weights),
            "synthetic_mask_map50": round(synthetic["mask"]["map50"], 4),
            "real_mask_map50": round(real_result["mask"]["map50"], 4) if real_result else None,
            "synthetic_val": synthetic, "real_dev": real_result}


# --- the whole run -----------------------------------------------------------------------------------


def release(hours: float | None = 1.0, device: str | None = None, chunks: int | None = None,
            out: Path | None = None, ship: bool = False, recipe: str | Path = "release",
            real: Path | None = None, chunk_overrides: dict | None = None) -> dict:
    """Run chunks within the budget, package the candidate, gate it against the base; returns the verdict.

    ``out`` defaults to ``runs/release/NAME-vVERSION``: a rerun continues the same base's run, and once a
    candidate has shipped, the next release starts a new folder from the new version.
    """
    from pomona.pipeline.recipe import default_real, load_recipe

    cfg = load_recipe(recipe)
    cfg["chunk"] = dict(cfg["chunk"], **(chunk_overrides or {}))
    if hours is not None and hours <= 0:
        raise PomonaError(f"--hours must be positive, got {hours}")
    real = Path(real) if real else default_real()
    base = load_base(str(cfg["model"]))
    out = Path(out) if out else Path("runs") / "release" / f"{base.name}-v{base.version}"  # one folder per base
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out, base)
    started = time.time()
    while budget_allows(state, hours, chunks, started):
        k = len(state["chunks"]) + 1
        start = Path(state["chunks"][-1]["weights"]) if state["chunks"] else base.weights
        record = run_chunk(k, state["next_seed"], start, cfg, out, device, real)
        state["chunks"].append({key: v for key, v in record.items() if key not in ("synthetic_val", "real_dev")})
        state["last_scores"] = {"synthetic_val": record["synthetic_val"], "real_dev": record["real_dev"]}
        state["next_seed"] = record["seeds"][1]
        state["seconds"] += time.time() - started
        started = time.time()
        save_state(out, state)
    if not state["chunks"]:
        raise PomonaError("no chunk fits in the budget (--hours / --chunks)")
    return finish(out, base, state, cfg, real, ship)


def finish(out: Path, base: Base, state: dict, cfg: dict, real: Path | None, ship: bool) -> dict:
    """Package the last chunk's model as a candidate with its card and decide whether it may replace the base."""
    from pomona.pipeline.card import build_card, package_model, scores_of

    last = state["chunks"][-1]
    noise = float(cfg.get("noise", 0.0))
    if real and (state.get("base_real") or {}).get("imgsz") != shipped_size(base, last["imgsz"]):
        # the base, scored in this run on the same photos as the candidate (again if the run predates sizes)
        state["base_real"], state["base_real_same_size"] = score_base(base, real, last["imgsz"], out)
        save_state(out, state)
    scores = {"synthetic_val": scores_of(state["last_scores"]["synthetic_val"]),
              "real_dev": scores_of(state["last_scores"]["real_dev"])}
    verdict = gate(scores["real_dev"], scores_of(state.get("base_real")), noise)
    size_note = input_size_note(verdict, state.get("base_real"), state.get("base_real_same_size"))
    scores["noise"] = f"a candidate must beat the model it continues by more than {noise} real mask mAP50 (measured noise)"
    chunks = list(base.card["training"]["chunk_list"]) + [dict(c, chunk=len(base.card["training"]["chunk_list"]) + i)
                                                          for i, c in enumerate(state["chunks"])]
    for c in chunks:
        c.pop("weights", None)
    card = build_card(base.name, base.version + 1, chunks, scores, last["imgsz"], "release",
                      notes=f"Continued from {base.name} v{base.version}. Gate: {verdict['reason']}{size_note}")
    candidate = package_model(Path(last["weights"]), card, out / "candidate" / base.name)
    return settle(verdict, candidate, base, ship, out, chunks=len(state["chunks"]),
                  hours=round(sum(c["hours"] for c in state["chunks"]), 3))


def promote(run: Path, ship: bool = False, recipe: str | Path = "release", real: Path | None = None,
            latency_frames: int = 40, imgsz: int | None = None) -> dict:
    """A finished from-scratch recipe run (``pomona recipe sim2real --out RUN``) as the next version's candidate.

    Continuing the shipped model is one way to spend compute; a longer run from scratch on a newer renderer is
    another, and it answers to the same gate: the base is scored in this call on the same photos, as it ships
    (``score_base``), and the candidate replaces it only when ahead by more than the recipe's noise. The card's
    history is the run's own (a new lineage); its notes name the model it replaced.

    The model ships at the size the run evaluated it at (its recipe's ``evaluate.imgsz``; ``sim2real-coco`` trains
    at 416 px and evaluates at 512, where a small apple keeps more pixels), or at ``imgsz``: scored again at that
    size. The card and ``.onnx`` take the size, and the card's latency says what it costs.
    """
    from pomona.pipeline.card import build_card, chunk_from_recipe_run, package_model, scores_of, start_kind
    from pomona.pipeline.recipe import default_real, load_recipe

    # before any evaluation: the export at the end takes only multiples of its 32-px stride
    if imgsz is not None and (imgsz % 32 or not 32 <= imgsz <= 4096):
        raise PomonaError(f"--imgsz must be a multiple of 32 between 32 and 4096 pixels, got {imgsz}")
    cfg, run = load_recipe(recipe), Path(run)
    base = load_base(str(cfg["model"]))
    chunk, scores = chunk_from_recipe_run(run)
    real = Path(real) if real else default_real()
    evaluated = int((scores.get("real_dev") or scores["synthetic_val"])["imgsz"])  # the recipe's evaluate.imgsz
    size = int(imgsz or evaluated)
    if size != evaluated:
        scores = rescore_at(run, size, real)
    base_real, base_same_size = score_base(base, real, size, run)
    # a whole from-scratch run varies less than a short chunk from a trained model: its own measured noise
    noise = float(cfg.get("noise_from_scratch", cfg.get("noise", 0.0)))
    verdict = gate(scores["real_dev"], scores_of(base_real), noise)
    size_note = input_size_note(verdict, base_real, base_same_size)
    scores["noise"] = f"a candidate must beat the model it replaces by more than {noise} real mask mAP50 (measured noise)"
    start = "random weights" if start_kind(chunk) == "scratch" else chunk["from"]
    lineage = (f"the run v{base.version} came from: the same weights" if same_run(base, chunk)
               else f"a new lineage, not a continuation of v{base.version}")
    trained_at = f" Trained at {chunk['imgsz']} px, shipped at {size} px." if size != chunk["imgsz"] else ""
    card = build_card(base.name, base.version + 1, [chunk], scores, size, chunk["recipe"],
                      notes=f"Trained by the `{chunk['recipe']}` recipe from {start} ({lineage}).{trained_at} "
                            f"Gate against {base.name} v{base.version}: {verdict['reason']}{size_note}")
    candidate = package_model(run / "weights" / "best.pt", card, run / "candidate" / base.name, latency_frames)
    return settle(verdict, candidate, base, ship, run, chunks=1, hours=chunk["hours"])


def same_run(base: Base, chunk: dict) -> bool:
    """Is the recipe run's model the base itself (the base's one chunk: same recipe, renders, epochs and
    hours)? Then a ``--from-run`` candidate differs from it only in its input size."""
    keys = ("recipe", "seeds", "epochs", "hours", "from")
    history = base.card.get("training", {}).get("chunk_list") or []
    return len(history) == 1 and all(history[0].get(k) == chunk.get(k) for k in keys)


def rescore_at(run: Path, imgsz: int, real: Path | None) -> dict:
    """A recipe run's model scored again at ``imgsz``: its own synthetic val and the real dev photos."""
    import json

    from pomona.pipeline.card import scores_of
    from pomona.pipeline.evaluate import evaluate_model

    best = run / "weights" / "best.pt"
    own_val = Path(json.loads((run / "results.json").read_text())["synthetic_val"]["data"])
    synthetic = evaluate_model(best, own_val, "val", imgsz, run / f"eval-synthetic-val-{imgsz}")
    real_dev = evaluate_model(best, real, "val", imgsz, run / f"eval-real-dev-{imgsz}") if real else None
    return {"synthetic_val": scores_of(synthetic), "real_dev": scores_of(real_dev)}


def shipped_size(base: Base, fallback: int) -> int:
    """The input size the base runs at as shipped: its card's (its .onnx is exported at that size)."""
    return int(base.card.get("imgsz") or fallback)


def score_base(base: Base, real: Path | None, imgsz: int, folder: Path) -> tuple[dict | None, dict | None]:
    """The base on the real dev photos as users run it (its shipped input size), and at the candidate's size.

    The gate compares the two models as shipped: a candidate that runs at a larger input size is judged as the
    product it would be (its card records the latency that costs). The second score, the base at the candidate's
    size, says how much of a gain the input size alone would give; it is the same result when the sizes agree.
    """
    from pomona.pipeline.evaluate import evaluate_model

    if not real:
        return None, None
    size = shipped_size(base, imgsz)
    as_shipped = evaluate_model(base.weights, real, "val", size, folder / "eval-base-real-dev")
    if size == imgsz:
        return as_shipped, as_shipped
    return as_shipped, evaluate_model(base.weights, real, "val", imgsz, folder / f"eval-base-real-dev-{imgsz}")


def input_size_note(verdict: dict, as_shipped: dict | None, same_size: dict | None) -> str:
    """For a candidate at another input size than the base: the base's score at the candidate's size, also
    put into the verdict (``base_real_mask_map50_same_size``); '' when the sizes agree."""
    if not as_shipped or not same_size or as_shipped["imgsz"] == same_size["imgsz"]:
        return ""
    score = round(float(same_size["mask"]["map50"]), 4)
    verdict["base_real_mask_map50_same_size"] = score
    return (f" (the base at the candidate's {same_size['imgsz']} px input scores {score:.3f}: the part of the gain "
            f"that the input size alone gives)")


def settle(verdict: dict, candidate: Path, base: Base, ship: bool, out: Path, **facts) -> dict:
    """The gate's verdict with its candidate (the base's next version) and ``facts``; the candidate installed as
    the shipped model when it beat the base and ``ship`` was asked; written to ``OUT/verdict.json``."""
    from pomona.models import models_dir

    verdict.update(candidate=str(candidate), version=base.version + 1, **facts, shipped=False)
    if ship and verdict["beats"]:
        install_model(candidate, models_dir() / base.name)
        verdict["shipped"] = True
    atomic.write_json(out / "verdict.json", verdict)
    return verdict


def gate(candidate: dict | None, base: dict | None, noise: float) -> dict:
    """Does the candidate beat the base on the real dev photos (mask mAP50) by more than ``noise``?"""
    if not candidate or not base:
        return {"beats": False, "reason": "no real dev photos to compare on: nothing is shipped without them"}
    c, b = candidate["mask"]["map50"], base["mask"]["map50"]
    beats = c - b > noise
    word = "beats" if beats else "does not beat"
    sizes = (candidate.get("imgsz"), base.get("imgsz"))
    c_at, b_at = ((f" at {sizes[0]} px", f" at {sizes[1]} px as shipped") if None not in sizes and sizes[0] != sizes[1]
                  else ("", ""))
    return {"beats": beats, "candidate_real_mask_map50": c, "base_real_mask_map50": b, "delta": round(c - b, 4),
            "noise": noise, "candidate_imgsz": sizes[0], "base_imgsz": sizes[1],
            "reason": f"candidate {c:.3f}{c_at} vs base {b:.3f}{b_at} on the real dev photos: {word} it by more "
                      f"than the noise {noise}"}


def install_model(candidate: Path, dest: Path) -> Path:
    """Replace a shipped model folder by a candidate folder (whole, or not at all)."""
    with atomic.atomic_dir(dest) as tmp:
        for f in Path(candidate).iterdir():
            shutil.copy2(f, tmp / f.name)
    return dest
