"""Label-quality benchmark: automatic labellers against a reference, the paper's Dice / IoU / P / R / F1 table.

    python benchmarks/labels/run.py --teacher runs/quickstart/weights/best.pt
    python benchmarks/labels/run.py --detector yolo11x.pt --segmenter sam2.1_b.pt   # the paper's labeller, needs weights

Rows: each labeller on fresh procedural images (reference: the renderer's exact masks) and, for the
teacher, on the real dev photos (reference: their hand-drawn polygons; evaluation only). Writes
benchmarks/labels/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def copy_images(src_images: list[Path], dst: Path) -> Path:
    (dst / "images").mkdir(parents=True, exist_ok=True)
    for p in src_images:
        shutil.copy(p, dst / "images" / p.name)
    return dst


def label_quality(dataset: Path, reference: Path, **annotate_args) -> dict:
    from pomona.pipeline.annotate import annotate
    from pomona.pipeline.evaluate import evaluate_labels

    report = annotate(dataset, **annotate_args)
    result = evaluate_labels(dataset / "labels", reference)
    result["seconds_per_image"] = round(report.seconds / max(report.images, 1), 3)
    return result


def main() -> None:
    args = _parse_args()
    labellers = _labellers(args)
    if not labellers:
        sys.exit("error: no labeller to measure: train one (make quickstart) or pass --detector and --segmenter")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for k, (name, kwargs) in enumerate(labellers) for row in _measure(k, name, kwargs, args, Path(tmp))]
    lines = _table(rows, measured_yolo_sam=bool(args.detector and args.segmenter))
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=ROOT / "runs" / "quickstart" / "weights" / "best.pt")
    ap.add_argument("--detector", default=None, help="COCO-pretrained YOLO detector for yolo-sam (e.g. yolo11x.pt)")
    ap.add_argument("--segmenter", default=None, help="SAM weights for yolo-sam (e.g. sam2.1_b.pt)")
    ap.add_argument("--n", type=int, default=40, help="fresh procedural images")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--conf", type=float, default=0.25)
    return ap.parse_args()


def _labellers(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(name, annotate() arguments) of each labeller there are weights for."""
    labellers = []
    if args.teacher.is_file():
        labellers.append((f"model (teacher: {args.teacher.parent.parent.name})", {"labeler": "model", "detector": str(args.teacher)}))
    if args.detector and args.segmenter:
        labellers.append(("yolo-sam", {"labeler": "yolo-sam", "detector": args.detector, "segmenter": args.segmenter}))
    return labellers


def _measure(k: int, name: str, kwargs: dict, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """One labeller on fresh renders (against their exact masks) and, when present, on the real dev photos."""
    from pomona.dataset import read_data_yaml
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.recipe import default_real

    ds = tmp / f"synthetic-{k}"
    generate_procedural(ds, args.n, (640, 640), seed=900_000)  # seeds no training run uses
    shutil.copytree(ds / "labels", ds / "labels_gt")
    r = label_quality(ds, ds / "labels_gt", conf=args.conf, imgsz=args.imgsz, **kwargs)
    rows = [{"labeller": name, "data": f"procedural ({args.n} fresh images)", **r}]
    real = default_real()
    if real is not None:
        real_ds = copy_images(read_data_yaml(real).images("val"), tmp / f"real-{k}")
        r = label_quality(real_ds, real.parent / "labels", conf=args.conf, imgsz=args.imgsz, **kwargs)
        rows.append({"labeller": name, "data": "real dev photos (144 tiles)", **r})
    return rows


def _table(rows: list[dict], measured_yolo_sam: bool) -> list[str]:
    lines = ["# Label quality: automatic labels vs reference", "",
             "Matched instances at mask IoU >= 0.5 (one-to-one). Paper (YOLO11 + SAM on DALL-E images): Dice 0.95, IoU 0.93.",
             f"Command: `python benchmarks/labels/run.py {' '.join(sys.argv[1:])}`", "",
             "| labeller | data | Dice | IoU | precision | recall | F1 | s/image |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['labeller']} | {r['data']} | {r['dice']:.3f} | {r['iou']:.3f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['f1']:.3f} | {r['seconds_per_image']} |" for r in rows]
    if not measured_yolo_sam:
        lines += ["", "yolo-sam not measured: its weights (yolo11x.pt, sam2.1_b.pt) cannot be downloaded on this machine."]
    return lines


if __name__ == "__main__":
    main()
