import numpy as np
import pytest

from pomona import dataset as D
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.masks import mask_iou
from tests.conftest import disc


def test_labels_round_trip(tmp_path):
    masks = np.stack([disc(80, 100, 30, 30, 12), disc(80, 100, 70, 40, 18)])
    inst = Instances.from_masks(masks)
    D.write_labels(tmp_path / "labels" / "a.txt", inst)
    back = D.read_labels(tmp_path / "labels" / "a.txt", (80, 100))
    assert len(back) == 2
    assert np.diag(mask_iou(inst.masks, back.masks)).min() > 0.9
    assert np.abs(back.boxes - inst.boxes).max() <= 2


def test_missing_label_file_means_background(tmp_path):
    assert len(D.read_labels(tmp_path / "nope.txt", (10, 10))) == 0


def test_malformed_label_line(tmp_path):
    with pytest.raises(PomonaError, match="a.txt:1"):
        D.parse_labels("0 0.1 0.2 0.3\n", (10, 10), "a.txt")
    with pytest.raises(PomonaError, match="not a YOLO label"):
        D.parse_labels("apple 0.1 0.2\n", (10, 10))


def test_box_only_label_becomes_rectangle():
    inst = D.parse_labels("0 0.5 0.5 0.5 0.5\n", (100, 100))
    assert abs(inst.areas[0] - 2500) < 200


def test_label_path_rule(tmp_path):
    assert D.label_path(tmp_path / "images" / "x.jpg") == tmp_path / "labels" / "x.txt"
    with pytest.raises(PomonaError):
        D.label_path(tmp_path / "pics" / "x.jpg")


def test_bad_images(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(PomonaError, match="empty image"):
        D.read_image(tmp_path / "empty.jpg")
    with pytest.raises(PomonaError, match="not a readable image"):
        D.read_image(tmp_path / "text.jpg")
    with pytest.raises(PomonaError, match="no images"):
        D.list_images(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)


def test_data_yaml_round_trip_and_errors(tiny_dataset, tmp_path):
    (tiny_dataset / "train.txt").write_text("./images/im000.png\n./images/im001.png\n")
    D.write_data_yaml(tiny_dataset / "data.yaml", {"train": "train.txt", "val": "images"})
    spec = D.read_data_yaml(tiny_dataset / "data.yaml")
    assert [p.name for p in spec.images("train")] == ["im000.png", "im001.png"]
    assert len(spec.images("val")) == 4
    assert spec.names == {0: "apple"}
    D.write_data_yaml(tmp_path / "bad.yaml", {"train": "nowhere", "val": "nowhere"})
    with pytest.raises(PomonaError, match="points nowhere"):
        D.read_data_yaml(tmp_path / "bad.yaml")
    with pytest.raises(PomonaError, match="not found"):
        D.read_data_yaml(tmp_path / "missing.yaml")


def test_coco_round_trip(tmp_path):
    masks = np.stack([disc(50, 60, 20, 20, 8), disc(50, 60, 40, 30, 10)])
    inst = Instances.from_masks(masks, scores=np.array([0.9, 0.5]))
    D.write_coco(tmp_path / "a.json", [("images/a.jpg", inst), ("images/b.jpg", Instances.empty((50, 60)))])
    back = D.read_coco(tmp_path / "a.json")
    assert set(back) == {"images/a.jpg", "images/b.jpg"}
    assert (back["images/a.jpg"].masks == masks).all()
    assert np.allclose(back["images/a.jpg"].scores, [0.9, 0.5])
    assert len(back["images/b.jpg"]) == 0


def test_manifest_round_trip(tmp_path):
    recs = [{"file": "images/a.jpg", "seed": 1}, {"file": "images/b.jpg", "seed": 2}]
    D.write_manifest(tmp_path, recs)
    assert D.read_manifest(tmp_path) == recs
    (tmp_path / "manifest.jsonl").write_text('{"a": 1}\n{broken\n')
    with pytest.raises(PomonaError, match="manifest.jsonl:2"):
        D.read_manifest(tmp_path)
