"""Latency benchmark: pomona's edge runtime vs Ultralytics predict, same frames, same machine.

    python benchmarks/latency/run.py [--weights runs/quickstart/weights/best.pt] [--frames 60]

Exports the weights to ONNX FP32, FP16 and INT8 (INT8 calibrated on a `pomona generate` folder rendered
here; each export with its parity check vs PyTorch), renders synthetic orchard frames, then times, each in
its own process (so peak RSS is per backend):
  pomona onnxruntime FP32 / FP16 / INT8  (Predictor + drawing: capture, pre, infer, post, render)
  Ultralytics YOLO(.pt).predict          (default masks, retina_masks=True = source-resolution masks like ours,
                                         and torch on every core instead of its default cpu_count - 1 threads)
  Ultralytics YOLO(.onnx).predict
plus a sweep of ONNX Runtime session options (bare session.run on the same frames) and a larger parity
sample (24 synthetic images) per export. Writes results.json, results.md and latency.png next to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STAGES = ("capture", "pre", "infer", "post", "render")


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pomona", "ultralytics", "ort-options"])
    p.add_argument("model")
    p.add_argument("--source", required=True)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--retina", action="store_true")
    p.add_argument("--all-cores", action="store_true", help="ultralytics: torch on every core, not cpu_count - 1")
    p.add_argument("--ort-threads", type=int, default=None, help="pomona: OnnxBackend(threads=N) instead of all cores")
    a = p.parse_args(argv)
    if a.mode == "ort-options":
        res = ort_options(a.model, a.source, a.frames)
    elif a.mode == "pomona":
        from pomona.edge.bench import bench

        if a.ort_threads:  # Predictor has no threads argument: bind OnnxBackend's own `threads` for this process
            import functools

            from pomona.edge import predictor as predictor_module

            predictor_module.OnnxBackend = functools.partial(predictor_module.OnnxBackend, threads=a.ort_threads)

        res = bench(a.model, a.source, frames=a.frames, conf=a.conf, per_frame=True)
        res["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "ultralytics"})
    else:
        from pomona.edge.bench import ultralytics_baseline

        res = ultralytics_baseline(a.model, a.source, frames=a.frames, conf=a.conf, retina_masks=a.retina,
                                   all_cores=a.all_cores)
    print(json.dumps(res))


ORT_OPTIONS = {  # name -> SessionOptions settings; "runtime" is what pomona.edge.backends.OnnxBackend uses
    "runtime (all cores, spinning)": {},
    "1 thread": {"threads": 1},
    "all cores, no spinning": {"spin": False},
    "ORT_PARALLEL": {"parallel": True},
    "no CPU memory arena": {"arena": False},
    "ORT_ENABLE_BASIC only": {"basic": True},
}


def ort_options(model: str, source: str, frames: int) -> dict:
    """Median ms of a bare ``session.run`` per ONNX Runtime session configuration, on the same frames."""
    import time

    import numpy as np
    import onnxruntime as ort

    from pomona.dataset import list_images, read_image
    from pomona.machine import cpu_cores
    from pomona.edge.processing import letterbox, to_blob

    probe = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = probe.get_inputs()[0]
    hw = (int(inp.shape[2]), int(inp.shape[3]))
    blobs = [to_blob(letterbox(read_image(p), hw)[0]) for p in list_images(Path(source))[:10]]
    out = {}
    for name, cfg in ORT_OPTIONS.items():
        o = ort.SessionOptions()
        o.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if cfg.get("basic")
                                      else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        o.intra_op_num_threads = cfg.get("threads", cpu_cores())
        o.inter_op_num_threads = 1
        o.log_severity_level = 3
        if cfg.get("spin") is False:
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if cfg.get("parallel"):
            o.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        if cfg.get("arena") is False:
            o.enable_cpu_mem_arena = False
        sess = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
        for b in blobs[:3]:
            sess.run(None, {inp.name: b})
        ms = []
        for i in range(frames):
            t0 = time.perf_counter()
            sess.run(None, {inp.name: blobs[i % len(blobs)]})
            ms.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"p50": float(np.median(ms)), "mean": float(np.mean(ms))}
        del sess
    return out


def post_share_by_count(res: dict) -> list[dict]:
    import numpy as np

    pf = res["per_frame"]
    apples, post, model = (np.asarray(pf[k], float) for k in ("apples", "post_ms", "model_ms"))
    rows = []
    for lo, hi in ((0, 10), (10, 20), (20, 30), (30, 1000)):
        sel = (apples >= lo) & (apples < hi)
        if sel.any():
            rows.append({"apples": f"{lo}-{hi - 1}" if hi < 1000 else f">={lo}", "frames": int(sel.sum()),
                         "post_ms": float(post[sel].mean()), "post_share": float(post[sel].sum() / model[sel].sum())})
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = results["runs"]
    labels = list(runs)
    stages = ["capture", "pre", "infer", "post", "render"]
    x = np.arange(len(stages))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, label in enumerate(labels):
        vals = [runs[label]["stages_ms"].get(s, {}).get("p50", 0.0) for s in stages]
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, vals, width, label=f"{label} ({runs[label]['fps_model']:.1f} fps)")
    ax.set_xticks(x, stages)
    ax.set_ylabel("p50 latency per frame (ms)")
    m = results["machine"]
    ax.set_title(f"YOLO11n-seg {results['imgsz']} px, {results['frame_size']} frames, {m['cpu']} ({m['cores']} cores)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(r: dict) -> str:
    lines = [
        *intro_lines(r),
        *runs_table(r),
        *stages_table(r),
        *ratio_lines(r),
        *ort_options_table(r),
        *post_share_table(r),
        *parity_table(r),
        "", "![latency per stage](latency.png)", "",
    ]
    return "\n".join(lines)


def intro_lines(r: dict) -> list[str]:
    m = r["machine"]
    return [
        "# Latency: pomona edge runtime vs Ultralytics predict",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m.get('onnxruntime')}, OpenCV {m['opencv']}, "
        f"Python {m['python']}. Weights `{r['weights']}` (YOLO11n-seg), imgsz {r['imgsz']}, conf {r['conf']}, "
        f"{r['frames']} timed frames ({r['frame_size']}, synthetic orchard renders, "
        f"{r['gt_apples_mean']:.1f} visible apples per frame on average). Command: `{r['command']}`.",
        "",
        f"Load average (1/5/15 min) before / after the timed runs: "
        f"{' '.join(f'{v:.2f}' for v in r['load_average_1_5_15']['before_timing'])} / "
        f"{' '.join(f'{v:.2f}' for v in r['load_average_1_5_15']['after_timing'])} "
        f"(a load near {m['cores']} means the cores were shared with other jobs).",
        "",
        "Model time = one `Predictor(frame)` call (pre + infer + post, masks at source resolution) or one "
        "`YOLO(...).predict(frame)` call. End-to-end adds capture (JPEG decode) and rendering (supervision annotators).",
        "",
    ]


def runs_table(r: dict) -> list[str]:
    lines = ["| run | model ms p50 / p95 / p99 | model FPS | end-to-end FPS | peak RSS MB | apples/frame |",
             "|---|---|---|---|---|---|"]
    for label, x in r["runs"].items():
        mm = x["model_ms"]
        e2e = f"{x['fps_e2e']:.1f}" if "fps_e2e" in x else "-"
        lines.append(f"| {label} | {mm['p50']:.1f} / {mm['p95']:.1f} / {mm['p99']:.1f} | {x['fps_model']:.1f} | {e2e} | "
                     f"{x['peak_rss_mb']:.0f} | {x['apples_mean']:.1f} |")
    return lines


def stages_table(r: dict) -> list[str]:
    lines = ["", "Per stage (ms, p50 / p95 / p99):", "", "| run | " + " | ".join(STAGES) + " |",
             "|---|" + "---|" * len(STAGES)]
    for label, x in r["runs"].items():
        cells = []
        for s in STAGES:
            v = x["stages_ms"].get(s)
            cells.append(f"{v['p50']:.2f} / {v['p95']:.2f} / {v['p99']:.2f}" if v else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def ratio_lines(r: dict) -> list[str]:
    lines = ["", "Ratios (model FPS, same frames, same run):", ""]
    for k, v in r["ratios"].items():
        lines.append(f"- {k}: **{v:.2f}x**")
    return lines


def ort_options_table(r: dict) -> list[str]:
    lines = ["", "ONNX Runtime session options (bare `session.run`, same frames, median / mean ms; \"runtime\" is "
             "what `OnnxBackend` uses):", "", "| options | " + " | ".join(r["ort_options"]) + " |",
             "|---|" + "---|" * len(r["ort_options"])]
    for opt in ORT_OPTIONS:
        cells = [f"{r['ort_options'][m][opt]['p50']:.1f} / {r['ort_options'][m][opt]['mean']:.1f}" for m in r["ort_options"]]
        lines.append(f"| {opt} | " + " | ".join(cells) + " |")
    return lines


def post_share_table(r: dict) -> list[str]:
    lines = ["", "Post-processing share of model time (pomona ONNX FP32), by apples per frame:", "",
             "| apples | frames | post ms | share |", "|---|---|---|---|"]
    for row in r["post_share_by_count"]:
        lines.append(f"| {row['apples']} | {row['frames']} | {row['post_ms']:.2f} | {100 * row['post_share']:.1f}% |")
    return lines


def parity_table(r: dict) -> list[str]:
    lines = ["", f"Parity vs PyTorch (synthetic square images; the export's own check: 6 images at conf 0.1, "
             f"the wide sample: 24 other images at conf {r['conf']}):", "",
             "| export | sample | status (tolerance) | mean box IoU | mean / min mask IoU | max score diff | "
             "PyTorch / exported / matched |", "|---|---|---|---|---|---|---|"]
    for sample, reports in (("export check", r["parity"]), ("wide sample", r["parity_wide"])):
        for label, p in reports.items():
            lines.append(f"| {label} | {sample} ({p['images']} images) | {p['status']} ({p['tolerance_mask_iou']}) | "
                         f"{p['mean_box_iou']:.4f} | {p['mean_mask_iou']:.4f} / {p['min_mask_iou']:.4f} | "
                         f"{p['max_score_diff']:.4f} | {p['reference_instances']} / {p['exported_instances']} / "
                         f"{p['matched']} |")
    return lines


def main() -> None:
    a = _args()
    weights = Path(a.weights)
    if not weights.is_file():
        raise SystemExit(f"weights not found: {weights} (run `pomona quickstart` or pass --weights)")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="pomona-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    pt = work / "model.pt"
    shutil.copyfile(weights, pt)
    from pomona.edge.bench import machine_info

    w, h = (int(v) for v in a.size.lower().split("x"))
    frames, gt = render_frames(work / "frames", w, h)
    fp32, fp16, int8 = export_all(pt, work, w, h)
    parity_wide = wide_parity(pt, work, a.conf, {"onnx fp32": fp32, "onnx fp16": fp16, "onnx int8": int8})
    load_before = os.getloadavg()
    runs, options = time_runs(pt, fp32, fp16, int8, ["--source", str(frames), "--frames", str(a.frames), "--conf", str(a.conf)])
    load_after = os.getloadavg()
    for label, res in runs.items():
        print(f"{label}: {res['fps_model']:.1f} fps", file=sys.stderr)
    ours = runs["pomona onnxruntime fp32"]
    results = {
        "command": "python benchmarks/latency/run.py " + " ".join(sys.argv[1:]),
        "weights": str(weights), "imgsz": ours["imgsz"], "conf": a.conf, "frames": a.frames,
        "frame_size": f"{w}x{h}", "gt_apples_mean": sum(gt) / len(gt), "machine": machine_info(),
        "load_average_1_5_15": {"before_timing": list(load_before), "after_timing": list(load_after)},
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "per_frame"} for k, v in runs.items()},
        "ratios": ratios(runs),
        "ort_options": options,
        "post_share_by_count": post_share_by_count(ours),
        "parity": {"onnx fp32": fp32["parity"], "onnx fp16": fp16["parity"], "onnx int8": int8["parity"]},
        "parity_wide": parity_wide,
        "torch_free_edge_runs": all(not runs[k]["heavy_modules"] for k in runs if k.startswith("pomona")),
    }
    out = Path(a.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    plot(results, out / "latency.png")
    print(markdown(results))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(ROOT / "runs/quickstart/weights/best.pt"))
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--size", default="640x480", help="frame size WxH")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", default=str(HERE))
    return p.parse_args()


def render_frames(frames: Path, w: int, h: int) -> tuple[Path, list[int]]:
    """Up to 30 rendered frames with 10-35 visible apples each (the target workload); their apple counts."""
    import cv2

    from pomona.edge.bench import DEFAULT_PROMPT
    from pomona.pipeline.procedural import render

    frames.mkdir(parents=True, exist_ok=True)
    gt, seed = [], 5000
    while len(gt) < 30 and seed < 5300:
        scene = render(DEFAULT_PROMPT, seed, (w, h))
        seed += 1
        if 10 <= len(scene.instances) <= 35:
            cv2.imwrite(str(frames / f"frame_{len(gt):04d}.jpg"), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            gt.append(len(scene.instances))
    print(f"frames: {frames} ({sum(gt) / len(gt):.1f} apples/frame)", file=sys.stderr)
    return frames, gt


def export_all(pt: Path, work: Path, w: int, h: int) -> tuple[dict, dict, dict]:
    """FP32, FP16 and INT8 ONNX exports of ``pt``, each parity-checked (INT8 calibrated on synthetic renders only)."""
    from pomona.export.exporter import export_model

    calib = work / "calib"
    if not calib.is_dir():
        from pomona.pipeline.generate import generate_procedural

        generate_procedural(calib, n=48, size=(w, h), seed=7000, workers=1)
    fp32 = export_model(pt, format="onnx")
    fp16 = export_model(pt, format="onnx", half=True)
    int8 = export_model(pt, format="onnx", int8=True, calib=calib)
    print("exported + parity checked", file=sys.stderr)
    return fp32, fp16, int8


def wide_parity(pt: Path, work: Path, conf: float, exports: dict[str, dict]) -> dict:
    """Each export against the .pt on 24 more varied renders than the exporter's own parity set."""
    from pomona.export.parity import parity_check, parity_images

    wide = parity_images(n=24, seed=100)
    return {label: parity_check(pt, Path(x["path"]), x["precision"], images=wide, conf=conf,
                                report_path=work / f"{Path(x['path']).stem}.wide.parity.json")
            for label, x in exports.items()}


