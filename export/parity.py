"""Parity check: does the exported model (run by the edge runtime) find the same apples as its source?

The reference is PyTorch (Ultralytics on the ``.pt``) or, for an engine built from an ``.onnx`` where
torch is absent, ONNX Runtime on the CPU running that same ``.onnx``.
Both sides see the same synthetic images (never real ones). Detections are matched by box IoU;
the report gives matched box IoU, mask IoU and score differences. A reference apple without a
partner counts as mask IoU 0 unless its score sits within ``margin`` of the threshold (where a
1e-3 numeric difference legitimately flips it in or out).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pomona.atomic import write_json, write_text
from pomona.errors import PomonaError
from pomona.instances import Instances
from pomona.masks import box_iou, mask_iou

# Minimum mean mask IoU vs the reference. INT8 rounds every activation to 256 levels: mask borders move
# by a pixel or two and low-confidence apples near the threshold come and go, so it gets a looser bar.
TOLERANCE = {"fp32": 0.98, "fp16": 0.95, "int8": 0.90}
MATCH_IOU = 0.5
PARITY_PROMPT = "apples on trellised trees in a row, 1.5 m away, many apples"  # 4-10 apples per 320 px image


def parity_images(n: int = 6, size: int = 320, seed: int = 0) -> list[np.ndarray]:
    """Square synthetic orchard images (square, so PyTorch's rectangular letterbox equals the export's)."""
    try:
        from pomona.pipeline.procedural import render
    except ImportError:  # renderer absent (edge install): plain synthetic discs still exercise every layer
        return [_disc_image(size, seed + i) for i in range(n)]
    return [render(PARITY_PROMPT, seed + i, (size, size)).image for i in range(n)]


def _disc_image(size: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.integers(20, 90, (size, size, 3), np.uint8)
    image[..., 1] += 60
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, c, int(rng.integers(size // 30, size // 10)), (40, 40, int(rng.integers(150, 230))), -1)
    return image


def match(ref: Instances, got: Instances, conf: float, margin: float = 0.05) -> dict:
    """Greedy one-to-one matching by box IoU; per-pair box IoU, mask IoU and |score difference|."""
    ious = box_iou(ref.boxes, got.boxes) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
    pairs, used_r, used_g = [], set(), set()
    for flat in np.argsort(-ious, axis=None):
        r, g = np.unravel_index(flat, ious.shape)
        if ious[r, g] < MATCH_IOU:
            break
        if r in used_r or g in used_g:
            continue
        used_r.add(r)
        used_g.add(g)
        pairs.append((int(r), int(g)))
    box, msk, dscore = [], [], []
    for r, g in pairs:
        box.append(float(ious[r, g]))
        msk.append(float(mask_iou(ref.masks[r : r + 1], got.masks[g : g + 1])[0, 0]))
        dscore.append(abs(float(ref.scores[r]) - float(got.scores[g])))
    lone_ref = [i for i in range(len(ref)) if i not in used_r]
    lone_got = [i for i in range(len(got)) if i not in used_g]
    # an unmatched detection clearly above the threshold is a real disagreement: it counts as IoU 0
    missed = [i for i in lone_ref if ref.scores[i] >= conf + margin]
    extra = [i for i in lone_got if got.scores[i] >= conf + margin]
    return {"box_iou": box, "mask_iou": msk + [0.0] * (len(missed) + len(extra)), "score_diff": dscore,
            "n_ref": len(ref), "n_exported": len(got), "matched": len(pairs),
            "unmatched_ref": len(lone_ref), "unmatched_exported": len(lone_got),
            "unmatched_confident": len(missed) + len(extra)}


def reference_name(reference: Path) -> str:
    return "ONNX Runtime (CPU)" if Path(reference).suffix.lower() == ".onnx" else "PyTorch"


def cpu_onnx_predictor(onnx: Path, conf: float, iou: float):
    """The edge Predictor on ONNX Runtime's CPU provider only.

    On a Jetson, onnxruntime-gpu would pick its TensorRT provider first, i.e. the very thing under test
    (and spend minutes building an engine). Predictor has no providers argument, so its backend class is
    bound to the CPU provider while it is constructed.
    """
    import functools

    from pomona.edge import predictor as predictor_module

    original = predictor_module.OnnxBackend
    predictor_module.OnnxBackend = functools.partial(original, providers=["CPUExecutionProvider"])
    try:
        return predictor_module.Predictor(onnx, backend="onnxruntime", conf=conf, iou=iou)
    finally:
        predictor_module.OnnxBackend = original


def reference_predict(reference: Path, images: list[np.ndarray], conf: float, iou: float, imgsz: int) -> list[Instances]:
    """The reference detections: Ultralytics on a ``.pt``, or the edge runtime on an ``.onnx`` on the CPU."""
    if Path(reference).suffix.lower() == ".onnx":
        predictor = cpu_onnx_predictor(Path(reference), conf, iou)
        return [predictor(im) for im in images]
    from ultralytics import YOLO

    model = YOLO(str(reference))
    return [Instances.from_ultralytics(model.predict(im, conf=conf, iou=iou, imgsz=imgsz, retina_masks=True,
                                                     verbose=False, device="cpu")[0]) for im in images]


def parity_check(reference: Path, exported: Path, precision: str, images: list[np.ndarray] | None = None,
                 conf: float = 0.1, iou: float = 0.7, report_path: Path | None = None,
                 final: Path | None = None) -> dict:
    """Compare ``exported`` (through :class:`pomona.edge.Predictor`) with ``reference``: a ``.pt`` (PyTorch)
    or the ``.onnx`` an engine was built from (ONNX Runtime, CPU).

    Writes ``<exported stem>.parity.json`` and ``.parity.md``; returns the report. Does not raise on a
    failed check (see :func:`enforce`), so callers decide what happens to the exported file.
    """
    from pomona.edge.predictor import Predictor

    predictor = Predictor(exported, conf=conf, iou=iou)
    if images is None:
        images = parity_images(size=max(predictor.input_hw))
    ref = reference_predict(reference, images, conf, iou, predictor.imgsz)
    if sum(len(r) for r in ref) < 3:  # a barely trained model: compare on what it does find at a low threshold
        conf = 0.01
        predictor.conf = conf
        ref = reference_predict(reference, images, conf, iou, predictor.imgsz)
    per_image = [match(r, predictor(im), conf) for r, im in zip(ref, images)]
    allv = {k: [v for p in per_image for v in p[k]] for k in ("box_iou", "mask_iou", "score_diff")}
    tolerance = TOLERANCE.get(precision, 0.95)
    n = len(allv["mask_iou"])
    report = {
        "weights": str(reference), "reference": reference_name(reference), "exported": str(final or exported),
        "precision": precision, "backend": predictor.backend_name,
        "images": len(images), "image_size": list(images[0].shape[:2]), "conf": conf, "iou": iou,
        "reference_instances": sum(p["n_ref"] for p in per_image),
        "exported_instances": sum(p["n_exported"] for p in per_image),
        "matched": sum(p["matched"] for p in per_image),
        "unmatched_confident": sum(p["unmatched_confident"] for p in per_image),
        "mean_box_iou": float(np.mean(allv["box_iou"])) if allv["box_iou"] else None,
        "mean_mask_iou": float(np.mean(allv["mask_iou"])) if n else None,
        "min_mask_iou": float(np.min(allv["mask_iou"])) if n else None,
        "max_score_diff": float(np.max(allv["score_diff"])) if allv["score_diff"] else None,
        "mean_score_diff": float(np.mean(allv["score_diff"])) if allv["score_diff"] else None,
        "tolerance_mask_iou": tolerance,
    }
    report["status"] = "inconclusive" if not n else ("pass" if report["mean_mask_iou"] >= tolerance else "fail")
    report_path = report_path or (final or exported).with_suffix(".parity.json")  # best.fp16.onnx -> best.fp16.parity.json
    write_json(report_path, report)
    write_text(report_path.with_name(report_path.name.replace(".parity.json", ".parity.md")), _markdown(report))
    report["report"] = str(report_path)
    return report


def enforce(report: dict, exported: Path, final: Path | None = None) -> None:
    """On a failed check, move the export aside (``<final name>.failed``) so nothing picks it up, and raise."""
    if report["status"] != "fail":
        return
    final = final or exported
    failed = final.with_name(final.name + ".failed")
    if exported.exists():
        exported.replace(failed)
    raise PomonaError(f"parity check failed for {final.name}: mean mask IoU {report['mean_mask_iou']:.3f} < "
                      f"{report['tolerance_mask_iou']} vs {report['reference']} (report {report['report']}); moved to {failed.name}")


def _markdown(r: dict) -> str:
    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    return "\n".join([
        f"# Parity: {Path(r['exported']).name} vs {Path(r['weights']).name} ({r['reference']})",
        "",
        f"**{r['status'].upper()}** (mean mask IoU {f(r['mean_mask_iou'])}, tolerance {r['tolerance_mask_iou']} for "
        f"{r['precision']})",
        "",
        "| metric | value |", "|---|---|",
        f"| images (synthetic, {r['image_size'][1]}x{r['image_size'][0]}) | {r['images']} |",
        f"| conf / iou | {r['conf']} / {r['iou']} |",
        f"| instances {r['reference']} / exported / matched | {r['reference_instances']} / {r['exported_instances']} / {r['matched']} |",
        f"| confident unmatched | {r['unmatched_confident']} |",
        f"| mean box IoU | {f(r['mean_box_iou'])} |",
        f"| mean / min mask IoU | {f(r['mean_mask_iou'])} / {f(r['min_mask_iou'])} |",
        f"| mean / max score difference | {f(r['mean_score_diff'], 5)} / {f(r['max_score_diff'], 5)} |",
        "",
    ])


def load_report(path: Path) -> dict:
    return json.loads(Path(path).read_text())
