"""Scale-out benchmark: procedural rendering on Ray with 1 and 2 workers, Ray's overhead per task and per shard,
and a PROJECTION of wall time on N GPUs from per-image costs (measured here, or cited and marked so).

    nice -n 10 python benchmarks/scale/run.py [--n 48] [--size 640]

Writes benchmarks/scale/results.md and benchmarks/scale/projection.png. Everything runs on this machine with a
local Ray runtime (the two-node cluster of tests/test_cluster.py checks correctness, not speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Per-image costs that are not measured by this script. Each says where it comes from.
CITED = {
    "yolo-sam labelling (YOLO11 + SAM, the paper's GPU)":
        (13.0, "cited: Sapkota et al. (arXiv 2411.11285), 13 s/image"),
    "model labelling (YOLO11n-seg teacher, per CPU worker)":
        (0.122, "measured in this repo: benchmarks/labels/results.md, 2-core CPU, 416 px"),
}
PROJECTED_IMAGES = 100_000
ROUNDS = 3
GPUS = [1, 2, 4, 8, 16, 32, 64, 128]


def _ray_init(ray, cpus: int) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")


def single_machine(workers: int, n: int, size: tuple[int, int], work: Path, tag: str) -> float:
    """images/s of the single-machine renderer: one process (workers=1) or its process pool, no Ray."""
    from pomona.pipeline.generate import generate_procedural
    from pomona.pipeline.prompts import load_prompts

    report = generate_procedural(work / f"single{workers}{tag}", n, size, seed=0, prompts=load_prompts(None),
                                 workers=workers)
    return n / report.seconds


def on_ray(ray, workers: int, n: int, size: tuple[int, int], work: Path, tag: str) -> dict:
    """images/s of `generate --ray local` with ``workers`` CPUs (runtime start-up not included, printed apart)."""
    from pomona.pipeline.cluster.render import generate_procedural_ray
    from pomona.pipeline.prompts import load_prompts

    t0 = time.perf_counter()
    _ray_init(ray, workers)
    started = time.perf_counter() - t0
    # warm-up: the first task on each worker imports the renderer (a second or more); a long job pays it once
    generate_procedural_ray(work / f"warm{workers}{tag}", 2 * workers, (64, 64), 0, load_prompts(None), frozenset(),
                            "local", shard=1)
    report = generate_procedural_ray(work / f"ray{workers}{tag}", n, size, 0, load_prompts(None), frozenset(), "local")
    return {"workers": workers, "start_s": started, "seconds": report.run.seconds,
            "images_per_s": report.rendered / report.run.seconds, "nodes": report.run.per_node()}


def overheads(ray, work: Path, calls: int = 200) -> dict:
    """Ray's cost per task (a no-op) and per shard (a render shard with no images: scratch folder, node name,
    result object), one at a time (latency) and all submitted at once (throughput, 2 CPUs)."""
    from pomona.pipeline.cluster.render import render_shard
    from pomona.pipeline.cluster.store import Store

    noop = ray.remote(lambda: None)
    shard = ray.remote(render_shard)
    store = Store(work / "overhead")
    ray.get([noop.remote() for _ in range(20)] + [shard.remote(store, []) for _ in range(20)])  # warm workers
    result = {}
    for name, call in (("task", lambda: noop.remote()), ("shard", lambda: shard.remote(store, []))):
        lat = []
        for _ in range(calls // 4):
            t0 = time.perf_counter()
            ray.get(call())
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray.get([call() for _ in range(calls)])
        result[name] = {"latency_ms": 1000 * statistics.median(lat),
                        "throughput_ms": 1000 * (time.perf_counter() - t0) / calls}
    return result


def projection(render_s: float, shard_overhead_s: float, shard_size: int) -> list[dict]:
    """Wall hours for PROJECTED_IMAGES on N workers, assuming linear scaling plus Ray's measured overhead."""
    costs = {"procedural rendering (per CPU worker, 640 px)": (render_s, "measured here")}
    costs.update(CITED)
    rows = []
    for what, (per_image, source) in costs.items():
        per_image_on_ray = per_image + shard_overhead_s / shard_size
        rows.append({"what": what, "s_per_image": per_image, "source": source,
                     "hours": {n: PROJECTED_IMAGES * per_image_on_ray / n / 3600 for n in GPUS}})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:
        label = f"{row['what']} ({row['s_per_image']:.3g} s/img)"
        ax.plot(GPUS, [row["hours"][n] for n in GPUS], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers (GPUs; CPU workers for rendering)")
    ax.set_ylabel(f"hours for {PROJECTED_IMAGES:,} images")
    ax.set_title("PROJECTION: linear scaling + measured Ray overhead")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_results(args, best: dict, ray_runs: dict, over: dict, rows: list[dict], load: tuple) -> Path:
    single_s = 1 / best[("pool", 1)]
    lines = [
        *header_lines(args, load),
        *rendering_lines(args, best, ray_runs, single_s),
        *overhead_lines(over, single_s),
        *projection_lines(rows),
    ]
    path = HERE / "results.md"
    path.write_text("\n".join(lines))
    return path


def header_lines(args, load: tuple) -> list[str]:
    return [
        "# Scale-out on Ray: measured throughput and overhead, projected wall time",
        "",
        f"Command: `nice -n 10 python benchmarks/scale/run.py --n {args.n} --size {args.size}` "
        f"(Ray {args.ray_version}, Python {platform.python_version()}, {os.cpu_count()} CPU cores).",
        f"**The machine was shared** (other jobs training and testing; load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the start), and this script ran under `nice -n 10`: absolute numbers are low and noisy, "
        f"the ratios between rows are what to read.",
        "",
    ]


def rendering_lines(args, best: dict, ray_runs: dict, single_s: float) -> list[str]:
    return [
        f"## Measured: procedural rendering, {args.n} images at {args.size}x{args.size} "
        f"(best of {ROUNDS} alternating runs)",
        "",
        "| how | workers | images/s | s/image | note |",
        "|---|---|---|---|---|",
        f"| one machine, one process (`--workers 1`) | 1 | {best[('pool', 1)]:.2f} | {single_s:.3f} | no Ray |",
        f"| `generate --ray local` | 1 | {best[('ray', 1)]:.2f} | {1 / best[('ray', 1)]:.3f} | Ray start "
        f"{ray_runs[1]['start_s']:.1f} s, not included |",
        f"| one machine, process pool (`--workers 2`) | 2 | {best[('pool', 2)]:.2f} | {1 / best[('pool', 2)]:.3f} | no "
        f"Ray; {best[('pool', 2)] / best[('pool', 1)]:.2f}x one process |",
        f"| `generate --ray local` | 2 | {best[('ray', 2)]:.2f} | {1 / best[('ray', 2)]:.3f} | Ray start "
        f"{ray_runs[2]['start_s']:.1f} s, not included; {best[('ray', 2)] / best[('ray', 1)]:.2f}x one Ray worker, "
        f"{best[('ray', 2)] / best[('pool', 2)]:.2f}x the process pool |",
        "",
        f"Two workers give {best[('ray', 2)] / best[('ray', 1)]:.2f}x one on Ray and "
        f"{best[('pool', 2)] / best[('pool', 1)]:.2f}x one with the process pool, against an ideal 2x: the second "
        f"core was also serving the other jobs on this machine. Ray and the pool are within the run-to-run noise of "
        f"each other; Ray's own cost is the table below.",
        "",
    ]


def overhead_lines(over: dict, single_s: float) -> list[str]:
    return [
        "## Measured: Ray's overhead (2-CPU local runtime)",
        "",
        "| unit | one at a time (latency) | many in flight (per call) | what it includes |",
        "|---|---|---|---|",
        f"| task | {over['task']['latency_ms']:.2f} ms | {over['task']['throughput_ms']:.2f} ms | a no-op remote "
        f"function: submit, schedule, return |",
        f"| shard | {over['shard']['latency_ms']:.2f} ms | {over['shard']['throughput_ms']:.2f} ms | a render shard with "
        f"no images: the task, its arguments (the store), a scratch folder, the node name, the result |",
        "",
        f"A shard holds up to 32 images (`pipeline/cluster/render.py`, `default_shard`), so at "
        f"{single_s:.2f} s/image the per-shard overhead is {over['shard']['throughput_ms'] / 1000 / (32 * single_s):.2%} "
        f"of a full shard's work (on an idle machine, 0.28 s/image per core from the README's 14.4 images/s on 2 "
        f"cores: {over['shard']['throughput_ms'] / 1000 / (32 * 0.28):.2%}). Each image also pays its publishing "
        f"(a copy from the worker's scratch folder and "
        f"a small record file); that is inside the images/s above.",
        "",
    ]


def projection_lines(rows: list[dict]) -> list[str]:
    lines = [
        f"## PROJECTION (not measured): hours for {PROJECTED_IMAGES:,} images on N workers",
        "",
        "Linear scaling with N plus the measured per-shard overhead (32-image shards). The GPU costs are per "
        "image per GPU and are **cited or measured elsewhere**, as the source column says; no GPU was available "
        "here. Text-to-image generation (diffusers) has no measured per-image cost in this repo "
        "(docs/diffusers.md: not measured), so it is not projected; time a 64-image run on the target GPU and "
        "add a row.",
        "",
        "| per-image work | s/image | source | " + " | ".join(f"N={n}" for n in GPUS) + " |",
        "|---|---|---|" + "---|" * len(GPUS),
    ]
    for row in rows:
        lines.append(f"| {row['what']} | {row['s_per_image']:.3g} | {row['source']} | "
                     + " | ".join(f"{row['hours'][n]:.2f}" for n in GPUS) + " |")
    lines += [
        "",
        "![projection](projection.png)",
        "",
        "What the projection says: the paper's labeller (13 s/image) needs about "
        f"{rows[1]['hours'][1]:.0f} GPU-hours for {PROJECTED_IMAGES:,} images, so one GPU takes "
        f"{rows[1]['hours'][1] / 24:.0f} days and 64 GPUs about {rows[1]['hours'][64]:.1f} hours; Ray's overhead "
        f"(milliseconds per shard) is negligible next to seconds per image. It assumes the work is "
        f"embarrassingly parallel (it is: every image is independent) and that storage keeps up; it does not "
        f"include model loading per actor (once per GPU) or cluster start-up.",
        "",
    ]
    return lines


def main() -> None:
    args = parse_args()
    import ray

    args.ray_version = ray.__version__
    if args.from_json:
        rewrite_from_json(args)
        return
    load = os.getloadavg()
    best, ray_runs, over = measure_rounds(ray, args)
    single_s = 1 / best[("pool", 1)]
    rows = projection(single_s, over["shard"]["throughput_ms"] / 1000, 32)
    plot(rows, HERE / "projection.png")
    (HERE / "results.json").write_text(json.dumps({"best_images_per_s": {f"{k[0]}-{k[1]}": v for k, v in best.items()},
                                                   "ray_start_s": {w: r["start_s"] for w, r in ray_runs.items()},
                                                   "overhead_ms": over, "load_average": load, "n": args.n,
                                                   "size": args.size}, indent=2) + "\n")
    print(write_results(args, best, ray_runs, over, rows, load))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images per measured run")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--from-json", action="store_true", help="rewrite results.md and the png from results.json")
    return parser.parse_args()


