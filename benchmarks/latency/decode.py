"""JPEG frames decoded only as large as the model takes them: accuracy and whole-command time, both ways.

    python benchmarks/latency/decode.py [--model pomona-apple-n] [--source DIR] [--reps 3]

`pomona run` decodes a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling) when the model's letterbox
would shrink it that much anyway (edge/sources.py: read_image_reduced); POMONA_JPEG_REDUCE=0 decodes it whole.
This runs the whole command both ways on the same folder (default: the real dev photos, 1024x1024, with the
shipped model at 416: decoded at 512) and scores each JSONL against the folder's labels with pycocotools
(box and mask mAP50 at --conf 0.001; masks rasterised from the JSONL polygons, the same for both), then times
both commands (wall time of the whole command on the folder minus on one image, per image; round-robin,
--reps repetitions, medians). The dev photos are only scored, never trained on or selected from.

Writes decode.json here and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEV = HERE.parents[2] / "shared" / "data" / "fuji-apple-dev" / "images"
_SCRIPT = Path(sys.executable).parent / "pomona"
POMONA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pomona.cli"]
WAYS = {"reduced decode (default)": {}, "whole decode (POMONA_JPEG_REDUCE=0)": {"POMONA_JPEG_REDUCE": "0"}}


def run(model: str, source: Path, jsonl: Path, env: dict, conf: float) -> float:
    t0 = time.perf_counter()
    subprocess.run([*POMONA, "run", model, "--source", str(source), "--conf", str(conf), "--jsonl", str(jsonl)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    return time.perf_counter() - t0


def score(jsonl: Path, images: Path) -> dict:
    """Box and mask mAP50 / mAP50-95 of a pomona JSONL against YOLO labels beside ``images``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from pomona.dataset import label_path, read_labels, to_coco
    from pomona.instances import Instances
    from pomona.masks import polygons_to_mask

    gt_data = {"images": [], "annotations": [], "categories": []}
    dets = []
    for image_id, line in enumerate(jsonl.read_text().splitlines(), 1):  # one image's masks in memory at a time
        rec = json.loads(line)
        w, h = rec["size"]
        apples = rec["apples"]
        masks = np.zeros((len(apples), h, w), bool)
        for i, a in enumerate(apples):
            masks[i] = polygons_to_mask(np.asarray(a["polygon"], np.float32), h, w)
        dt = Instances(np.array([a["box"] for a in apples]).reshape(-1, 4), masks, [a["score"] for a in apples],
                       [a["class_id"] for a in apples], (h, w))
        gt = to_coco([(rec["image"], read_labels(label_path(images / rec["image"]), (h, w)))])
        gt_data["categories"] = gt["categories"]
        gt_data["images"].append({**gt["images"][0], "id": image_id})
        start = len(gt_data["annotations"])
        gt_data["annotations"] += [{**a, "image_id": image_id, "id": start + k + 1} for k, a in enumerate(gt["annotations"])]
        dets += [{**a, "image_id": image_id} for a in to_coco([(rec["image"], dt)])["annotations"]]
    gt = COCO()
    gt.dataset = gt_data
    gt.createIndex()
    out = {}
    for kind in ("bbox", "segm"):
        ev = COCOeval(gt, gt.loadRes(dets) if dets else COCO(), kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out[kind] = {"mAP50": round(float(ev.stats[1]), 4), "mAP50-95": round(float(ev.stats[0]), 4)}
    out["detections"] = len(dets)
    return out


def timings(model: str, source: Path, reps: int, work: Path) -> dict:
    one = work / "one"
    one.mkdir(exist_ok=True)
    first = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[0]
    shutil.copyfile(first, one / first.name)
    n = len([p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")])
    per = {way: [] for way in WAYS}
    for rep in range(reps):
        for way, env in WAYS.items():
            t_all = run(model, source, work / "t.jsonl", env, 0.25)
            t_one = run(model, one, work / "t.jsonl", env, 0.25)
            per[way].append((t_all - t_one) / (n - 1) * 1e3)
            print(f"rep {rep + 1}/{reps} {way}: {per[way][-1]:.1f} ms/image", file=sys.stderr, flush=True)
    return {"images": n, "ms_per_image": {k: [round(v, 2) for v in vals] for k, vals in per.items()},
            "median_ms": {k: round(statistics.median(v), 2) for k, v in per.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pomona-apple-n")
    p.add_argument("--source", type=Path, default=DEV)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--conf", type=float, default=0.001, help="threshold of the scored runs (mAP wants them all)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pomona-decode-"))
    result = {"model": args.model, "source": str(args.source), "scores": {}}
    for way, env in WAYS.items():
        run(args.model, args.source, work / "x.jsonl", env, args.conf)
        result["scores"][way] = score(work / "x.jsonl", args.source)
    result["time"] = timings(args.model, args.source, args.reps, work)
    result["load_average"] = os.getloadavg()
    (HERE / "decode.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| decode | box mAP50 | mask mAP50 | mask mAP50-95 | detections | ms per image (median) |")
    print("|---|---|---|---|---|---|")
    for way in WAYS:
        s = result["scores"][way]
        print(f"| {way} | {s['bbox']['mAP50']:.4f} | {s['segm']['mAP50']:.4f} | {s['segm']['mAP50-95']:.4f} | "
              f"{s['detections']} | {result['time']['median_ms'][way]:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
