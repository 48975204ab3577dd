"""Shipped models end to end at tiny scale: a recipe run packaged as v1, names that resolve, the release
recipe (fresh seeds per chunk, resume, gate, ship) and its card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import kill_training_after_its_first_epoch, make_dataset

NAME = "pomona-apple-n"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict:
    """A tiny sim2real run packaged as v1 of NAME in a models folder of its own (POMONA_MODELS_DIR)."""
    pytest.importorskip("ultralytics")
    from pomona.pipeline.card import package_recipe_run
    from pomona.pipeline.recipe import run_recipe

    root = tmp_path_factory.mktemp("release")
    real = make_dataset(root / "real", [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)], []])
    (real / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    run = root / "s2r"
    run_recipe("sim2real", run, real=real / "data.yaml", overrides={"export": {"skip": True}}, n=12, epochs=2, imgsz=96)
    models = root / "models"
    package_recipe_run(run, models / NAME, NAME, 1, latency_frames=3)
    return {"root": root, "models": models, "real": real / "data.yaml", "folder": models / NAME}


@pytest.fixture
def models_env(shipped, monkeypatch):
    monkeypatch.setenv("POMONA_MODELS_DIR", str(shipped["models"]))
    return shipped


def _cli(args, env_models, cwd, timeout=300):
    import os

    env = dict(os.environ, POMONA_MODELS_DIR=str(env_models))
    return subprocess.run([sys.executable, "-m", "pomona.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


@pytest.mark.slow
def test_packaged_model_carries_its_card_everywhere(shipped):
    import onnxruntime as ort
    import torch

    folder = shipped["folder"]
    card = json.loads((folder / "card.json").read_text())
    assert card["name"] == NAME and card["version"] == 1 and card["imgsz"] == 96
    chunk = card["training"]["chunk_list"][0]
    assert chunk["seeds"] == [1000, 1012] and chunk["epochs"] == 2 and card["data"]["images"] == 12
    assert card["data"]["images_seen"] == chunk["train_images"] * 2 and card["training"]["cpu_hours"] > 0
    for key in ("synthetic_val", "real_dev"):
        assert set(card["scores"][key]["mask"]) == {"precision", "recall", "map50", "map50_95"}
    assert card["scores"]["real_dev"]["images"] == 3
    assert card["export"]["onnx"]["parity_status"] in ("pass", "inconclusive") and card["latency"]["model_ms_p50"] > 0
    assert card["commit"] and "## Scores" in (folder / "card.md").read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "card.md", f"{NAME}.onnx", f"{NAME}.pt"]
    ckpt = torch.load(folder / f"{NAME}.pt", map_location="cpu", weights_only=False)
    assert ckpt["pomona_card"]["latency"] == card["latency"]  # the final card, not the one before export
    meta = ort.InferenceSession(str(folder / f"{NAME}.onnx"), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(meta.custom_metadata_map["pomona"])["extra"]["card"]["version"] == 1


@pytest.mark.slow
def test_names_resolve_for_the_runtime_and_the_pipeline(models_env, tmp_path, monkeypatch):
    from pomona.edge import Predictor
    from pomona.models import resolve_model
    from pomona.pipeline.evaluate import evaluate_model

    folder = models_env["folder"]
    assert resolve_model(None) == folder / f"{NAME}.onnx"
    assert resolve_model(NAME, prefer="pt") == folder / f"{NAME}.pt"
    assert resolve_model(f"{NAME}.pt") == folder / f"{NAME}.pt"
    assert resolve_model("runs/x/best.onnx") == Path("runs/x/best.onnx")  # a path stays a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{NAME}.onnx").write_bytes(b"mine")  # a file of that name here wins, as paths always do
    assert resolve_model(f"{NAME}.onnx") == Path(f"{NAME}.onnx")
    assert Predictor(NAME).model_path == folder / f"{NAME}.onnx" and Predictor().imgsz == 96
    result = evaluate_model(NAME, models_env["real"], grid_images=0)  # the model's own input size by default
    assert result["imgsz"] == 96 and result["weights"] == str(folder / f"{NAME}.pt")
    assert (tmp_path / "runs" / f"eval-{NAME}-real-val" / "metrics.json").is_file()


@pytest.mark.slow
def test_cli_lists_models_and_runs_the_default_one(models_env, tmp_path):
    proc = _cli(["models", "--json"], models_env["models"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert entry["name"] == NAME and entry["default"] is True and entry["version"] == "1" and entry["imgsz"] == 96
    assert set(entry["size_mb"]) == {"onnx", "pt"}
    table = _cli(["models"], models_env["models"], tmp_path)
    assert table.returncode == 0 and NAME in table.stdout and "## Scores" in table.stdout
    frames = make_dataset(tmp_path / "frames", [[(30, 30, 12)], [(60, 40, 20)]]) / "images"
    run = _cli(["run", "--source", str(frames), "--jsonl", "x.jsonl", "--conf", "0.01"], models_env["models"], tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    named = _cli(["run", NAME, "--source", str(frames), "--max-frames", "1"], models_env["models"], tmp_path)
    assert named.returncode == 0, named.stderr


@pytest.mark.slow
def test_release_continues_on_fresh_seeds_resumes_gates_and_ships(models_env, tmp_path, monkeypatch):
    import shutil

    from pomona.pipeline import release as rel

    models = tmp_path / "models"  # ship into a copy: the module's other tests keep v1
    shutil.copytree(models_env["models"], models)
    monkeypatch.setenv("POMONA_MODELS_DIR", str(models))
    recipe = tmp_path / "tiny-release.yaml"
    recipe.write_text(
        f"model: {NAME}\nchunk: {{n: 6, size: 96, epochs: 2, val: 0.34}}\n"
        "train: {imgsz: 96, batch: 4, mosaic: 0.0, save_period: 1, ema_decay: 0.9, ema_tau: 2}\n"
        "average_last: 2\nnoise: 0.5\n")
    out = tmp_path / "rel"
    first = rel.release(hours=None, chunks=1, out=out, recipe=recipe, real=models_env["real"], ship=True)
    state = json.loads((out / "state.json").read_text())
    assert [c["seeds"] for c in state["chunks"]] == [[2000, 2006]]  # above the v1 seeds 1000-1011
    assert first["beats"] is False and first["shipped"] is False and "noise 0.5" in first["reason"]
    assert json.loads((models / NAME / "card.json").read_text())["version"] == 1  # within the noise: kept

    # Resumed with a larger budget, and a base that scores -1: the candidate beats it and is shipped.
    stamp = (out / "chunk-1" / "trained.json").stat().st_mtime_ns
    real_gate = rel.gate
    monkeypatch.setattr(rel, "gate", lambda c, b, noise: real_gate(c, dict(b, mask=dict(b["mask"], map50=-1.0)), noise))
    second = rel.release(hours=None, chunks=2, out=out, recipe=recipe, real=models_env["real"], ship=True)
    assert (out / "chunk-1" / "trained.json").stat().st_mtime_ns == stamp  # a finished chunk is never redone
    state = json.loads((out / "state.json").read_text())
    assert [c["seeds"] for c in state["chunks"]] == [[2000, 2006], [2006, 2012]]
    assert state["chunks"][1]["from"] == "best.pt" and second["beats"] and second["shipped"]
    card = json.loads((models / NAME / "card.json").read_text())
    assert card["version"] == 2 and card["training"]["chunks"] == 3 and card["data"]["images"] == 24
    assert [c["chunk"] for c in card["training"]["chunk_list"]] == [0, 1, 2]
    assert card["data"]["seeds"] == [[1000, 1012], [2000, 2006], [2006, 2012]]


@pytest.mark.slow
def test_a_from_scratch_run_is_gated_as_the_next_version(models_env, tmp_path, monkeypatch):
    """`pomona recipe release --from-run RUN`: a finished sim2real run against the shipped v1, scored in the same
    call on the same photos; kept out within the noise, shipped as v2 (its own history) when ahead."""
    import shutil

    from pomona.pipeline import release as rel

    models = tmp_path / "models"
    shutil.copytree(models_env["models"], models)
    monkeypatch.setenv("POMONA_MODELS_DIR", str(models))
    run = tmp_path / "s2r"
    shutil.copytree(models_env["root"] / "s2r", run)
    results = json.loads((run / "results.json").read_text())
    results["seconds"]["total"] += 60.0  # another run than the one v1 came from (a copy of it would be v1 itself)
    (run / "results.json").write_text(json.dumps(results))
    recipe = tmp_path / "gate.yaml"
    recipe.write_text(f"model: {NAME}\nnoise: 0.0\nnoise_from_scratch: 0.5\n")  # a whole run's own noise
    kept = rel.promote(run, ship=True, recipe=recipe, real=models_env["real"], latency_frames=3)
    assert not kept["beats"] and not kept["shipped"] and kept["version"] == 2 and "noise 0.5" in kept["reason"]
    assert (run / "eval-base-real-dev").is_dir()  # the base, scored in this call
    assert json.loads((models / NAME / "card.json").read_text())["version"] == 1

    real_gate = rel.gate
    monkeypatch.setattr(rel, "gate", lambda c, b, noise: real_gate(c, dict(b, mask=dict(b["mask"], map50=-1.0)), noise))
    shipped = rel.promote(run, ship=True, recipe=recipe, real=models_env["real"], latency_frames=3)
    assert shipped["beats"] and shipped["shipped"]
    card = json.loads((models / NAME / "card.json").read_text())
    assert card["version"] == 2 and card["training"]["chunks"] == 1
    assert card["training"]["chunk_list"][0]["from"].endswith("(from scratch)")
    assert "new lineage" in card["notes"] and "v1" in card["notes"]


@pytest.mark.slow
def test_a_run_is_shipped_at_another_input_size_when_asked(models_env, tmp_path, monkeypatch):
    """`--from-run RUN --imgsz S`: the run's model (trained at 96 px) scored, gated and exported at 128 px, against
    the base as it ships (96 px); the base's score at 128 px is recorded beside it."""
    import shutil

    import onnxruntime as ort

    from pomona.pipeline import release as rel

    models = tmp_path / "models"
    shutil.copytree(models_env["models"], models)
    monkeypatch.setenv("POMONA_MODELS_DIR", str(models))
    run = tmp_path / "s2r"
    shutil.copytree(models_env["root"] / "s2r", run)
    recipe = tmp_path / "gate.yaml"
    recipe.write_text(f"model: {NAME}\nnoise_from_scratch: 0.5\n")
    verdict = rel.promote(run, ship=False, recipe=recipe, real=models_env["real"], latency_frames=3, imgsz=128)
    assert (verdict["candidate_imgsz"], verdict["base_imgsz"]) == (128, 96) and "base_real_mask_map50_same_size" in verdict
    assert "at 96 px as shipped" in verdict["reason"]
    assert (run / "eval-real-dev-128").is_dir() and (run / "eval-base-real-dev-128").is_dir()
    card = json.loads((run / "candidate" / NAME / "card.json").read_text())
    assert card["imgsz"] == 128 and card["scores"]["real_dev"]["imgsz"] == 128 and card["training"]["chunk_list"][0]["imgsz"] == 96
    assert "Trained at 96 px, shipped at 128 px" in card["notes"] and "input scores" in card["notes"]
    assert "the run v1 came from: the same weights" in card["notes"]  # v1 is this very run
    session = ort.InferenceSession(str(run / "candidate" / NAME / f"{NAME}.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2:] == [128, 128]


def test_box_only_dataset_gives_box_metrics_and_one_line(tmp_path):
    pytest.importorskip("ultralytics")
    from tests.test_export import make_random_model

    data = make_dataset(tmp_path / "boxes", [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)]])
    for f in (data / "labels").glob("*.txt"):  # polygons -> YOLO boxes (class cx cy w h)
        rows = []
        for line in f.read_text().splitlines():
            v = [float(x) for x in line.split()[1:]]
            xs, ys = v[0::2], v[1::2]
            rows.append(f"0 {(min(xs) + max(xs)) / 2} {(min(ys) + max(ys)) / 2} {max(xs) - min(xs)} {max(ys) - min(ys)}")
        f.write_text("\n".join(rows) + "\n")
    (data / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    pt = make_random_model(tmp_path / "rand.pt")
    proc = subprocess.run([sys.executable, "-m", "pomona.cli", "evaluate", "model", str(pt), str(data / "data.yaml"),
                           "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout)
    assert result["labels"] == "boxes" and result["mask"] is None and 0.0 <= result["box"]["map50"] <= 1.0
    assert "mask metrics need polygons" in result["note"]


@pytest.mark.slow
def test_an_interrupted_chunk_resumes_its_training(tmp_path, monkeypatch):
    """Training stopped after its first epoch (a killed job) continues from last.pt, not from the start."""
    pytest.importorskip("ultralytics")
    import csv

    from pomona.pipeline import train as train_mod

    data = make_dataset(tmp_path / "ds", [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)], [(20, 70, 8)]])
    (data / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    run = tmp_path / "chunk"

    killed = kill_training_after_its_first_epoch(monkeypatch)
    with pytest.raises(killed):
        train_mod.train(data / "data.yaml", model="yolo11n-seg.yaml", epochs=3, imgsz=64, batch=2, out=run, workers=0,
                        device="cpu", save_period=1, mosaic=0.0, ema_decay=0.9, ema_tau=2)
    monkeypatch.undo()
    assert (run / "weights" / "last.pt").is_file() and not (run / "weights" / "epoch1.pt").exists()
    train_mod.train(data / "data.yaml", model=str(run / "weights" / "last.pt"), out=run, device="cpu", resume=True,
                    ema_decay=0.9, ema_tau=2)
    with open(run / "results.csv") as f:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(f)]
    assert epochs == [1, 2, 3]  # the first epoch is not trained again
    assert sorted(p.name for p in (run / "weights").glob("epoch*.pt")) == ["epoch0.pt", "epoch1.pt", "epoch2.pt"]


def test_from_run_refuses_flags_it_would_ignore(tmp_path):
    """--from-run gates a finished run: training flags beside it get one line and exit 2, not a silent no-op."""
    proc = subprocess.run([sys.executable, "-m", "pomona.cli", "recipe", "release", "--from-run", str(tmp_path),
                           "--epochs", "3", "--hours", "1"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--hours, --epochs would have no effect" in proc.stderr.strip().splitlines()[-1]


def test_a_card_names_a_pretrained_start_by_its_hash(tmp_path):
    import hashlib

    from pomona.pipeline.card import describe_start

    weights = tmp_path / "yolov8n-seg.pt"
    weights.write_bytes(b"pretend checkpoint")
    digest = hashlib.sha256(b"pretend checkpoint").hexdigest()[:16]
    assert describe_start(weights) == f"yolov8n-seg.pt (pretrained start, sha256 {digest})"
    assert describe_start(Path("yolo11n-seg.yaml")) == "yolo11n-seg.yaml (from scratch)"
    assert describe_start(tmp_path / "gone.pt").endswith("(pretrained start, sha256 file not found here)")
    layers = describe_start(Path("yolo11n-seg.yaml"), weights)
    assert layers == f"yolo11n-seg.yaml with the layers of yolov8n-seg.pt (pretrained start, sha256 {digest})"


def test_gate_judges_both_models_as_shipped_and_tells_the_input_size_apart():
    """A candidate at a larger input size is compared with the base as it ships; the base's score at the
    candidate's size is recorded beside it, so that a gain from the size alone is not passed off as training."""
    from pomona.pipeline.release import gate, input_size_note

    base = {"imgsz": 416, "mask": {"map50": 0.650}}
    verdict = gate({"imgsz": 512, "mask": {"map50": 0.690}}, base, 0.03)
    assert verdict["beats"] and "0.690 at 512 px" in verdict["reason"] and "0.650 at 416 px as shipped" in verdict["reason"]
    note = input_size_note(verdict, base, {"imgsz": 512, "mask": {"map50": 0.673}})
    assert "512 px input scores 0.673" in note and verdict["base_real_mask_map50_same_size"] == 0.673

    same = gate({"imgsz": 416, "mask": {"map50": 0.670}}, base, 0.03)  # +0.02: within the noise
    assert not same["beats"] and " px" not in same["reason"]
    assert input_size_note(same, base, base) == "" and "base_real_mask_map50_same_size" not in same


def test_imgsz_goes_with_from_run_only(tmp_path):
    for args, said in ((["recipe", "release", "--imgsz", "512"], "--imgsz goes with --from-run"),
                       (["recipe", "sim2real", "--imgsz", "512"], "belong to `pomona recipe release`"),
                       (["recipe", "release", "--from-run", str(tmp_path), "--imgsz", "9"], "between 32 and 4096")):
        proc = _cli(args, tmp_path, tmp_path, timeout=120)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_chunks_start_is_read_from_its_field_or_from_an_older_cards_words():
    from pomona.pipeline.card import _data_source, is_pretrained, start_kind

    assert start_kind({"start": "scratch", "from": "anything"}) == "scratch"
    # the cards shipped before the field (v1-v5) say it only in words
    assert start_kind({"from": "yolo11n-seg.yaml (from scratch)"}) == "scratch"
    assert start_kind({"from": "yolov8n-seg.pt (pretrained start, sha256 d39e867b2c3a5dbc)"}) == "pretrained"
    assert start_kind({"from": "yolo11n-seg.yaml with the layers of x.pt (pretrained start, sha256 0)"}) == "pretrained-layers"
    assert start_kind({"from": "best.pt"}) == "continued"
    assert is_pretrained({"start": "pretrained-layers"}) and not is_pretrained({"start": "continued"})
    assert "COCO" in _data_source([{"start": "pretrained"}]) and "COCO" not in _data_source([{"start": "scratch"}])
