"""The CLI's contract: help for every command, and bad input -> one line on stderr, exit 2, no traceback."""

import json
import subprocess
import sys

import pytest

from tests.conftest import make_dataset


def pomona(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pomona.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_every_command():
    proc = pomona("--help")
    assert proc.returncode == 0
    for cmd in ("generate", "annotate", "split", "train", "evaluate", "quickstart", "export", "run", "bench", "demo"):
        assert cmd in proc.stdout


@pytest.mark.parametrize("cmd", ["generate", "annotate", "split", "train", "quickstart", "export", "run", "bench", "demo"])
def test_each_command_has_help(cmd):
    proc = pomona(cmd, "--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_generate_bad_counts_and_sizes(tmp_path):
    assert_one_line_error(pomona("generate", tmp_path / "o", "--n", "-3"), "--n")
    assert_one_line_error(pomona("generate", tmp_path / "o", "--n", "2", "--size", "abc"), "--size")
    assert_one_line_error(pomona("generate", tmp_path / "o", "--n", "2", "--prompts", tmp_path / "none.txt"), "none.txt")
    assert not (tmp_path / "o").exists()


def test_generate_unknown_backend_is_a_usage_error(tmp_path):
    proc = pomona("generate", tmp_path / "o", "--backend", "dalle")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "dalle" in proc.stderr


def test_split_and_annotate_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(pomona("split", tmp_path / "empty"), "no images")
    assert_one_line_error(pomona("annotate", tmp_path / "empty"))


def test_split_without_labels(tmp_path):
    ds = make_dataset(tmp_path / "ds", [[(30, 30, 10)]] * 2)
    import shutil
    shutil.rmtree(ds / "labels")
    assert_one_line_error(pomona("split", ds), "no labels")


def test_train_and_evaluate_with_bad_paths(tmp_path):
    assert_one_line_error(pomona("train", tmp_path / "nowhere.yaml"), "nowhere.yaml")
    (tmp_path / "data.yaml").write_text("train: missing\nval: missing\nnames: {0: apple}\n")
    assert_one_line_error(pomona("train", tmp_path / "data.yaml"), "points nowhere")
    ds = make_dataset(tmp_path / "ds", [[(30, 30, 10)]])
    (ds / "data.yaml").write_text("train: images\nval: images\nnames: {0: apple}\n")
    assert_one_line_error(pomona("evaluate", "model", tmp_path / "missing.pt", ds / "data.yaml"), "missing.pt")
    (tmp_path / "fake.pt").write_text("this is not a checkpoint")
    assert_one_line_error(pomona("evaluate", "model", tmp_path / "fake.pt", ds / "data.yaml"), "fake.pt")


def test_evaluate_labels_json_prints_only_json(tiny_dataset):
    proc = pomona("evaluate", "labels", tiny_dataset / "labels", tiny_dataset / "labels", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["f1"] == 1.0 and result["dice"] == pytest.approx(1.0)
