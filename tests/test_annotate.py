"""`pomona annotate`: real Ultralytics / segment-anything plumbing with tiny random models built
from configs (nothing is downloaded). Random weights make random labels, so these tests check
what the stage does with a model's output (class filter, one encoder pass per image, clean-up,
files written, errors), not label quality."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from pomona import atomic
from pomona.dataset import read_coco, read_labels, write_labels
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.pipeline import segmenters
from pomona.pipeline.annotate import annotate
from pomona.pipeline.segmenters import SegmentAnythingSegmenter, register_segmenter, segment_anything_builder

H, W = 64, 80
CONF = 0.2  # random heads score ~0.5 everywhere: every anchor is a detection
CLASSES = {0: "pear", 1: "apple", 2: "leaf"}  # apple is not class 0: the id must be looked up by name


# --- tiny models, built from configs and saved like real checkpoints --------------------------------


def _random_yolo(cfg_name: str, folder: Path, names: dict[int, str]) -> Path:
    """A randomly initialised YOLO11n (detect or seg) with ``names``, saved as a .pt that YOLO() reloads."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(cfg_name)
    cfg["nc"] = len(names)
    cfg_path = folder / cfg_name  # the file name tells Ultralytics the scale (n)
    cfg_path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    model = YOLO(str(cfg_path))
    model.model.names = dict(names)
    # Default init lets activations vanish, so every anchor would score the same and argmax would
    # always pick class 0; variance-preserving init gives each anchor its own class.
    for module in model.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    for branch in model.model.model[-1].cv3:
        torch.nn.init.zeros_(branch[-1].bias)
    path = folder / f"{cfg_path.stem}-random.pt"
    model.save(str(path))
    return path


def _tiny_sam(img_size: int = 256, dim: int = 32):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(
        image_encoder=ImageEncoderViT(depth=1, embed_dim=dim, img_size=img_size, mlp_ratio=2, num_heads=2,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), patch_size=16, qkv_bias=True,
                                      use_rel_pos=True, global_attn_indexes=(0,), window_size=4, out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // 16, img_size // 16),
                                     input_image_size=(img_size, img_size), mask_in_chans=8),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim,
                                 mlp_dim=64, num_heads=2), transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    sam_path = folder / "sam_vit_tiny_test.pth"
    torch.save(_tiny_sam().state_dict(), sam_path)
    return {
        "detector": _random_yolo("yolo11n.yaml", folder, CLASSES),
        "teacher": _random_yolo("yolo11n-seg.yaml", folder, CLASSES),
        "sam": sam_path,
        "folder": folder,
    }


class EncoderCounter:
    """Counts forward passes of every tiny SAM's image encoder built through the registry."""

    def __init__(self):
        self.calls = 0

    def make_sam(self):
        sam = _tiny_sam()
        sam.image_encoder.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return sam


@pytest.fixture
def tiny_sam(monkeypatch):
    """Registers the tiny architecture for ``sam_vit_tiny*.pth`` (a registry entry, like vit_b)."""
    counter = EncoderCounter()
    monkeypatch.setitem(segmenters.SEGMENTERS, "sam_vit_tiny", None)  # restored after the test
    register_segmenter("sam_vit_tiny", "sam_vit_tiny*.pth",
                       segment_anything_builder(counter.make_sam, "tiny test SAM"), "segment-anything")
    return counter


@pytest.fixture
def box_spy(monkeypatch):
    """Records the boxes each SegmentAnythingSegmenter.predict call receives (the real method still runs)."""
    calls: list[np.ndarray] = []
    original = SegmentAnythingSegmenter.predict

    def predict(self, boxes):
        calls.append(np.asarray(boxes, np.float32).copy())
        return original(self, boxes)

    monkeypatch.setattr(SegmentAnythingSegmenter, "predict", predict)
    return calls


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.delenv("POMONA_ONLINE", raising=False)
    monkeypatch.delenv("POMONA_WEIGHTS", raising=False)


# --- datasets --------------------------------------------------------------------------------------


