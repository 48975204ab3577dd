"""Stage: evaluate label quality (labeller vs reference) and model accuracy (on a data.yaml split)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from pomona import atomic
from pomona.dataset import IMAGE_SUFFIXES, image_size, read_coco, read_data_yaml, read_labels
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.masks import mask_iou

# --- label quality ----------------------------------------------------------------------------------


def _images_beside(labels_dir: Path) -> dict[str, Path]:
    """stem -> image path from the ``images/`` folder next to a labels folder."""
    images = labels_dir.parent / "images"
    if not images.is_dir():
        return {}
    return {p.stem: p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}


def load_label_set(source: Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, Instances]:
    """stem -> Instances from a labels folder, a dataset folder (its labels/) or a COCO json."""
    source = Path(source)
    if source.is_file() and source.suffix == ".json":
        return {Path(k).stem: v for k, v in read_coco(source).items()}
    if not source.is_dir():
        raise PomonaError(f"labels not found: {source} (give a labels folder, a dataset folder or a COCO json)")
    if (source / "labels").is_dir():
        source = source / "labels"
    files = sorted(source.glob("*.txt"))
    if not files and not any(source.iterdir()):
        raise PomonaError(f"empty labels folder: {source}")
    images = _images_beside(source)
    out = {}
    for f in files:
        size = (sizes or {}).get(f.stem)
        if size is None:
            if f.stem not in images:
                raise PomonaError(f"no image for {f.name} (looked in {source.parent / 'images'}); image sizes are needed")
            size = image_size(images[f.stem])
        out[f.stem] = read_labels(f, size)
    # images without a label file hold no apples
    for stem, img in images.items():
        if stem not in out:
            out[stem] = Instances.empty(sizes[stem] if sizes and stem in sizes else image_size(img))
    if not out:
        raise PomonaError(f"no labels in {source}")
    return out


def match_instances(pred: Instances, ref: Instances, iou_threshold: float = 0.5):
    """One-to-one matching maximising total mask IoU; returns (pairs, iou matrix). Pairs need IoU >= threshold."""
    from scipy.optimize import linear_sum_assignment

    ious = mask_iou(pred.masks, ref.masks)
    if ious.size == 0:
        return [], ious
    rows, cols = linear_sum_assignment(-ious)
    return [(r, c) for r, c in zip(rows, cols) if ious[r, c] >= iou_threshold], ious


def evaluate_labels(pred_dir: Path, ref_dir: Path, iou: float = 0.5) -> dict:
    """The paper's label-quality table: mean Dice and IoU of matched instances, P, R, F1 at IoU >= ``iou``."""
    ref = load_label_set(ref_dir)
    pred = load_label_set(pred_dir, {k: v.image_size for k, v in ref.items()})
    stems = sorted(set(ref) | set(pred))
    tp = n_pred = n_ref = 0
    dices, ious_matched = [], []
    for stem in stems:
        r = ref.get(stem)
        p = pred.get(stem)
        size = (r or p).image_size
        r = r if r is not None else Instances.empty(size)
        p = p if p is not None else Instances.empty(size)
        if p.image_size != r.image_size:
            raise PomonaError(f"{stem}: image sizes differ between the two label sets ({p.image_size} vs {r.image_size})")
        pairs, ious = match_instances(p, r, iou)
        n_pred += len(p)
        n_ref += len(r)
        tp += len(pairs)
        for i, j in pairs:
            v = float(ious[i, j])
            ious_matched.append(v)
            dices.append(2 * v / (1 + v))  # for one pair, Dice = 2|A∩B|/(|A|+|B|) = 2 IoU / (1 + IoU)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "images": len(stems), "pred_instances": n_pred, "ref_instances": n_ref, "matched": tp, "iou_threshold": iou,
        "dice": float(np.mean(dices)) if dices else 0.0, "iou": float(np.mean(ious_matched)) if ious_matched else 0.0,
        "precision": precision, "recall": recall, "f1": f1,
    }


# --- model accuracy ---------------------------------------------------------------------------------


def evaluate_model(weights: Path | str, data_yaml: Path, split: str = "val", imgsz: int | None = None,
                   out: Path | None = None, conf_grid: float = 0.25, grid_images: int = 8, batch: int = 8) -> dict:
    """Box and mask P, R, mAP50, mAP50-95 (Ultralytics' COCO-style metrics) + metrics.json + a picture grid
    of ``grid_images`` predictions (none when 0).

    ``weights`` is a file or a shipped model's name; ``imgsz`` None means the model's own input size. On a
    dataset labelled with boxes only (many public orchard sets) the result has box metrics, ``mask`` None
    and a ``note`` saying that mask metrics need polygons.
    """
    from pomona.models import is_shipped_name, resolve_model
    from pomona.pipeline.weights import load_yolo, model_imgsz

    if split not in ("val", "test", "train"):
        raise PomonaError(f"--split must be val or test, got {split!r}")
    spec = read_data_yaml(data_yaml)
    images = spec.images(split)
    label_kind = spec.label_kind(split)
    shipped = is_shipped_name(weights)
    weights = resolve_model(weights, prefer="pt")
    model = load_yolo(weights, "model", task="segment")
    imgsz = int(imgsz or model_imgsz(model, weights))
    out = out or _default_out(weights, shipped, spec.yaml_path, split)
    t0 = time.perf_counter()
    metrics = _validate(model, spec.yaml_path, split, imgsz, batch, label_kind)
    result = {
        "weights": str(weights), "data": str(spec.yaml_path), "split": split, "imgsz": imgsz, "images": len(images),
        "labels": label_kind, "box": _summary(metrics.box),
        "mask": _summary(metrics.seg) if label_kind == "polygons" else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if label_kind != "polygons":
        result["note"] = f"{spec.yaml_path.name} has box labels only: box metrics only, mask metrics need polygons"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "metrics.json", result)
    result["metrics_json"] = str(out / "metrics.json")
    if grid_images > 0:  # 0: numbers only (e.g. one evaluation per epoch checkpoint)
        result["grid"] = str(_write_grid(model, images, imgsz, conf_grid, grid_images, out))
    return result


