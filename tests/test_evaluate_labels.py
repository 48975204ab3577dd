import shutil

import pytest

from pomona.errors import PomonaError
from pomona.pipeline.evaluate import evaluate_labels
from tests.conftest import make_dataset


def test_identical_labels_are_perfect(tiny_dataset):
    r = evaluate_labels(tiny_dataset / "labels", tiny_dataset / "labels")
    assert r["precision"] == r["recall"] == r["f1"] == 1.0
    assert r["dice"] == pytest.approx(1.0) and r["iou"] == pytest.approx(1.0)
    assert r["ref_instances"] == 5 and r["images"] == 4


def test_hand_computed_case(tmp_path):
    # reference: 2 apples in one image; prediction: one shifted copy of the first (IoU known) + one false positive
    ref = make_dataset(tmp_path / "ref", [[(30, 30, 12), (90, 50, 12)]])
    pred = make_dataset(tmp_path / "pred", [[(33, 30, 12), (100, 15, 6)]])
    from pomona.dataset import read_labels
    a = read_labels(ref / "labels" / "im000.txt", (96, 128)).masks[0]
    b = read_labels(pred / "labels" / "im000.txt", (96, 128)).masks[0]
    iou = (a & b).sum() / (a | b).sum()
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    r = evaluate_labels(pred / "labels", ref / "labels")
    assert r["matched"] == 1
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5) and r["f1"] == pytest.approx(0.5)
    assert r["iou"] == pytest.approx(iou, abs=1e-4)
    assert r["dice"] == pytest.approx(dice, abs=1e-4)


def test_missing_prediction_file_counts_as_misses(tiny_dataset, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(tiny_dataset, pred)
    (pred / "labels" / "im000.txt").unlink()
    r = evaluate_labels(pred / "labels", tiny_dataset / "labels")
    assert r["recall"] == pytest.approx(3 / 5) and r["precision"] == 1.0


def test_coco_json_as_input(tiny_dataset):
    from pomona.dataset import read_labels, write_coco, list_images
    entries = [(f"images/{p.name}", read_labels(tiny_dataset / "labels" / f"{p.stem}.txt", (96, 128)))
               for p in list_images(tiny_dataset)]
    write_coco(tiny_dataset / "annotations.json", entries)
    r = evaluate_labels(tiny_dataset / "annotations.json", tiny_dataset / "labels")
    assert r["f1"] == 1.0


def test_errors(tmp_path):
    with pytest.raises(PomonaError, match="labels not found"):
        evaluate_labels(tmp_path / "a", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PomonaError, match="empty labels folder"):
        evaluate_labels(tmp_path / "empty", tmp_path / "empty")
