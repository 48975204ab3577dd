"""``pomona annotate``: label a dataset's apples automatically.

Writes ``DATASET/labels/*.txt`` (YOLO-seg) and ``DATASET/annotations.json`` (COCO, RLE masks,
per-instance ``score``). Labellers:

- ``gt``: the renderer's exact masks already in ``labels/`` (from ``labels_gt/`` when an automatic
  labeller has replaced them); labels are kept as they are, only ``annotations.json`` is written.
- ``yolo-sam``: the paper's method, corrected: YOLO keeps only the class named ``apple``, SAM
  segments all boxes of an image from one image encoding (see :mod:`pomona.pipeline.labelers`).
- ``model``: a trained YOLO-seg model is the teacher (optionally refined by SAM).

Automatic labels pass the shared clean-up (fragments under ``min_area`` dropped, one apple per
pixel, optional hole filling) and then ``min_score``. The first time an automatic labeller runs
on a dataset whose ``labels/`` came from the renderer (or a person), those are moved to
``labels_gt/`` so ``pomona evaluate labels DATASET/labels DATASET/labels_gt`` measures the
labeller. New labels are written to a temporary folder and swapped in at the end: an interrupted
run leaves the previous labels untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pomona import atomic
from pomona.dataset import format_labels, list_images, read_image, read_labels, to_coco
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.pipeline.devices import normalize_device
from pomona.pipeline.labelers import (
    APPLE,
    APPLE_ID,
    DEFAULT_DETECTOR,
    DetectorSamLabeler,
    TeacherLabeler,
    apple_class_id,
    find_yolo_weights,
    load_yolo,
)
from pomona.pipeline.segmenters import DEFAULT_SEGMENTER, build_segmenter, resolve_segmenter

LABELERS = ("gt", "yolo-sam", "model")
COCO_FILE = "annotations.json"


@dataclass
class AnnotateReport:
    dataset: Path
    labeler: str
    images: int
    instances: int
    seconds: float
    labels_dir: Path
    coco_path: Path
    dropped_low_score: int = 0
    gt_dir: Path | None = None

    def __str__(self) -> str:
        per_image = self.seconds / max(self.images, 1)
        lines = [f"annotated {self.images} images of {self.dataset} with '{self.labeler}': {self.instances} apples "
                 f"in {self.seconds:.1f} s ({per_image:.2f} s/image)"]
        if self.dropped_low_score:
            lines.append(f"dropped {self.dropped_low_score} labels under --min-score")
        lines.append(f"labels: {self.labels_dir}  COCO: {self.coco_path}")
        if self.gt_dir is not None:
            lines.append(f"ground truth kept in {self.gt_dir} (compare: pomona evaluate labels {self.labels_dir} {self.gt_dir})")
        return "\n".join(lines)


def annotate(dataset: Path, labeler: str = "gt", detector: str | None = None, segmenter: str | None = None,
             conf: float = 0.25, min_score: float = 0.0, min_area: int = 30, fill_holes: bool = False,
             refine: bool = False, imgsz: int = 640, device: str | None = None, ray: str | None = None):
    """Label every image of ``dataset`` (a folder with ``images/``) with ``labeler``; see the module doc.
    ``ray``: a Ray address; the model-backed labellers then run as actors on that cluster
    (:mod:`pomona.pipeline.cluster.label`), ``gt`` runs here (it only reads the renderer's labels)."""
    start = time.perf_counter()
    root = _dataset_root(Path(dataset))
    images = list_images(root / "images")
    if labeler not in LABELERS:
        raise PomonaError(f"unknown labeler '{labeler}' (choose from: {', '.join(LABELERS)})")
    if labeler == "gt":
        if detector or segmenter or refine:
            raise PomonaError("--detector, --segmenter and --refine do not apply to --labeler gt")
        return _annotate_gt(root, images, start)

    settings = dict(labeler=labeler, conf=conf, min_score=min_score, min_area=min_area, fill_holes=fill_holes,
                    imgsz=imgsz)
    if ray is not None:
        from pomona.pipeline.cluster.label import annotate_ray

        models = check_labeler(labeler, detector, segmenter, refine, settings)
        return annotate_ray(root, [p.name for p in images], settings, models, conf, imgsz, device, ray)
    label_image = _build_labeler(labeler, detector, segmenter, conf, refine, imgsz, device, settings)
    labels_dir, gt_dir = root / "labels", root / "labels_gt"
    preserve_gt = not gt_dir.exists() and _holds_labels(labels_dir) and not _written_by_labeller(root)
    coco, dropped = _CocoBuilder(), 0
    with atomic.atomic_dir(labels_dir) as tmp:
        for path in tqdm(images, desc=f"annotate ({labeler})", unit="img"):
            inst, low = label_one(label_image, read_image(path), min_area, fill_holes, min_score)
            dropped += low
            (tmp / f"{path.stem}.txt").write_text(format_labels(inst))
            coco.add(path.name, inst)
        if preserve_gt:  # the renderer's exact labels become the reference for `evaluate labels`
            os.replace(labels_dir, gt_dir)
        # before the swap: automatic labels in labels/ must never sit beside an annotations.json
        # that does not say so, or the next run would take them for ground truth to preserve
        coco_path = coco.write(root / COCO_FILE, _coco_info(settings))
    return AnnotateReport(root, labeler, len(images), coco.instances, time.perf_counter() - start,
                          labels_dir, coco_path, dropped, gt_dir if gt_dir.exists() else None)


def label_one(label_image, image, min_area: int, fill_holes: bool, min_score: float) -> tuple[Instances, int]:
    """One image's labels after the shared clean-up and --min-score, and how many fell under it; the same for a
    run here and for the actors of a Ray run."""
    inst = label_image(image).with_masks_cleaned(min_area, fill=fill_holes, exclusive=True)
    keep = inst.scores >= min_score
    return inst[keep.nonzero()[0]], int((~keep).sum())


# --- labellers ---------------------------------------------------------------------------------------


def _build_labeler(labeler: str, detector: str | None, segmenter: str | None, conf: float, refine: bool, imgsz: int,
                   device: str | None, settings: dict):
    """Load the models and return image -> Instances. Every weights file is checked before any
    slow import or model load, so a missing one fails in seconds."""
    models = check_labeler(labeler, detector, segmenter, refine, settings)
    return load_labeler(labeler, *models, conf, imgsz, normalize_device(device))


def check_labeler(labeler: str, detector: str | None, segmenter: str | None, refine: bool,
                  settings: dict) -> tuple[str, str, str | None]:
    """(detector, its role, segmenter or None) after checking the flags and that every weights file is there."""
    if labeler == "yolo-sam":
        if refine:
            raise PomonaError("--refine applies to --labeler model (yolo-sam always segments with SAM)")
        detector, what = detector or DEFAULT_DETECTOR, "detector"
        segmenter = segmenter or DEFAULT_SEGMENTER
    else:
        if not detector:
            raise PomonaError("--labeler model needs --detector RUN/weights/best.pt (the trained YOLO-seg teacher)")
        if segmenter and not refine:
            raise PomonaError("--segmenter is used by --labeler model only with --refine")
        what = "teacher"
        segmenter = (segmenter or DEFAULT_SEGMENTER) if refine else None
    settings.update(detector=str(detector), segmenter=None if segmenter is None else str(segmenter))
    find_yolo_weights(detector, what)
    if segmenter is not None:
        resolve_segmenter(segmenter)
    return str(detector), what, None if segmenter is None else str(segmenter)


def load_labeler(labeler: str, detector: str, what: str, segmenter: str | None, conf: float, imgsz: int, device: str):
    """Load the models (checked by :func:`check_labeler`) and return image -> Instances."""
    model = load_yolo(detector, what)
    source = f"{what} '{detector}'"
    apple_class_id(model, source)  # before the slow SAM load
    sam = None if segmenter is None else build_segmenter(segmenter, device)
    if labeler == "yolo-sam":
        return DetectorSamLabeler(model, sam, source, conf, imgsz, device)
    return TeacherLabeler(model, source, conf, imgsz, device, sam)


def _annotate_gt(root: Path, images: list[Path], start: float) -> AnnotateReport:
    """COCO from the renderer's labels; restores them into labels/ if an automatic labeller replaced them."""
    labels_dir, gt_dir = root / "labels", root / "labels_gt"
    source = gt_dir if gt_dir.is_dir() else labels_dir
    if not any((source / f"{p.stem}.txt").is_file() for p in images):
        raise PomonaError(f"no labels for the images of {root} in {source}; --labeler gt needs the renderer's labels "
                          f"(pomona generate), use --labeler yolo-sam or model for unlabelled images")
    coco = _CocoBuilder()
    for path in tqdm(images, desc="annotate (gt)", unit="img"):
        coco.add(path.name, read_labels(source / f"{path.stem}.txt", read_image(path).shape[:2]))
    if source == gt_dir:
        with atomic.atomic_dir(labels_dir) as tmp:
            for path in gt_dir.glob("*.txt"):
                shutil.copy2(path, tmp / path.name)
    coco_path = coco.write(root / COCO_FILE, _coco_info({"labeler": "gt", "source": source.name}))
    return AnnotateReport(root, "gt", len(images), coco.instances, time.perf_counter() - start,
                          labels_dir, coco_path, 0, gt_dir if gt_dir.exists() else None)


# --- outputs ----------------------------------------------------------------------------------------


def coco_part(file_name: str, instances: Instances) -> dict:
    return to_coco([(file_name, instances)], {APPLE_ID: APPLE})


class _CocoBuilder:
    """COCO built image by image with pomona.dataset.to_coco, masks RLE-compressed as they come:
    keeping every image's full-resolution masks until the end would take gigabytes."""

    def __init__(self):
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    @property
    def instances(self) -> int:
        return len(self.annotations)

    def add(self, file_name: str, instances: Instances) -> None:
        self.add_part(coco_part(file_name, instances))

    def add_part(self, part: dict) -> None:
        """One image's :func:`coco_part` (made here, or by a Ray actor): ids follow the order of the calls."""
        image_id, first_ann_id = len(self.images) + 1, len(self.annotations) + 1
        self.images += [{**image, "id": image_id} for image in part["images"]]
        self.annotations += [{**ann, "id": first_ann_id + i, "image_id": image_id}
                             for i, ann in enumerate(part["annotations"])]

    def write(self, path: Path, info: dict) -> Path:
        coco = {**to_coco([], {APPLE_ID: APPLE}, info), "images": self.images, "annotations": self.annotations}
        return atomic.write_json(path, coco, indent=None)


# --- dataset helpers ---------------------------------------------------------------------------------


def _dataset_root(dataset: Path) -> Path:
    if dataset.name == "images" and not (dataset / "images").is_dir():
        dataset = dataset.parent
    if not dataset.exists():
        raise PomonaError(f"dataset folder not found: {dataset}")
    if not (dataset / "images").is_dir():
        raise PomonaError(f"{dataset} is not a dataset folder: it has no images/ subfolder")
    return dataset


def _holds_labels(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.txt"))


def _written_by_labeller(root: Path) -> bool:
    """True when labels/ came from an automatic labeller (recorded in annotations.json), so they are
    not ground truth to preserve."""
    path = root / COCO_FILE
    if not path.is_file():
        return False
    try:
        info = json.loads(path.read_text()).get("info", {})
    except (json.JSONDecodeError, AttributeError):
        return False
    return info.get("labeler", "gt") != "gt"


def _coco_info(settings: dict) -> dict:
    return {"description": "pomona annotations", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), **settings}