def time_runs(pt: Path, fp32: dict, fp16: dict, int8: dict, src: list[str]) -> tuple[dict, dict]:
    """Every runtime on the same frames, one child process each; and ONNX Runtime's session options."""
    runs = {
        "pomona onnxruntime fp32": _child(["pomona", fp32["path"], *src]),
        "pomona onnxruntime fp16": _child(["pomona", fp16["path"], *src]),
        "pomona onnxruntime int8": _child(["pomona", int8["path"], *src]),
        "pomona onnxruntime fp32, 1 ORT thread": _child(["pomona", fp32["path"], *src, "--ort-threads", "1"]),
        "pomona onnxruntime int8, 1 ORT thread": _child(["pomona", int8["path"], *src, "--ort-threads", "1"]),
        "ultralytics predict .pt": _child(["ultralytics", str(pt), *src]),
        "ultralytics predict .pt retina": _child(["ultralytics", str(pt), *src, "--retina"]),
        "ultralytics predict .pt, all cores": _child(["ultralytics", str(pt), *src, "--all-cores"]),
        "ultralytics predict .onnx": _child(["ultralytics", fp32["path"], *src]),
    }
    options = {label: _child(["ort-options", x["path"], *src]) for label, x in (("fp32", fp32), ("int8", int8))}
    return runs, options


