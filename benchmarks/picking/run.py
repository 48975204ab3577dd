"""Picking targets on fresh RGB-D renders: 3D centre and diameter errors at several depth-noise levels.

    nice -n 10 python benchmarks/picking/run.py [--n 80] [--size 640] [--levels 0,1,2] [--seed 7000]

For each noise level (0 = clean depth, 1 = the renderer's D435-like default, 2 = twice its disparity error):
1. ``pomona generate WORK/L --n N --depth --depth-noise L`` on seeds no model was trained on (same images at
   every level: the depth noise has its own random stream);
2. ``pomona run pomona-apple-n --source WORK/L/images --depth WORK/L/depth --intrinsics WORK/L/manifest.jsonl``
   (the shipped model's masks, the runtime's 3D step);
3. ``pomona evaluate picking`` of those predictions, and of targets measured from the true masks (the error
   of the depth and the 3D step alone, segmentation taken out).
Then the 3D step's cost: pomona.picking.measure on a rendered frame's true masks, 30 apples (the frame with
the most apples, its apples repeated when it has fewer), CPU time per frame (process time, best and median
of repeated batches) on this machine as it is (shared; the load average is recorded beside it).

Writes results.md, results.json and picking.png beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "pomona.cli"]


def sh(*args: str) -> None:
    print("$ pomona " + " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def one_level(work: Path, level: str, n: int, size: int, seed: int, model: str) -> dict:
    from pomona.pipeline.evaluate_picking import evaluate_picking, targets_from_true_masks

    ds = work / f"noise{level}"
    if not (ds / "manifest.jsonl").is_file():
        sh("generate", str(ds), "--n", str(n), "--size", str(size), "--seed", str(seed), "--depth",
           "--depth-noise", level)
    pred = work / f"pred{level}.jsonl"
    sh("run", model, "--source", str(ds / "images"), "--depth", str(ds / "depth"), "--intrinsics",
       str(ds / "manifest.jsonl"), "--jsonl", str(pred), "--json")
    truth = targets_from_true_masks(ds, work / f"true{level}.jsonl")
    return {"level": level, "predicted_masks": evaluate_picking(pred, ds), "true_masks": evaluate_picking(truth, ds)}


def reference_inference(model: str):
    """One single-threaded ONNX Runtime call of the shipped model on a fixed input: a yardstick timed in the same
    run as the 3D step, because CPUs of this kind (and one machine from hour to hour) differ about 2x."""
    import onnxruntime as ort

    from pomona.models import resolve_model

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnx_call(resolve_model(model, prefer="onnx"), opts)


def onnx_call(onnx: Path, opts=None):
    """One ONNX Runtime call of ``onnx`` on a fixed random input (as a callable), and the input's size, HxW."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, 3, *inp.shape[2:]), np.float32)
    return lambda: session.run(None, {inp.name: x}), f"{inp.shape[2]}x{inp.shape[3]}"


ISSUE_YARDSTICK_MS = 15.0  # issue 17: raw ONNX Runtime on a YOLO11n-seg at 320 px took 15 ms on the machine of issues 17/19


def issue_yardstick(model: str, work: Path):
    """The call issue 17 timed on the machine the 2 ms target was set on: raw ONNX Runtime (its default session:
    every core) on the model at 320 px, wall time. Timed here in the same batches, it scales this machine's
    milliseconds to that machine's."""
    from pomona.models import resolve_model

    onnx = work / "model-320.onnx"
    if not onnx.is_file():
        sh("export", str(resolve_model(model, prefer="pt")), "--imgsz", "320", "--out", str(onnx))
    return onnx_call(onnx)[0]  # the default session (every core, spinning)


def cost(ds: Path, model: str, apples: int = 30, batches: int = 15, calls: int = 20) -> dict:
    """CPU time of the 3D step per frame of ``apples`` apples (true masks of the busiest rendered frame), and
    of one inference of ``model`` in the same batches (the yardstick)."""
    best, size, inst, depth, K = busiest_frame(ds, apples)
    infer, input_size = reference_inference(model)
    issue_call = issue_yardstick(model, ds.parent)
    cpu, wall, gather, ref, issue = time_batches(inst, depth, K, infer, issue_call, batches, calls)
    return cost_result(best, size, apples, model, input_size, cpu, wall, gather, ref, issue)


