"""``pomona evaluate picking PRED.jsonl DATASET``: how far the runtime's picking targets are from the truth.

Predictions are the JSON Lines of ``pomona run --depth`` (one line per image, each apple with its polygon and
3D fields); the truth is a dataset rendered with ``pomona generate --depth`` (YOLO-seg labels, and in
``manifest.jsonl`` each labelled apple's centre, diameter and visible fraction). Apples are matched one to one
by mask IoU (>= 0.5). For matched apples with 3D fields: the centre error (metres, Euclidean) and the absolute
diameter error (mm), median and 90th percentile, overall and by the true apple's distance and visible
fraction. ``target`` repeats the figures for the apples the issue's targets are about (at most 1 m away, at
least half visible) and says whether the targets are met.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pomona.dataset import json_lines, label_path, list_images, read_labels, read_manifest
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.masks import polygons_to_mask

DISTANCE_BINS_M = (0.0, 0.5, 1.0, 2.0, float("inf"))
VISIBLE_BINS = (0.0, 0.25, 0.5, 0.75, 1.01)
TARGET_MAX_DISTANCE_M = 1.0
TARGET_MIN_VISIBLE = 0.5
TARGET_CENTER_ERROR_M = 0.01  # median
TARGET_DIAMETER_ERROR_MM = 5.0  # median absolute


# --- reading ------------------------------------------------------------------------------------------


def ground_truth(dataset: Path) -> dict[str, dict]:
    """stem -> {"size": (h, w), "intrinsics", "apples_3d" (by label index), "image": path} of a --depth dataset."""
    dataset = Path(dataset)
    records = {Path(r.get("file", "")).stem: r for r in read_manifest(dataset)}
    if not records:
        raise PomonaError(f"{dataset} has no manifest.jsonl: render it with `pomona generate OUT --depth`")
    out = {}
    for image in list_images(dataset):
        rec = records.get(image.stem)
        if rec is None or "apples_3d" not in rec:
            raise PomonaError(f"{dataset}/manifest.jsonl has no 3D ground truth for {image.name} "
                              "(render with `pomona generate OUT --depth`)")
        intr = rec.get("intrinsics") or {}
        if "width" in intr and "height" in intr:
            size = (int(intr["height"]), int(intr["width"]))
        else:
            from pomona.dataset import image_size

            size = image_size(image)
        out[image.stem] = {"size": size, "intrinsics": intr, "apples_3d": {a["label"]: a for a in rec["apples_3d"]},
                           "image": image, "depth": rec.get("depth")}
    return out


def read_predictions(path: Path) -> dict[str, list[dict]]:
    """stem -> the apples of the last line for that image in a ``pomona run`` JSONL."""
    path = Path(path)
    if not path.is_file():
        raise PomonaError(f"predictions not found: {path}")
    out = {}
    for lineno, rec in json_lines(path.read_text(), path):
        if not isinstance(rec, dict) or "apples" not in rec or "image" not in rec:
            raise PomonaError(f"{path}:{lineno}: not a `pomona run` record (needs 'image' and 'apples')")
        out[Path(str(rec["image"])).stem] = rec["apples"]
    return out


def _pred_instances(apples: list[dict], size: tuple[int, int], where: str) -> Instances:
    if not apples:
        return Instances.empty(size)
    if any("polygon" not in a for a in apples):
        raise PomonaError(f"{where}: apples without polygons; run `pomona run` without --no-polygons")
    h, w = size
    masks = np.stack([polygons_to_mask(np.asarray(a["polygon"], np.float32).reshape(-1, 2), h, w) for a in apples])
    return Instances.from_masks(masks, np.array([a.get("score", 1.0) for a in apples]), image_size=size)


# --- matching and figures -----------------------------------------------------------------------------


def match_apples(preds: dict[str, list[dict]], truth: dict[str, dict], iou: float = 0.5) -> tuple[list[dict], int]:
    """One row per true apple (its truth, and the matched prediction's record or None when missed), and the
    number of predictions that matched no apple."""
    from pomona.pipeline.evaluate import match_instances

    rows, false_positives = [], 0
    for stem, gt in truth.items():
        ref = read_labels(label_path(gt["image"]), gt["size"])
        pred_apples = preds.get(stem, [])
        pred = _pred_instances(pred_apples, gt["size"], stem)
        pairs, _ = match_instances(pred, ref, iou) if len(pred) and len(ref) else ([], None)
        matched = {int(j): int(i) for i, j in pairs}
        for j in range(len(ref)):
            true = gt["apples_3d"].get(j)
            if true is None:
                raise PomonaError(f"manifest has no 3D ground truth for apple {j} of {stem}")
            p = pred_apples[matched[j]] if j in matched else None
            rows.append({"image": stem, "label": j, "true": true, "pred": p})
        false_positives += len(pred) - len(matched)
    return rows, false_positives


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "p90": None, "n": 0}
    v = np.asarray(values, np.float64)
    return {"median": round(float(np.median(v)), 5), "p90": round(float(np.percentile(v, 90)), 5), "n": len(v)}


def figures(rows: list[dict]) -> dict:
    """matched / missed / without 3D, and the centre and diameter errors of the matched apples with 3D."""
    centre, diam, signed = [], [], []
    matched = no_3d = 0
    for r in rows:
        p = r["pred"]
        if p is None:
            continue
        matched += 1
        if p.get("center_m") is None or p.get("diameter_mm") is None:
            no_3d += 1
            continue
        centre.append(float(np.linalg.norm(np.subtract(p["center_m"], r["true"]["center_m"]))))
        diam.append(abs(p["diameter_mm"] - r["true"]["diameter_mm"]))
        signed.append(p["diameter_mm"] - r["true"]["diameter_mm"])
    return {"apples": len(rows), "matched": matched, "missed": len(rows) - matched, "matched_without_3d": no_3d,
            "center_error_m": _stats(centre), "diameter_error_mm": _stats(diam),
            "diameter_bias_mm": None if not signed else round(float(np.median(signed)), 3)}


def _distance(row: dict) -> float:
    return float(np.linalg.norm(row["true"]["center_m"]))


def _binned(rows: list[dict], key, edges: tuple[float, ...], fmt) -> dict:
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[fmt(lo, hi)] = figures([r for r in rows if lo <= key(r) < hi])
    return out


def _metres(lo: float, hi: float) -> str:
    return f">= {lo:g} m" if hi == float("inf") else f"{lo:g}-{hi:g} m"


def _percent(lo: float, hi: float) -> str:
    return f"{100 * lo:.0f}-{min(100 * hi, 100):.0f}%"


def evaluate_picking(pred_jsonl: Path, dataset: Path, iou: float = 0.5) -> dict:
    """The picking table: overall, by distance, by visible fraction, and ``target`` (<= 1 m, >= 50% visible)."""
    truth = ground_truth(Path(dataset))
    preds = read_predictions(Path(pred_jsonl))
    unknown = sorted(set(preds) - set(truth))
    if unknown and not set(preds) & set(truth):
        raise PomonaError(f"none of the images in {pred_jsonl} are in {dataset} (first: {unknown[0]})")
    rows, false_positives = match_apples(preds, truth, iou)
    result = figures(rows)
    result["images"] = len(truth)
    result["false_positives"] = false_positives
    result["iou_threshold"] = iou
    result["by_distance"] = _binned(rows, _distance, DISTANCE_BINS_M, _metres)
    result["by_visible_fraction"] = _binned(rows, lambda r: r["true"]["visible_fraction"], VISIBLE_BINS, _percent)
    target_rows = [r for r in rows if _distance(r) <= TARGET_MAX_DISTANCE_M
                   and r["true"]["visible_fraction"] >= TARGET_MIN_VISIBLE]
    target = figures(target_rows)
    target["by_distance"] = _binned(target_rows, _distance, DISTANCE_BINS_M[:3], _metres)
    target["by_visible_fraction"] = _binned(target_rows, lambda r: r["true"]["visible_fraction"], VISIBLE_BINS[2:],
                                            _percent)
    c, d = target["center_error_m"]["median"], target["diameter_error_mm"]["median"]
    target["goal"] = {"max_distance_m": TARGET_MAX_DISTANCE_M, "min_visible_fraction": TARGET_MIN_VISIBLE,
                      "center_error_m_median": TARGET_CENTER_ERROR_M, "diameter_error_mm_median": TARGET_DIAMETER_ERROR_MM}
    target["met"] = bool(c is not None and d is not None and c <= TARGET_CENTER_ERROR_M and d <= TARGET_DIAMETER_ERROR_MM)
    result["target"] = target
    return result


# --- predictions from the true masks (the error of depth noise alone) ---------------------------------


def targets_from_true_masks(dataset: Path, out_jsonl: Path) -> Path:
    """Picking targets measured from each image's true masks and its depth, written as ``pomona run`` would:
    what the 3D step alone gets wrong, with segmentation taken out of the comparison."""
    import cv2

    from pomona import atomic
    from pomona.edge.depth import check_depth, parse_intrinsics
    from pomona.edge.records import frame_record
    from pomona.picking import measure

    dataset = Path(dataset)
    lines = []
    for i, (stem, gt) in enumerate(sorted(ground_truth(dataset).items())):
        inst = read_labels(label_path(gt["image"]), gt["size"])
        depth_path = dataset / (gt["depth"] or f"depth/{stem}.png")
        depth = check_depth(cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED), str(depth_path))
        inst.picking = measure(inst, depth, parse_intrinsics(gt["intrinsics"], f"{dataset}/manifest.jsonl"))
        lines.append(json.dumps(frame_record(i, float(i), inst, gt["image"].name)))
    return atomic.write_text(out_jsonl, "\n".join(lines) + "\n")