def ratios(runs: dict) -> dict[str, float]:
    """Model FPS (and end-to-end FPS) of pomona's runs over Ultralytics', same frames, same run."""
    fps = {k: v["fps_model"] for k, v in runs.items()}
    e2e = {k: v["fps_e2e"] for k, v in runs.items() if v.get("fps_e2e")}
    pt, ours, q8 = fps["ultralytics predict .pt"], "pomona onnxruntime fp32", "pomona onnxruntime int8"
    one32, one8 = "pomona onnxruntime fp32, 1 ORT thread", "pomona onnxruntime int8, 1 ORT thread"
    return {
        "pomona fp32 vs Ultralytics predict .pt": fps[ours] / pt,
        "pomona fp32 vs Ultralytics predict .pt (retina masks, same output as ours)":
            fps[ours] / fps["ultralytics predict .pt retina"],
        "pomona fp32 vs Ultralytics predict .pt, torch on every core": fps[ours] / fps["ultralytics predict .pt, all cores"],
        "pomona fp32 vs Ultralytics predict .onnx": fps[ours] / fps["ultralytics predict .onnx"],
        "pomona fp16 vs Ultralytics predict .pt": fps["pomona onnxruntime fp16"] / pt,
        "pomona int8 vs Ultralytics predict .pt": fps[q8] / pt,
        "pomona int8 vs Ultralytics predict .pt (retina masks)": fps[q8] / fps["ultralytics predict .pt retina"],
        "pomona int8 vs Ultralytics predict .onnx": fps[q8] / fps["ultralytics predict .onnx"],
        "pomona int8 end-to-end (capture + model + render) vs Ultralytics predict .pt (model only)": e2e[q8] / pt,
        "pomona fp32 end-to-end (capture + model + render) vs Ultralytics predict .pt (model only)": e2e[ours] / pt,
        "pomona fp32, 1 ORT thread vs Ultralytics predict .pt": fps[one32] / pt,
        "pomona int8, 1 ORT thread vs Ultralytics predict .pt": fps[one8] / pt,
        "pomona int8, 1 ORT thread, end-to-end vs Ultralytics predict .pt (model only)": e2e[one8] / pt,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("pomona", "ultralytics", "ort-options"):
        child_main(sys.argv[1:])
    else:
        main()