def busiest_frame(ds: Path, apples: int):
    """The rendered frame with the most apples: its manifest row, its size (h, w), its true masks repeated to
    ``apples``, its depth image and its intrinsics."""
    import cv2

    from pomona.dataset import label_path, read_labels, read_manifest
    from pomona.edge.depth import parse_intrinsics

    best = max(read_manifest(ds), key=lambda r: r["apples"])
    image = ds / best["file"]
    size = (best["intrinsics"]["height"], best["intrinsics"]["width"])
    inst = read_labels(label_path(image), size)
    inst = inst[[i % len(inst) for i in range(apples)]]
    depth = cv2.imread(str(ds / best["depth"]), cv2.IMREAD_UNCHANGED)
    K = parse_intrinsics(best["intrinsics"], best["file"])
    return best, size, inst, depth, K


def cpu_ms(fn, n: int) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n * 1e3, (time.perf_counter() - w0) / n * 1e3


def time_batches(inst, depth, K, infer, issue_call, batches: int, calls: int) -> tuple[list, list, list, list, list]:
    """Warm-up, then ``batches`` rounds of: the 3D step (CPU and wall), its point gathering, and the yardsticks."""
    from pomona.picking import gather_points, measure

    for _ in range(3):
        measure(inst, depth, K)
        infer()
        issue_call()
    cpu, wall, gather, ref, issue = [], [], [], [], []
    for _ in range(batches):  # the whole step, its first half (each apple's points and outline) and the yardsticks in turn
        c, w = cpu_ms(lambda: measure(inst, depth, K), calls)
        cpu.append(c)
        wall.append(w)
        gather.append(cpu_ms(lambda: gather_points(inst, depth), calls)[0])
        infer()  # each yardstick once untimed: its threads wake from the 3D step's turn before they are timed
        ref.append(cpu_ms(infer, 3)[0])
        issue_call()
        issue.append(cpu_ms(issue_call, 5)[1])
        time.sleep(0.2)  # its spinning threads park before the 3D step is timed again (they would add to its CPU time)
    return cpu, wall, gather, ref, issue


def cost_result(best: dict, size: tuple, apples: int, model: str, input_size: str, cpu: list, wall: list,
                gather: list, ref: list, issue: list) -> dict:
    scale = ISSUE_YARDSTICK_MS / statistics.median(issue)
    return {"apples": apples, "frame": best["file"], "distinct_apples_in_frame": best["apples"],
            "size": [size[1], size[0]], "cpu_ms_best": round(min(cpu), 2), "cpu_ms_median": round(statistics.median(cpu), 2),
            "wall_ms_median": round(statistics.median(wall), 2), "gather_cpu_ms_best": round(min(gather), 2),
            "reference": {"model": model, "input": input_size, "cpu_ms_best": round(min(ref), 2),
                          "cpu_ms_median": round(statistics.median(ref), 2)},
            "issue_yardstick": {"call": "raw ONNX Runtime, default session, model at 320 px", "wall_ms_median":
                                round(statistics.median(issue), 2), "on_issue_machine_ms": ISSUE_YARDSTICK_MS,
                                "cpu_ms_best_scaled": round(min(cpu) * scale, 2),
                                "cpu_ms_median_scaled": round(statistics.median(cpu) * scale, 2)},
            "load_average_1min": os.getloadavg()[0],
            "cores": os.cpu_count()}


def _fmt(stats: dict, scale: float = 1.0, digits: int = 1) -> str:
    if stats["median"] is None:
        return "-"
    return f"{stats['median'] * scale:.{digits}f} / {stats['p90'] * scale:.{digits}f}"


