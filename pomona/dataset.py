"""Dataset I/O in the Ultralytics layout users already know.

A pomona dataset is a folder::

    DATASET/images/*.jpg        the pictures
    DATASET/labels/*.txt        YOLO-seg: one line per apple, ``class x1 y1 x2 y2 ...`` normalised
    DATASET/manifest.jsonl      one JSON object per image: how it was made (prompt, seed, backend, ...)
    DATASET/annotations.json    COCO (RLE masks, per-instance scores), written by ``pomona annotate``
    DATASET/{train,val,test}.txt + data.yaml, written by ``pomona split``

Labels are read into :class:`~pomona.instances.Instances` at image resolution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml

from pomona import atomic
from pomona.errors import PomonaError, first_line
from pomona.instances import Instances
from pomona.masks import mask_to_rle, polygons_to_mask, rle_to_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_NAMES = {0: "apple"}


# --- images -----------------------------------------------------------------------------------------


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files of ``folder`` (or of ``folder/images`` for a dataset folder)."""
    folder = Path(folder)
    if not folder.exists():
        raise PomonaError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise PomonaError(f"not a folder: {folder}")
    if (folder / "images").is_dir():
        folder = folder / "images"
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise PomonaError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 image; a one-line :class:`PomonaError` for missing, empty or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise PomonaError(f"image not found: {path}")
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise PomonaError(f"empty image file: {path}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise PomonaError(f"not a readable image: {path}")
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    h, w = read_image(path).shape[:2]
    return h, w


# --- YOLO-seg labels --------------------------------------------------------------------------------


def label_path(image_path: str | Path) -> Path:
    """``.../images/x.jpg`` -> ``.../labels/x.txt`` (Ultralytics' rule: the last ``images`` folder)."""
    parts = list(Path(image_path).with_suffix(".txt").parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise PomonaError(f"image is not inside an 'images' folder, cannot place its label: {image_path}")


def parse_labels(text: str, image_size: tuple[int, int], source: str = "labels") -> Instances:
    """Parse YOLO-seg text (box-only lines become rectangles) into Instances at ``image_size``."""
    h, w = image_size
    masks, classes = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(float(fields[0]))
            coords = np.array(fields[1:], np.float32)
        except ValueError:
            raise PomonaError(f"{source}:{lineno}: not a YOLO label line: {line[:60]!r}") from None
        if len(coords) == 4:  # detection label: cx cy bw bh
            cx, cy, bw, bh = coords
            coords = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, cx - bw / 2, cy + bh / 2])
        if len(coords) < 6 or len(coords) % 2:
            raise PomonaError(f"{source}:{lineno}: a polygon needs an even number (>= 6) of coordinates")
        poly = coords.reshape(-1, 2) * np.array([w, h], np.float32)
        masks.append(polygons_to_mask(poly, h, w))
        classes.append(cls)
    if not masks:
        return Instances.empty(image_size)
    return Instances.from_masks(np.stack(masks), class_ids=np.array(classes), image_size=image_size)


def read_labels(path: str | Path, image_size: tuple[int, int]) -> Instances:
    """Labels of one image; a missing file means no apples (Ultralytics' convention for backgrounds)."""
    path = Path(path)
    if not path.exists():
        return Instances.empty(image_size)
    return parse_labels(path.read_text(), image_size, str(path))


def format_labels(instances: Instances, decimals: int = 5) -> str:
    """YOLO-seg text: one (bridged) normalised polygon per instance; empty masks are skipped."""
    h, w = instances.image_size
    lines = []
    for cls, poly in zip(instances.class_ids, instances.polygons()):
        if len(poly) < 3:
            continue
        norm = np.clip(poly / np.array([w, h], np.float32), 0.0, 1.0)
        lines.append(f"{int(cls)} " + " ".join(f"{v:.{decimals}f}" for v in norm.reshape(-1)))
    return "\n".join(lines) + ("\n" if lines else "")


def write_labels(path: str | Path, instances: Instances) -> Path:
    return atomic.write_text(path, format_labels(instances))


def iter_labelled(images: list[Path]) -> Iterator[tuple[Path, np.ndarray, Instances]]:
    """(image path, image, labels) for each image."""
    for path in images:
        image = read_image(path)
        yield path, image, read_labels(label_path(path), image.shape[:2])


# --- data.yaml --------------------------------------------------------------------------------------