def _noise_dataset(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        atomic.write_image(root / "images" / f"img{i}.png", rng.integers(0, 255, (H, W, 3), np.uint8))
    return root


def _disc(cx, cy, r) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    return mask.astype(bool)


def _labelled_dataset(root: Path, n: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    """Noise images with hand-drawn apple discs written as renderer-style YOLO-seg labels."""
    _noise_dataset(root, n)
    drawn = {}
    for i in range(n):
        masks = np.stack([_disc(20, 20, 10), _disc(55, 40, 8 + i)][: 1 + (i % 2)])
        drawn[f"img{i}"] = masks
        write_labels(root / "labels" / f"img{i}.txt", Instances.from_masks(masks, image_size=(H, W)))
    return root, drawn


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.txt"))}


def _expected_apple_boxes(detector: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent run of the detector over all classes: (apple boxes, other boxes)."""
    from ultralytics import YOLO

    result = YOLO(str(detector)).predict(cv2.imread(str(image_path)), conf=CONF, imgsz=64, device="cpu", verbose=False)[0]
    cls = result.boxes.cls.numpy().astype(int)
    boxes = result.boxes.xyxy.numpy()
    return boxes[cls == 1], boxes[cls != 1]


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


# --- gt ----------------------------------------------------------------------------------------------


def test_gt_writes_coco_that_matches_the_labels(tmp_path):
    ds, drawn = _labelled_dataset(tmp_path / "ds", n=2)
    before = _snapshot(ds / "labels")
    report = annotate(ds, "gt")
    assert report.images == 2 and report.instances == 3
    assert _snapshot(ds / "labels") == before  # the renderer's exact labels are kept as they are
    coco = read_coco(ds / "annotations.json")
    assert sorted(coco) == ["img0.png", "img1.png"]
    for name, inst in coco.items():
        stem = Path(name).stem
        labels = read_labels(ds / "labels" / f"{stem}.txt", (H, W))
        assert np.array_equal(inst.masks, labels.masks)
        assert np.all(inst.scores == 1.0)
        for got, want in zip(inst.masks, drawn[stem]):  # and they are the discs that were drawn
            assert (got & want).sum() / (got | want).sum() > 0.85
    written = json.loads((ds / "annotations.json").read_text())
    assert written["info"]["labeler"] == "gt"
    assert [a["id"] for a in written["annotations"]] == [1, 2, 3]
    assert [i["id"] for i in written["images"]] == [1, 2]
    assert "3 apples" in str(report)


def test_gt_needs_labels_and_images(tmp_path):
    with pytest.raises(PomonaError, match="no labels"):
        annotate(_noise_dataset(tmp_path / "unlabelled"), "gt")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(PomonaError, match="no images"):
        annotate(tmp_path / "empty", "gt")
    with pytest.raises(PomonaError, match="not found"):
        annotate(tmp_path / "nowhere", "gt")
    with pytest.raises(PomonaError, match="unknown labeler"):
        annotate(_noise_dataset(tmp_path / "x", 1), "magic")


# --- yolo-sam ----------------------------------------------------------------------------------------


def test_yolo_sam_prompts_only_apples_and_encodes_once_per_image(tmp_path, models, tiny_sam, box_spy):
    ds, _ = _labelled_dataset(tmp_path / "ds")
    renderer_labels = _snapshot(ds / "labels")
    report = annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(models["sam"]), conf=CONF,
                      imgsz=64, min_area=1, device="cpu")

    images = sorted((ds / "images").iterdir())
    expected = [_expected_apple_boxes(models["detector"], p) for p in images]
    assert all(len(apples) and len(others) for apples, others in expected), "precondition: both kinds of boxes"
    assert max(len(apples) for apples, _ in expected) >= 2, "precondition: several boxes in one image"
    # the segmenter saw exactly the apple boxes, all of an image's boxes in one call ...
    assert len(box_spy) == len(images)
    for got, (apples, _) in zip(box_spy, expected):
        np.testing.assert_allclose(_sorted_rows(got), _sorted_rows(apples), atol=1e-3)
    # ... and the image encoder ran once per image, however many boxes it had
    assert tiny_sam.calls == len(images)

    # outputs: labels for every image (class 0 = apple), COCO agreeing with them, renderer labels kept
    assert report.instances > 0
    assert _snapshot(ds / "labels_gt") == renderer_labels
    coco = read_coco(ds / "annotations.json")
    for path in images:
        inst = coco[path.name]
        labels = read_labels(ds / "labels" / f"{path.stem}.txt", (H, W))
        assert len(inst) == len(labels) and set(labels.class_ids) <= {0}
        assert not (inst.masks.sum(0) > 1).any()  # exclusive: one apple per pixel
        assert np.all((inst.scores >= CONF) & (inst.scores <= 1))  # the detector's confidences
    info = json.loads((ds / "annotations.json").read_text())["info"]
    assert info["labeler"] == "yolo-sam" and info["detector"] == str(models["detector"])

    # a second automatic run keeps the first preserved ground truth; gt brings it back into labels/
    annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(models["sam"]), conf=CONF, imgsz=64,
             min_score=0.99, device="cpu")
    assert _snapshot(ds / "labels_gt") == renderer_labels
    assert all(p.read_text() == "" for p in (ds / "labels").glob("*.txt"))  # min_score above every confidence
    annotate(ds, "gt")
    assert _snapshot(ds / "labels") == renderer_labels


def test_min_score_and_report(tmp_path, models, tiny_sam):
    ds = _noise_dataset(tmp_path / "ds", 1)
    report = annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(models["sam"]), conf=CONF,
                      imgsz=64, min_area=1, min_score=0.99, device="cpu")
    assert report.instances == 0 and report.dropped_low_score > 0
    assert "--min-score" in str(report)
    assert not (ds / "labels_gt").exists()  # nothing to preserve in an unlabelled dataset


def test_interrupted_run_leaves_previous_labels(tmp_path, models, tiny_sam):
    ds, _ = _labelled_dataset(tmp_path / "ds")
    before = _snapshot(ds / "labels")
    (ds / "images" / "img2.png").write_bytes(b"not a png")
    with pytest.raises(PomonaError, match="img2.png"):
        annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(models["sam"]), conf=CONF, imgsz=64,
                 device="cpu")
    assert _snapshot(ds / "labels") == before
    assert not (ds / "labels_gt").exists() and not (ds / "annotations.json").exists()
    assert sorted(p.name for p in ds.iterdir()) == ["images", "labels"]  # no temp folder left


def test_weights_found_in_pomona_weights_dir(tmp_path, models, tiny_sam, monkeypatch):
    monkeypatch.setenv("POMONA_WEIGHTS", str(models["folder"]))
    monkeypatch.chdir(tmp_path)
    ds = _noise_dataset(tmp_path / "ds", 1)
    report = annotate(ds, "yolo-sam", detector=models["detector"].name, segmenter=models["sam"].name, conf=CONF,
                      imgsz=64, device="cpu")
    assert report.images == 1 and tiny_sam.calls == 1


def test_ultralytics_sam_random_mobile_sam(tmp_path, models, monkeypatch):
    """The Ultralytics SAM path, with a randomly initialised MobileSAM saved under its real name."""
    from ultralytics.models.sam.build import build_mobile_sam
    from ultralytics.models.sam.modules.tiny_encoder import TinyViT

    torch.manual_seed(0)
    weights = tmp_path / "mobile_sam.pt"
    torch.save(build_mobile_sam().state_dict(), weights)
    encodes = []
    original = TinyViT.forward
    monkeypatch.setattr(TinyViT, "forward", lambda self, x: encodes.append(1) or original(self, x))
    ds = _noise_dataset(tmp_path / "ds", 1)
    report = annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(weights), conf=CONF, imgsz=64,
                      min_area=1, device="cpu")
    apples, _ = _expected_apple_boxes(models["detector"], ds / "images" / "img0.png")
    assert len(apples) >= 2 and len(encodes) == 1
    assert report.instances >= 1
    assert len(read_coco(ds / "annotations.json")["img0.png"]) == report.instances


def test_batched_boxes_give_each_box_its_own_mask(tiny_sam, models):
    """One decoder call for all boxes must equal prompting each box alone (row i is box i's mask)."""
    segmenter = segmenters.build_segmenter(models["sam"], "cpu")
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), np.uint8)
    boxes = np.array([[2, 3, 30, 40], [40, 10, 78, 60], [10, 30, 50, 62]], np.float32)
    segmenter.set_image(image)
    batched, ious = segmenter.predict(boxes)
    assert batched.shape == (3, H, W) and ious.shape == (3,)
    assert not all(np.array_equal(batched[0], m) for m in batched[1:])  # precondition: boxes differ
    for i, box in enumerate(boxes):
        alone, _ = segmenter.predict(box[None])
        assert (alone[0] == batched[i]).mean() > 0.999
    assert tiny_sam.calls == 1


# --- model (teacher) ---------------------------------------------------------------------------------


def test_model_labeler_writes_teacher_masks(tmp_path, models):
    from ultralytics import YOLO

    ds = _noise_dataset(tmp_path / "ds", 2)
    report = annotate(ds, "model", detector=str(models["teacher"]), conf=CONF, imgsz=64, min_area=1, device="cpu")
    assert report.instances > 0
    teacher = YOLO(str(models["teacher"]))
    for path in sorted((ds / "images").iterdir()):
        result = teacher.predict(cv2.imread(str(path)), conf=CONF, imgsz=64, device="cpu", verbose=False,
                                 retina_masks=True)[0]
        n_apples = int((result.boxes.cls == 1).sum())
        labels = read_labels(ds / "labels" / f"{path.stem}.txt", (H, W))
        assert 0 < len(labels) <= n_apples  # only apples; clean-up may merge away a fully covered one
        assert len(read_coco(ds / "annotations.json")[path.name]) == len(labels)


def test_model_labeler_refine_encodes_once(tmp_path, models, tiny_sam, box_spy):
    ds = _noise_dataset(tmp_path / "ds", 2)
    annotate(ds, "model", detector=str(models["teacher"]), segmenter=str(models["sam"]), refine=True, conf=CONF,
             imgsz=64, min_area=1, device="cpu")
    assert tiny_sam.calls == len(box_spy) == 2
    assert all(len(b) >= 1 for b in box_spy)


def test_model_labeler_argument_errors(tmp_path, models):
    ds = _noise_dataset(tmp_path / "ds", 1)
    with pytest.raises(PomonaError, match="--detector"):
        annotate(ds, "model")
    with pytest.raises(PomonaError, match="YOLO-seg"):  # a detection model has no masks to teach
        annotate(ds, "model", detector=str(models["detector"]), device="cpu")
    with pytest.raises(PomonaError, match="--refine"):
        annotate(ds, "model", detector=str(models["teacher"]), segmenter="sam_b.pt", device="cpu")


# --- weights and model errors -------------------------------------------------------------------------


def test_missing_weights_fail_fast_with_one_line(tmp_path, models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = _noise_dataset(tmp_path / "ds", 1)
    cases = [
        (dict(), "yolo11x.pt"),  # the defaults, absent here
        (dict(detector="nope.pt"), "nope.pt"),
        (dict(detector=str(models["detector"])), "sam2.1_b.pt"),
        (dict(detector=str(models["detector"]), segmenter="sam_vit_b_01ec64.pth"), "sam_vit_b_01ec64.pth"),
    ]
    for kwargs, name in cases:
        start = time.perf_counter()
        with pytest.raises(PomonaError) as err:
            annotate(ds, "yolo-sam", device="cpu", **kwargs)
        message = str(err.value)
        assert name in message and "POMONA_ONLINE" in message and "\n" not in message
        assert time.perf_counter() - start < 5
    assert not (ds / "labels").exists()


def test_invalid_weights_files(tmp_path, models, tiny_sam):
    ds = _noise_dataset(tmp_path / "ds", 1)
    fake_detector = tmp_path / "fake.pt"
    fake_detector.write_text("not a checkpoint\n")
    with pytest.raises(PomonaError, match="fake.pt is not a valid"):
        annotate(ds, "yolo-sam", detector=str(fake_detector), segmenter=str(models["sam"]), device="cpu")
    for name in ("sam_vit_b_fake.pth", "mobile_sam.pt"):
        fake_sam = tmp_path / name
        fake_sam.write_text("not a checkpoint\n")
        with pytest.raises(PomonaError, match=f"{name} is not a valid") as err:
            annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(fake_sam), device="cpu")
        assert "\n" not in str(err.value)
    wrong_arch = tmp_path / "sam_vit_b_tiny.pth"  # a real state dict, but not ViT-B's
    wrong_arch.write_bytes(models["sam"].read_bytes())
    with pytest.raises(PomonaError, match="not a valid segment-anything vit_b"):
        annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(wrong_arch), device="cpu")
    with pytest.raises(PomonaError, match="unknown segmenter"):
        annotate(ds, "yolo-sam", detector=str(models["detector"]), segmenter=str(models["detector"]), device="cpu")


def test_detector_without_apple_class(tmp_path, models, tiny_sam):
    detector = _random_yolo("yolo11n.yaml", tmp_path, {0: "pear", 1: "leaf"})
    ds = _noise_dataset(tmp_path / "ds", 1)
    with pytest.raises(PomonaError, match="no class named 'apple'"):
        annotate(ds, "yolo-sam", detector=str(detector), segmenter=str(models["sam"]), device="cpu")
