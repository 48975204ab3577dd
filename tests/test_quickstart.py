"""Smoke test of the whole offline pipeline at tiny scale: render -> label -> split -> train -> evaluate -> export."""

import json
from pathlib import Path

import pytest

from pomona.cli import main
from tests.conftest import kill_training_after_its_first_epoch, make_dataset


@pytest.mark.slow
def test_quickstart_tiny(tmp_path):
    real = make_dataset(tmp_path / "real", [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)], []])
    (real / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    out = tmp_path / "qs"
    main(["quickstart", "--out", str(out), "--real", str(real / "data.yaml"), "--n", "12", "--epochs", "1",
          "--imgsz", "96"])  # raises SystemExit on any error
    results = json.loads((out / "results.json").read_text())
    for key in ("synthetic_val", "real_dev"):
        for kind in ("box", "mask"):
            assert 0.0 <= results[key][kind]["map50"] <= 1.0
    assert results["real_dev"]["images"] == 3
    assert (out / "weights" / "best.pt").is_file() and (out / "weights" / "best.onnx").is_file()
    assert (out / "eval-real-dev" / "predictions.jpg").is_file()
    report = (out / "report.md").read_text()
    assert "real dev" in report and "synthetic val" in report and "mask mAP50" in report
    assert "Training started from `yolo11n-seg.yaml`: random weights (from scratch)." in report
    manifest = (out / "data" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 12


@pytest.mark.slow
def test_sim2real_recipe_averages_its_last_epochs(tmp_path):
    import torch

    from pomona.pipeline.recipe import run_recipe

    real = make_dataset(tmp_path / "real", [[(30, 30, 12)], []])
    (real / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    out = tmp_path / "s2r"
    (out / "weights").mkdir(parents=True)
    (out / "weights" / "epoch99.pt").write_bytes(b"left by an earlier, longer run")  # must not be averaged
    run_recipe("sim2real", out, real=real / "data.yaml", overrides={"export": {"skip": True}}, n=12, epochs=3, imgsz=96)
    results = json.loads((out / "results.json").read_text())
    assert results["averaged_epochs"] == [1, 2, 3]  # fewer epochs than average_last: all of them
    weights = out / "weights"
    assert (weights / "best_epoch.pt").is_file()
    ckpt = torch.load(weights / "best.pt", map_location="cpu", weights_only=False)
    assert ckpt["averaged_from"] == ["epoch0.pt", "epoch1.pt", "epoch2.pt"]
    assert results["real_dev"]["weights"] == str(weights / "best.pt")
    assert "weight average of epochs 1-3" in (out / "report.md").read_text()
    # numbers only, as the learning curve evaluates every epoch: no picture grid drawn
    from pomona.pipeline.evaluate import evaluate_model

    bare = evaluate_model(weights / "epoch2.pt", real / "data.yaml", "val", 96, tmp_path / "bare", grid_images=0)
    assert (tmp_path / "bare" / "metrics.json").is_file() and "grid" not in bare
    assert not (tmp_path / "bare" / "predictions.jpg").exists()


@pytest.mark.slow
def test_an_interrupted_recipe_run_resumes_without_rendering_again(tmp_path, monkeypatch, capsys):
    """A recipe run killed after its first epoch continues with `--resume`: the renders stay as they were, training
    goes on from last.pt (the first epoch is not trained again) and the weight average spans the whole run."""
    import csv

    from pomona.pipeline.recipe import run_recipe

    real = make_dataset(tmp_path / "real", [[(30, 30, 12)], []])
    (real / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    out = tmp_path / "s2r"
    killed = kill_training_after_its_first_epoch(monkeypatch)
    args = dict(real=real / "data.yaml", overrides={"export": {"skip": True}}, n=8, epochs=3, imgsz=64)
    with pytest.raises(killed):
        run_recipe("sim2real", out, **args)
    monkeypatch.undo()
    rendered = {p.name: p.stat().st_mtime_ns for p in (out / "data" / "images").iterdir()}
    assert not (out / "results.json").exists()

    report = run_recipe("sim2real", out, resume=True, real=real / "data.yaml", overrides={"export": {"skip": True}})
    with open(out / "results.csv") as f:
        assert [int(float(row["epoch"])) for row in csv.DictReader(f)] == [1, 2, 3]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data" / "images").iterdir()} == rendered
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"] and results["averaged_epochs"] == [1, 2, 3] and results["generate"]["images"] == 8
    assert results["train_from"] == "yolo11n-seg.yaml" and "real_dev" in results
    text = report.read_text()
    assert "Resumed after an interruption" in text and "rendered before the run was resumed" in text
    # the stage times count the part before the interruption: its render and first epoch
    assert results["stage_times_before"] == ["annotate", "generate"] and results["trained_before_s"] > 0
    assert results["seconds"]["generate"] > 0 and results["seconds"]["train"] > results["trained_before_s"]
    from pomona.pipeline.card import chunk_from_recipe_run  # its card names the start, not the resumed last.pt

    assert chunk_from_recipe_run(out)[0]["from"] == "yolo11n-seg.yaml (from scratch)"
    # a finished run, or a folder without one, has nothing to resume: one line, exit 2
    capsys.readouterr()
    for argv, words in ((["sim2real", "--out", str(out)], "finished run"),
                        (["sim2real", "--out", str(tmp_path / "empty")], "nothing to resume"),
                        (["release"], "resumes by itself")):
        with pytest.raises(SystemExit) as exit_:
            main(["recipe", *argv, "--resume"])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and words in err, err


def test_a_run_records_a_recipe_it_can_load_again(tmp_path):
    """A recipe given as a file is recorded by its path (release --from-run and the card load it from the run);
    a packaged one by its name."""
    from pomona.pipeline.recipe import load_recipe

    assert load_recipe("sim2real")["_ref"] == "sim2real"
    custom = tmp_path / "sim2real-seed2000.yaml"
    custom.write_text("generate: {n: 4, seed: 2000}\n")
    ref = load_recipe(custom)["_ref"]
    assert Path(ref) == custom.resolve()
    assert load_recipe(ref)["generate"]["seed"] == 2000


def test_a_recipe_with_missing_start_weights_stops_before_rendering(tmp_path, monkeypatch):
    from pomona.errors import PomonaError
    from pomona.pipeline.recipe import run_recipe

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POMONA_WEIGHTS", raising=False)
    monkeypatch.delenv("POMONA_ONLINE", raising=False)
    with pytest.raises(PomonaError, match="yolov8n-seg.pt.*make coco-weights"):
        run_recipe("sim2real-coco", tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing rendered, no run folder that looks started