def rewrite_from_json(args) -> None:
    saved = json.loads((HERE / "results.json").read_text())
    args.n, args.size = saved["n"], saved["size"]
    best = {(k.split("-")[0], int(k.split("-")[1])): v for k, v in saved["best_images_per_s"].items()}
    ray_runs = {int(w): {"start_s": v} for w, v in saved["ray_start_s"].items()}
    over = saved["overhead_ms"]
    rows = projection(1 / best[("pool", 1)], over["shard"]["throughput_ms"] / 1000, 32)
    plot(rows, HERE / "projection.png")
    print(write_results(args, best, ray_runs, over, rows, tuple(saved["load_average"])))


def measure_rounds(ray, args) -> tuple[dict, dict, dict]:
    """Best images/s per configuration, the Ray runs they came from, and Ray's overheads."""
    size = (args.size, args.size)
    work = Path(tempfile.mkdtemp(prefix="pomona-scale-"))
    # Each configuration runs ROUNDS times, alternating, and keeps its best: on a shared machine the load moves
    # under a run, and the best of a few runs is the least disturbed one.
    best: dict[tuple[str, int], float] = {}
    ray_runs: dict[int, dict] = {}
    try:
        for round_ in range(ROUNDS):
            for workers in (1, 2):
                rate = single_machine(workers, args.n, size, work, f"r{round_}")
                best[("pool", workers)] = max(best.get(("pool", workers), 0.0), rate)
                print(f"round {round_}: single machine, {workers} worker(s): {rate:.2f} images/s")
                run = on_ray(ray, workers, args.n, size, work, f"r{round_}")
                if run["images_per_s"] > best.get(("ray", workers), 0.0):
                    best[("ray", workers)], ray_runs[workers] = run["images_per_s"], run
                print(f"round {round_}: ray, {workers} worker(s): {run['images_per_s']:.2f} images/s")
                if workers == 2 and round_ == ROUNDS - 1:
                    over = overheads(ray, work)
                    print(f"overhead: {over}")
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return best, ray_runs, over


if __name__ == "__main__":
    main()