def table(levels: list[dict]) -> list[str]:
    lines = ["| depth noise | masks | true apples | matched | missed | without 3D | centre error, mm (median / p90) | "
             "abs. diameter error, mm (median / p90) | diameter bias, mm | targets met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for lv in levels:
        for kind in ("true_masks", "predicted_masks"):
            t = lv[kind]["target"]
            bias = "-" if t["diameter_bias_mm"] is None else f"{t['diameter_bias_mm']:+.1f}"
            lines.append(f"| {lv['level']} | {kind.replace('_', ' ')} | {t['apples']} | {t['matched']} | {t['missed']} | "
                         f"{t['matched_without_3d']} | {_fmt(t['center_error_m'], 1000)} | {_fmt(t['diameter_error_mm'])} | "
                         f"{bias} | {'yes' if t['met'] else 'no'} |")
    return lines


def breakdown(result: dict, key: str) -> list[str]:
    lines = ["| bin | true apples | matched | without 3D | centre error, mm (median / p90) | abs. diameter error, mm (median / p90) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, b in result[key].items():
        lines.append(f"| {name} | {b['apples']} | {b['matched']} | {b['matched_without_3d']} | "
                     f"{_fmt(b['center_error_m'], 1000)} | {_fmt(b['diameter_error_mm'])} |")
    return lines


def picture(levels: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(levels))
    for ax, key, scale, unit, goal in ((axes[0], "center_error_m", 1000, "median centre error (mm)", 10),
                                       (axes[1], "diameter_error_mm", 1, "median |diameter error| (mm)", 5)):
        for k, (kind, colour) in enumerate((("true_masks", "#4c72b0"), ("predicted_masks", "#dd8452"))):
            vals = [lv[kind]["target"][key]["median"] for lv in levels]
            ax.bar(x + (k - 0.5) * 0.38, [np.nan if v is None else v * scale for v in vals], 0.38, color=colour,
                   label=kind.replace("_", " "))
        ax.axhline(goal, color="k", ls="--", lw=1, label=f"target {goal} mm")
        ax.set_xticks(x, [f"noise {lv['level']}" for lv in levels])
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    fig.suptitle("Picking targets, apples <= 1 m away and >= 50% visible (pomona-apple-n masks vs true masks)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pomona-picking-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    first = args.levels.split(",")[0]
    levels = accuracy_levels(args, work, first)
    spent = cost(work / f"noise{first}", args.model)
    result = {"n": args.n, "size": args.size, "seed": args.seed, "model": args.model, "levels": levels, "cost": spent,
              "minutes": round((time.time() - t0) / 60, 1)}
    (HERE / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    picture(levels, HERE / "picking.png")
    lines = markdown_lines(args, levels, spent)
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--levels", default="0,1,2")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--model", default="pomona-apple-n")
    ap.add_argument("--work", type=Path, default=None, help="Folder for the renders (default: a temporary one).")
    ap.add_argument("--cost-only", action="store_true",
                    help="time the 3D step again and keep the accuracy tables of results.json (same --n/--seed/--levels)")
    return ap.parse_args()


def accuracy_levels(args: argparse.Namespace, work: Path, first: str) -> list[dict]:
    """Each noise level's accuracy: measured now, or (--cost-only) read from results.json, with the first level's
    renders made when missing (the 3D step is timed on them)."""
    if args.cost_only:
        levels = json.loads((HERE / "results.json").read_text())["levels"]
        if not (work / f"noise{first}" / "manifest.jsonl").is_file():
            sh("generate", str(work / f"noise{first}"), "--n", str(args.n), "--size", str(args.size), "--seed",
               str(args.seed), "--depth", "--depth-noise", first)
    else:
        levels = [one_level(work, lv, args.n, args.size, args.seed, args.model) for lv in args.levels.split(",")]
    return levels


def markdown_lines(args: argparse.Namespace, levels: list[dict], spent: dict) -> list[str]:
    """results.md, one line per item."""
    default = next((lv for lv in levels if lv["level"] == "1"), levels[-1])
    return [
        *intro_lines(args),
        *accuracy_lines(levels, default),
        *step_cost_lines(spent),
        *yardstick_lines(spent),
        "![picking](picking.png)",
        "",
    ]


def intro_lines(args: argparse.Namespace) -> list[str]:
    return [
        "# Picking targets from RGB-D (issue 19)",
        "",
        f"`nice -n 10 python benchmarks/picking/run.py --n {args.n} --size {args.size} --levels {args.levels} "
        f"--seed {args.seed}`: {args.n} fresh renders ({args.size} px, seeds {args.seed}-{args.seed + args.n - 1}) per "
        f"depth-noise level, the same images at every level; masks from `{args.model}` through `pomona run --depth`, "
        "and from the renderer's true masks (the error of depth noise and the 3D step alone). Noise level 1 is the "
        "renderer's D435-like default (sigma_z = 9.4 mm at 1 m, growing with z^2, edge holes, dark and saturated "
        "pixels lost); 2 doubles its disparity error; 0 is clean depth.",
        "",
    ]


def accuracy_lines(levels: list[dict], default: dict) -> list[str]:
    return [
        "## Target apples: at most 1 m away, at least 50% visible",
        "",
        "Targets (realistic noise = level 1): median centre error <= 10 mm, median absolute diameter error <= 5 mm.",
        "",
        *table(levels),
        "",
        "\"without 3D\": matched apples that got null 3D fields (too few valid depth points, or a fit that explained "
        "too few of them or ended at the edge of the plausible diameter range). Errors are over the matched apples "
        "with 3D fields.",
        "",
        f"## All apples, noise level {default['level']}, by distance (predicted masks)",
        "",
        *breakdown(default["predicted_masks"], "by_distance"),
        "",
        f"## All apples, noise level {default['level']}, by visible fraction (predicted masks)",
        "",
        *breakdown(default["predicted_masks"], "by_visible_fraction"),
        "",
        f"## All apples, noise level {default['level']}, by distance (true masks)",
        "",
        *breakdown(default["true_masks"], "by_distance"),
        "",
    ]


def step_cost_lines(spent: dict) -> list[str]:
    return [
        "## Cost of the 3D step",
        "",
        f"`pomona.picking.measure` on {spent['apples']} apples of {spent['frame']} ({spent['size'][0]}x{spent['size'][1]}, "
        f"{spent['distinct_apples_in_frame']} distinct apples, repeated to {spent['apples']}): "
        f"**{spent['cpu_ms_best']} ms** CPU per frame at best, {spent['cpu_ms_median']} ms median "
        f"(wall {spent['wall_ms_median']} ms median), on this {spent['cores']}-core machine "
        f"(1-minute load average {spent['load_average_1min']:.1f}). Of that, {spent['gather_cpu_ms_best']} ms is "
        "gathering each apple's depth points and outline (erosion and outlines one OpenCV call for all apples, their "
        "masks packed into one mosaic image; a strided view and one findNonZero per apple); the rest "
        "is the fit, all apples at once (4 Gauss-Newton steps). Target: at most 2 ms per "
        f"frame at 30 apples: **{'met' if spent['cpu_ms_best'] <= 2 else 'not met'}** on this machine.",
        "",
    ]


def yardstick_lines(spent: dict) -> list[str]:
    ref, iss = spent["reference"], spent["issue_yardstick"]
    return [
        f"The yardstick, timed in the same batches: one inference of `{ref['model']}` ({ref['input']}, ONNX Runtime, "
        f"one thread) took {ref['cpu_ms_best']} ms CPU at best ({ref['cpu_ms_median']} median), so the 3D step "
        f"costs **{spent['cpu_ms_best'] / ref['cpu_ms_best']:.0%}** of one inference. CPUs of this kind differ about "
        "2x (issue 17: raw ONNX Runtime on a YOLO11n-seg at 320 px took 7.5 ms on one, 15 ms on another), and one "
        "machine from hour to hour: "
        "compare the ratio across runs, not the milliseconds.",
        "",
        f"The machine the 2 ms target was set on, by the issue's own yardstick: issue 17 timed raw ONNX Runtime on a "
        f"YOLO11n-seg at 320 px (default session) at {iss['on_issue_machine_ms']:.0f} ms there; the same call on "
        f"`{ref['model']}` exported at 320 px took {iss['wall_ms_median']} ms here (median, same batches). Scaled by "
        f"that ratio, the 3D step would take **{iss['cpu_ms_best_scaled']} ms** at best ({iss['cpu_ms_median_scaled']} "
        f"median) there: **{'met' if iss['cpu_ms_best_scaled'] <= 2 else 'not met'}** by that estimate. The estimate "
        "assumes the 3D step (numpy and OpenCV on one core) and ONNX Runtime (every core) speed up alike between the "
        "two machines.",
        "",
    ]


if __name__ == "__main__":
    main()