@dataclass
class DataSpec:
    """A resolved data.yaml: image lists per split and class names."""

    yaml_path: Path
    root: Path
    names: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_NAMES))
    splits: dict[str, list[Path]] = field(default_factory=dict)

    def images(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise PomonaError(f"{self.yaml_path} has no '{split}' split (has: {', '.join(self.splits) or 'none'})")
        if not self.splits[split]:
            raise PomonaError(f"split '{split}' of {self.yaml_path} holds no images")
        return self.splits[split]

    def label_kind(self, split: str) -> str:
        """``polygons`` when every label line of the split is a polygon, ``boxes`` when any is a box only
        (``class cx cy w h``, as in many public orchard datasets); a split without labels counts as polygons."""
        for image in self.images(split):
            path = label_path(image)
            if path.is_file() and any(len(line.split()) == 5 for line in path.read_text().splitlines()):
                return "boxes"
        return "polygons"


def _resolve_entry(entry: str, root: Path, yaml_path: Path) -> list[Path]:
    p = Path(entry)
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        return list_images(p)
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                q = Path(line)
                out.append(q if q.is_absolute() else (p.parent / q).resolve())
        return out
    raise PomonaError(f"{yaml_path}: '{entry}' points nowhere ({p} does not exist)")


def read_data_yaml(path: str | Path) -> DataSpec:
    path = Path(path)
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    if not path.is_file():
        raise PomonaError(f"data.yaml not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise PomonaError(f"{path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise PomonaError(f"{path}: expected a mapping with train/val/names keys")
    path = path.resolve()
    root = Path(data["path"]) if data.get("path") else path.parent
    root = root if root.is_absolute() else (path.parent / root).resolve()
    names = data.get("names") or DEFAULT_NAMES
    if isinstance(names, list):
        names = dict(enumerate(names))
    spec = DataSpec(path, root, {int(k): str(v) for k, v in names.items()})
    for split in ("train", "val", "test"):
        entry = data.get(split)
        if not entry:
            continue
        entries = entry if isinstance(entry, list) else [entry]
        spec.splits[split] = [img for e in entries for img in _resolve_entry(str(e), root, path)]
    return spec


def write_data_yaml(path: str | Path, splits: dict[str, str | list[str]], names: dict[int, str] | None = None,
                    root: str | Path | None = None, comment: str = "") -> Path:
    data: dict = {}
    if root is not None:
        data["path"] = str(root)
    data.update({k: v for k, v in splits.items() if v})
    data["names"] = dict(names or DEFAULT_NAMES)
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(data, sort_keys=False)
    return atomic.write_text(path, text)


# --- manifest ---------------------------------------------------------------------------------------

MANIFEST = "manifest.jsonl"


def json_lines(text: str, where: str | Path, bad: str = "not a JSON line") -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of each non-blank line of a JSON Lines text; a line that is not JSON
    ends the read with one line naming ``where`` and the line number."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                raise PomonaError(f"{where}:{lineno}: {bad}") from None


def read_manifest(dataset: str | Path) -> list[dict]:
    path = Path(dataset) / MANIFEST
    if not path.exists():
        return []
    return [rec for _, rec in json_lines(path.read_text(), path)]


def write_manifest(dataset: str | Path, records: list[dict]) -> Path:
    return atomic.write_text(Path(dataset) / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


# --- COCO -------------------------------------------------------------------------------------------


def to_coco(entries: list[tuple[str, Instances]], names: dict[int, str] | None = None, info: dict | None = None) -> dict:
    """COCO instance-segmentation dict with RLE masks and per-instance ``score``.

    ``entries``: (file name, Instances at that image's size). Category ids are class id + 1.
    """
    names = names or DEFAULT_NAMES
    coco = {
        "info": info or {"description": "pomona annotations"},
        "images": [],
        "annotations": [],
        "categories": [{"id": int(k) + 1, "name": v, "supercategory": "fruit"} for k, v in sorted(names.items())],
    }
    ann_id = 1
    for image_id, (file_name, inst) in enumerate(entries, 1):
        h, w = inst.image_size
        coco["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        masks = inst.masks if inst.masks is not None else [None] * len(inst)
        for box, score, cls, mask in zip(inst.boxes, inst.scores, inst.class_ids, masks):
            x0, y0, x1, y1 = (float(v) for v in box)
            ann = {"id": ann_id, "image_id": image_id, "category_id": int(cls) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": float(mask.sum()) if mask is not None else (x1 - x0) * (y1 - y0), "iscrowd": 0,
                   "score": round(float(score), 4)}
            if mask is not None:
                ann["segmentation"] = mask_to_rle(mask)
            coco["annotations"].append(ann)
            ann_id += 1
    return coco


def write_coco(path: str | Path, entries: list[tuple[str, Instances]], names: dict[int, str] | None = None,
               info: dict | None = None) -> Path:
    return atomic.write_json(path, to_coco(entries, names, info), indent=None)


def read_coco(path: str | Path) -> dict[str, Instances]:
    """file name -> Instances (masks decoded from RLE)."""
    path = Path(path)
    if not path.is_file():
        raise PomonaError(f"COCO file not found: {path}")
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PomonaError(f"{path}: not valid JSON") from None
    by_image: dict[int, list[dict]] = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = {}
    for img in coco.get("images", []):
        size = (img["height"], img["width"])
        anns = by_image.get(img["id"], [])
        if not anns:
            out[img["file_name"]] = Instances.empty(size)
            continue
        masks = np.stack([rle_to_mask(a["segmentation"]) for a in anns])
        inst = Instances.from_masks(masks, np.array([a.get("score", 1.0) for a in anns]),
                                    np.array([a["category_id"] - 1 for a in anns]), size)
        out[img["file_name"]] = inst
    return out