def _default_out(weights: Path, shipped: bool, yaml_path: Path, split: str) -> Path:
    """runs/eval-MODEL-DATA-SPLIT for a shipped model, else eval-DATA-SPLIT in the weights' run folder."""
    run_dir = Path("runs") if shipped else Path(weights).resolve().parent.parent
    return run_dir / f"eval-{weights.stem + '-' if shipped else ''}{yaml_path.parent.name}-{split}"


def _validate(model, yaml_path: Path, split: str, imgsz: int, batch: int, label_kind: str):
    """Ultralytics' validator on the split (its plots and files in a scratch folder); its metrics object."""
    import tempfile

    from pomona.pipeline.devices import normalize_device

    with tempfile.TemporaryDirectory() as scratch:
        # A box-only dataset cannot feed Ultralytics' segment validator (it needs a polygon per box), so
        # the same segmentation model is scored as a detector there: its boxes are the segmenter's boxes.
        val_model = model if label_kind == "polygons" else _as_detector(model)
        return val_model.val(data=str(yaml_path), split=split, imgsz=imgsz, batch=batch, plots=False,
                             project=scratch, name="val", verbose=False, device=normalize_device(None), workers=0)


def _write_grid(model, images: list, imgsz: int, conf: float, count: int, out: Path) -> Path:
    """predictions.jpg: ``count`` images spread over the split (not its first, often alike, files)."""
    step = max(1, len(images) // count)
    grid = prediction_grid(model, images[::step][:count], imgsz, conf)
    atomic.write_image(out / "predictions.jpg", grid, quality=90)
    return out / "predictions.jpg"


def _as_detector(model):
    """A validator that scores a segmentation model's boxes alone (for datasets labelled with boxes only).

    Ultralytics' detection validator reads box labels, but given a segment head's output it would take the
    32 mask coefficients for 32 more classes; the subclass tells NMS the true class count, and the
    coefficients ride along unused.
    """
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import nms

    class BoxOnlyValidator(DetectionValidator):
        def postprocess(self, preds):
            while isinstance(preds, (list, tuple)):  # (boxes + coefficients, protos): keep the first
                preds = preds[0]
            outputs = nms.non_max_suppression(preds, self.args.conf, self.args.iou, nc=self.nc, multi_label=True,
                                              agnostic=self.args.single_cls or self.args.agnostic_nms,
                                              max_det=self.args.max_det, end2end=self.end2end)
            return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in outputs]

    class BoxScorer:
        def val(self, **kwargs):
            return model.val(validator=BoxOnlyValidator, task="detect", **kwargs)

    return BoxScorer()


def predictions_with_labels(weights: Path, data_yaml: Path, split: str = "val", imgsz: int = 320, conf: float = 0.25,
                            desc: str = "predict"):
    """Yield (image path, image, predicted Instances, labelled Instances) for every image of a split: the
    one-by-one view that error analyses need beside Ultralytics' aggregate metrics."""
    from tqdm import tqdm

    from pomona.dataset import read_image
    from pomona.pipeline.weights import load_yolo

    model = load_yolo(weights, "model", task="segment")
    images = read_data_yaml(data_yaml).images(split)
    refs = load_label_set(images[0].parent.parent / "labels")
    for path in tqdm(images, desc=desc, unit="img"):
        image = read_image(path)
        pred = Instances.from_ultralytics(model.predict(image, imgsz=imgsz, conf=conf, verbose=False)[0])
        yield path, image, pred, refs.get(path.stem, Instances.empty(image.shape[:2]))


def _summary(m) -> dict:
    return {"precision": float(m.mp), "recall": float(m.mr), "map50": float(m.map50), "map50_95": float(m.map)}


def prediction_grid(model, images: list[Path], imgsz: int, conf: float, tile: int = 384, cols: int = 4) -> np.ndarray:
    """Predicted masks (filled, coloured) over ground-truth outlines (white) for a few images."""
    import supervision as sv

    from pomona.dataset import iter_labelled

    tiles = []
    mask_annotator = sv.MaskAnnotator(opacity=0.45)
    for path, image, gt in iter_labelled(images):
        result = model.predict(image, imgsz=imgsz, conf=conf, verbose=False, retina_masks=True)[0]
        pred = Instances.from_ultralytics(result)
        canvas = image.copy()
        if len(pred):
            canvas = mask_annotator.annotate(canvas, pred.to_supervision())
        for m in gt.masks:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, (255, 255, 255), max(1, image.shape[1] // 400))
        scale = tile / max(canvas.shape[:2])
        canvas = cv2.resize(canvas, (int(canvas.shape[1] * scale), int(canvas.shape[0] * scale)))
        canvas = cv2.copyMakeBorder(canvas, 0, tile - canvas.shape[0], 0, tile - canvas.shape[1], cv2.BORDER_CONSTANT)
        cv2.putText(canvas, f"{path.name}: pred {len(pred)} / gt {len(gt)}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(canvas)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)
