import json

import pytest
import yaml

from pomona.dataset import read_data_yaml, write_manifest
from pomona.errors import PomonaError
from pomona.pipeline.split import split
from tests.conftest import make_dataset


def _grouped_dataset(tmp_path, n_groups=10, copies=3):
    specs = [[(30 + g, 30, 10)] for g in range(n_groups) for _ in range(copies)]
    ds = make_dataset(tmp_path / "ds", specs)
    write_manifest(ds, [{"file": f"images/im{i:03d}.png", "group": f"scene-{i // copies}"} for i in range(len(specs))])
    return ds


def test_groups_never_straddle_splits(tmp_path):
    ds = _grouped_dataset(tmp_path)
    report = split([ds], val=0.2, test=0.2, seed=3)
    spec = read_data_yaml(report.data_yaml)
    groups = {r["file"].split("/")[-1]: r["group"] for r in map(json.loads, (ds / "manifest.jsonl").read_text().splitlines())}
    seen = {}
    for s in ("train", "val", "test"):
        for img in spec.images(s):
            g = groups[img.name]
            assert seen.setdefault(g, s) == s, f"group {g} in {seen[g]} and {s}"
    assert report.counts == {"train": 18, "val": 6, "test": 6}
    assert sum(report.counts.values()) == 30


def test_deterministic_for_seed(tmp_path):
    ds = _grouped_dataset(tmp_path)
    a = (split([ds], val=0.3, seed=1), (ds / "val.txt").read_text())[1]
    b = (split([ds], val=0.3, seed=1), (ds / "val.txt").read_text())[1]
    c = (split([ds], val=0.3, seed=2), (ds / "val.txt").read_text())[1]
    assert a == b and a != c


def test_several_datasets(tmp_path):
    a = make_dataset(tmp_path / "a", [[(30, 30, 10)]] * 4)
    b = make_dataset(tmp_path / "b", [[(40, 30, 10)]] * 4)
    with pytest.raises(PomonaError, match="--out"):
        split([a, b])
    report = split([a, b], val=0.25, out=tmp_path / "mix")
    data = yaml.safe_load(report.data_yaml.read_text())
    assert isinstance(data["train"], list) and len(data["train"]) == 2
    assert sum(len(v) for v in read_data_yaml(report.data_yaml).splits.values()) == 8


def test_bad_input(tmp_path):
    ds = make_dataset(tmp_path / "ds", [[(30, 30, 10)]] * 3)
    with pytest.raises(PomonaError, match="fractions"):
        split([ds], val=0.7, test=0.5)
    with pytest.raises(PomonaError, match="source groups"):
        split([ds], val=0.5, test=0.5 - 1e-9)
    import shutil
    shutil.rmtree(ds / "labels")
    with pytest.raises(PomonaError, match="no labels"):
        split([ds])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PomonaError, match="no images"):
        split([tmp_path / "empty"])


def test_train_accepts_dataset_folders(tmp_path):
    from pomona.pipeline.train import resolve_training_data

    a = make_dataset(tmp_path / "procedural", [[(30, 30, 10)]] * 5)
    b = make_dataset(tmp_path / "generated", [[(40, 30, 10)]] * 5)
    data_yaml = resolve_training_data([a, b], tmp_path / "run")
    assert data_yaml == tmp_path / "run" / "data.yaml"
    spec = read_data_yaml(data_yaml)
    assert {p.parent.parent.name for p in spec.images("train")} == {"procedural", "generated"}
    assert resolve_training_data([data_yaml], tmp_path / "other") == data_yaml
    with pytest.raises(PomonaError, match="dataset folders only"):
        resolve_training_data([data_yaml, a], tmp_path / "x")
