"""What a model mistakes for apples on the real dev photos, and how sure it is of the apples it finds.

    python benchmarks/sim2real/false_positives.py runs/sim2real/weights/best.pt [--compare OTHER.pt] [--imgsz 416]

For each score threshold: predictions that match a hand-labelled apple (mask IoU >= 0.5) and predictions
that touch none (IoU < 0.3), the two counts whose ratio mAP50 ranks. Writes a markdown table + JSON and,
per model, a picture of the confident false positives (score >= 0.3, IoU < 0.1 with every label), so the
renderer can learn what it lacks. Read them in aggregate: the dev photos are never tuned image by image.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
CONFIDENT = 0.3


def _crop(image: np.ndarray, box: np.ndarray, side: int = 96) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) + 20
    a, b = int(max(cx - r, 0)), int(max(cy - r, 0))
    c, d = int(min(cx + r, image.shape[1])), int(min(cy + r, image.shape[0]))
    out = image[b:d, a:c].copy()
    cv2.rectangle(out, (int(x0 - a), int(y0 - b)), (int(x1 - a), int(y1 - b)), (255, 0, 255), 1)
    return cv2.resize(out, (side, side))


def score_table(weights: Path, real: Path, imgsz: int) -> tuple[dict, list[np.ndarray]]:
    """Matched / unmatched prediction counts per threshold, and crops of the confident false positives."""
    from pomona.masks import mask_iou
    from pomona.pipeline.evaluate import predictions_with_labels

    true_scores, false_scores, crops = [], [], []
    for _, image, pred, ref in predictions_with_labels(weights, real, "val", imgsz, min(THRESHOLDS), desc=weights.parent.parent.name):
        if not len(pred):
            continue
        best = mask_iou(ref.masks, pred.masks).max(0) if len(ref) else np.zeros(len(pred))
        true_scores += list(pred.scores[best >= 0.5])
        false_scores += list(pred.scores[best < 0.3])
        crops += [_crop(image, pred.boxes[j]) for j in np.where((pred.scores >= CONFIDENT) & (best < 0.1))[0]]
    t, f = np.array(true_scores), np.array(false_scores)
    rows = [{"threshold": th, "matched": int((t >= th).sum()), "false": int((f >= th).sum())} for th in THRESHOLDS]
    return {"weights": str(weights), "imgsz": imgsz, "rows": rows, "confident_false": len(crops)}, crops


def collage(crops: list[np.ndarray], out: Path, n: int = 64, per_row: int = 8) -> Path | None:
    from pomona.atomic import write_image

    if not crops:
        return None
    crops = random.Random(0).sample(crops, min(n, len(crops)))
    crops += [np.zeros_like(crops[0])] * (-len(crops) % per_row)
    return write_image(out, np.vstack([np.hstack(crops[k:k + per_row]) for k in range(0, len(crops), per_row)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--compare", type=Path, default=None, help="a second model, e.g. the previous recipe's")
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--real", type=Path, default=None, help="real data.yaml (default: ../shared/data/fuji-apple-dev)")
    ap.add_argument("--out", type=Path, default=HERE / "false_positives")
    args = ap.parse_args()

    from pomona.atomic import write_json, write_text
    from pomona.errors import PomonaError
    from pomona.pipeline.recipe import default_real

    real = args.real or default_real()
    if real is None:
        raise SystemExit("error: the real dev photos were not found; pass --real DATA_YAML")
    models = [w for w in (args.weights, args.compare) if w is not None]
    for w in models:
        if not w.is_file():
            raise SystemExit(f"error: weights not found: {w}")
    tables = []
    try:
        for k, w in enumerate(models):
            table, crops = score_table(w, real, args.imgsz)
            picture = collage(crops, args.out.with_name(f"{args.out.name}_{k}.jpg"))
            table["picture"] = str(picture) if picture else None
            tables.append(table)
    except PomonaError as e:
        raise SystemExit(f"error: {e}")
    lines = ["# Matched and false predictions on the real dev photos, by score threshold", "",
             "Matched: predictions with mask IoU >= 0.5 with a hand-labelled apple (a fragment and the whole apple can both match); false: IoU < 0.3 with every label. "
             f"Evaluated at {args.imgsz} px.", "",
             "| score >= | " + " | ".join(f"{Path(t['weights']).parent.parent.name}: matched / false" for t in tables) + " |",
             "|---|" + "---|" * len(tables)]
    for i, th in enumerate(THRESHOLDS):
        lines.append(f"| {th} | " + " | ".join(f"{t['rows'][i]['matched']} / {t['rows'][i]['false']}" for t in tables) + " |")
    lines.append("")
    for t in tables:
        if t["picture"]:
            lines += [f"Confident false positives (score >= {CONFIDENT}, IoU < 0.1 with every label) of "
                      f"`{t['weights']}`: {t['confident_false']}.", "", f"![]({Path(t['picture']).name})", ""]
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), tables)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
