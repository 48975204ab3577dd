"""Which architecture and input size ship? File size, parameters, FLOPs and CPU latency of YOLO11n-seg, YOLOv8n-seg
(the architecture of the COCO-pretrained start that a registry here carries) and YOLO11s-seg at each input size.

    python benchmarks/model_size/run.py [--imgsz 416 512] [--runs 40]

Every model is built from its Ultralytics config with one class (weights do not change size or speed),
exported with pomona's ONNX exporter at each size, and timed with ONNX Runtime on this machine in alternation
(a, b, c, a, b, c, ...) so all see the same load. Writes results.md / results.json beside this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARCHS = ("yolo11n-seg", "yolov8n-seg", "yolo11s-seg")
BUDGET_MB = 25  # the shipped set (.pt and .onnx) in git


def build(arch: str, folder: Path, imgsz: int) -> dict:
    import torch
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils.torch_utils import get_flops

    from pomona.export.exporter import export_model

    model = SegmentationModel(f"{arch}.yaml", nc=1, verbose=False)
    model.names = {0: "apple"}
    pt = folder / f"{arch}.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": imgsz, "task": "segment"}, "epoch": -1, "date": None}, pt)
    onnx = Path(export_model(pt, format="onnx", imgsz=imgsz, parity=False)["path"])
    return {"arch": arch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "gflops": round(get_flops(model.float(), imgsz), 1), "pt_mb": round(pt.stat().st_size / 2**20, 1),
            "onnx_mb": round(onnx.stat().st_size / 2**20, 1), "onnx": str(onnx)}


def time_models(rows: list[dict], runs: int) -> None:
    from pomona.edge.backends import OnnxBackend

    backends = [OnnxBackend(Path(r["onnx"])) for r in rows]
    rng = np.random.default_rng(0)
    blobs = [rng.random((1, 3, r["imgsz"], r["imgsz"]), dtype=np.float32) for r in rows]
    times = [[] for _ in rows]
    for _ in range(5):  # warm-up
        for b, blob in zip(backends, blobs):
            b(blob)
    for _ in range(runs):
        for i, (b, blob) in enumerate(zip(backends, blobs)):
            t0 = time.perf_counter()
            b(blob)
            times[i].append((time.perf_counter() - t0) * 1e3)
    for r, t in zip(rows, times):
        r["infer_ms_p50"] = round(statistics.median(t), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgsz", type=int, nargs="+", default=[416], help="input sizes (each model at each)")
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in args.imgsz:
            folder = Path(tmp) / str(size)
            folder.mkdir()
            rows += [dict(build(a, folder, size), imgsz=size) for a in ARCHS]
        time_models(rows, args.runs)
    for r in rows:
        r.pop("onnx")
    sizes = " ".join(map(str, args.imgsz))
    (HERE / "results.json").write_text(json.dumps({"imgsz": args.imgsz, "rows": rows}, indent=2) + "\n")
    lines = [f"# Architecture and input size of the shipped model ({', '.join(map(str, args.imgsz))} px)", "",
             f"`python benchmarks/model_size/run.py --imgsz {sizes}`: one class, ONNX Runtime FP32 on this machine's "
             "CPU, the models timed in alternation.", "",
             "| model | input (px) | params (M) | GFLOPs | .pt FP16 (MB) | .onnx FP32 (MB) | both files (MB) | ONNX Runtime p50 (ms) | vs yolo11n-seg at the first size |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = rows[0]["infer_ms_p50"]
    lines += [f"| {r['arch']} | {r['imgsz']} | {r['params_m']} | {r['gflops']} | {r['pt_mb']} | {r['onnx_mb']} | "
              f"{r['pt_mb'] + r['onnx_mb']:.1f} | {r['infer_ms_p50']} | {r['infer_ms_p50'] / base:.2f}x |" for r in rows]
    over = sorted({r["arch"] for r in rows if r["pt_mb"] + r["onnx_mb"] > BUDGET_MB})
    lines += ["", f"Over the {BUDGET_MB} MB budget for the shipped set: {', '.join(over) or 'none'}. "
              "Which one ships is decided on accuracy as well: the release gate (benchmarks/release/results.md). The "
              "shipped pomona-apple-n v6 is yolov8n-seg at 512 px: its real-photo gain over 416 px (0.650 -> 0.673 mask "
              "mAP50, recall 0.554 -> 0.600) costs the ratio of those two rows."]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
