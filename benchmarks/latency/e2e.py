"""Whole-command throughput: `pomona run` vs Ultralytics predict, as a user runs them (issue 17's method).

    python benchmarks/latency/e2e.py [--model pomona-apple-n] [--reps 5] [--sources folder,video]

Setup: 60 frames rendered by `pomona generate DIR --n 60 --seed S` (640x640), the same frames as an .mp4
(OpenCV, mp4v), the model at 320 px (the shipped .pt, and an ONNX export of it at 320 when the shipped
.onnx is fixed at another size), --conf 0.05. Each command is timed as a whole process on 60 frames and on
1 frame; time per frame = (t60 - t1) / 59, so start-up (imports, model load) cancels out:

    pomona run MODEL.onnx --source SRC --imgsz 320 --conf 0.05 --jsonl x.jsonl
    python -c "for r in YOLO(M).predict(SRC, imgsz=320, conf=0.05, stream=True): pass"   (M = .onnx, .pt)

plus pomona with its measured choices switched one at a time: one frame at a time on both cores instead of
one frame per core (POMONA_FRAMES_AT_ONCE=1), the same with ONNX Runtime's threads spinning, and
post-processing inline instead of in its own thread (POMONA_PIPELINE=0). Commands run round-robin, every other
repetition in reverse (A B C, C B A, ...; each command's 60-frame and 1-frame runs swap too), so load from
other jobs and a drifting machine hit all of them alike; medians of --reps repetitions; ratios are paired within a repetition.
A second reading, best of the repetitions: (fastest t60 - fastest t1) / 59 per command. Load from other jobs
only ever adds time, and Ultralytics' start-up (4-5 s against its 2-3 s of frames) swings by more than a
second, so a paired difference inherits that swing; the fastest runs are each command on a quiet machine.
With --long-frames N, the same method once more on N frames (pomona run and the baselines only): each
command's start-up swing is then spread over N - 1 frames instead of 59, so the per-frame figures are
steadier. Then the stage percentiles of the default pomona configuration (edge.bench: model = pre + infer + post,
render = drawing) over --tail-frames frames, for tail latency.

With --replicate, only the 60-frame reading of pomona run and the baselines once more, kept beside the first
in e2e.json; the report then gives each run's ratios and the median over every repetition of all runs (a single
repetition swings 1.0-3.0x with Ultralytics' start-up, so the pooled median is the steadier verdict).

Writes e2e.json and e2e.png here and rewrites results.md (run.py's tables from results.json, then this section).
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

HERE = Path(__file__).resolve().parent
PY = sys.executable
_SCRIPT = Path(PY).parent / "pomona"  # the console script a user types; the module where it is not installed
POMONA = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "pomona.cli"]

VARIANTS = {  # label -> environment for `pomona run` (the default is what the runtime ships with)
    "pomona run": {},
    "pomona run, 1 frame at a time (POMONA_FRAMES_AT_ONCE=1)": {"POMONA_FRAMES_AT_ONCE": "1"},
    "pomona run, 1 frame at a time, ORT spinning (+ POMONA_ORT_SPINNING=1)": {"POMONA_FRAMES_AT_ONCE": "1",
                                                                              "POMONA_ORT_SPINNING": "1"},
    "pomona run, post-processing inline (POMONA_PIPELINE=0)": {"POMONA_PIPELINE": "0"},
}
BASELINES = ("Ultralytics predict .onnx", "Ultralytics predict .pt")
TARGETS = {"Ultralytics predict .onnx": 1.4, "Ultralytics predict .pt": 2.5}  # issue 17: pomona's ratio to each


def setup(work: Path, model: str, imgsz: int, n: int, seed: int) -> dict:
    """Frames (folder + mp4, n and 1), the .pt and an ONNX at ``imgsz``; reuses what ``work`` holds."""
    import cv2

    from pomona.models import resolve_model

    work.mkdir(parents=True, exist_ok=True)
    gen = work / "frames"
    if not (gen / "images").is_dir() or len(list((gen / "images").glob("*.jpg"))) != n:
        shutil.rmtree(gen, ignore_errors=True)
        subprocess.run([*POMONA, "generate", str(gen), "--n", str(n), "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
    images = sorted((gen / "images").glob("*.jpg"))
    one = work / "one"
    one.mkdir(exist_ok=True)
    shutil.copyfile(images[0], one / images[0].name)
    videos = {}
    for name, paths in (("many", images), ("one", images[:1])):
        path = work / f"{name}.mp4"
        if not path.exists():
            h, w = cv2.imread(str(paths[0])).shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (w, h))
            for p in paths:
                writer.write(cv2.imread(str(p)))
            writer.release()
        videos[name] = path
    pt = resolve_model(model, prefer="pt")
    onnx = resolve_model(model, prefer="onnx")
    onnx_note = f"{onnx.name} (shipped)"
    import onnxruntime as ort

    shape = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    if shape[2:] != [imgsz, imgsz]:  # a fixed input of another size: export the .pt at imgsz
        onnx = work / f"{pt.stem}-{imgsz}.onnx"
        if not onnx.exists():
            subprocess.run([*POMONA, "export", str(pt), "--imgsz", str(imgsz), "--out", str(onnx)], check=True,
                           stdout=subprocess.DEVNULL)
        onnx_note = (f"{onnx.name}: `pomona export {pt.name} --imgsz {imgsz}` (the shipped .onnx is fixed at "
                     f"{shape[3]}x{shape[2]})")
    from pomona.dataset import read_manifest

    apples = round(sum(r["apples"] for r in read_manifest(gen)) / len(images), 2)
    return {"folder": (str(gen / "images"), str(one)), "video": (str(videos["many"]), str(videos["one"])),
            "apples_per_frame": apples,
            "pt": str(pt), "onnx": str(onnx), "onnx_note": onnx_note, "frames": len(images),
            "frame_size": f"{cv2.imread(str(images[0])).shape[1]}x{cv2.imread(str(images[0])).shape[0]}"}


def commands(s: dict, src: str, imgsz: int, conf: float, jsonl: Path) -> dict[str, tuple[list[str], dict]]:
    ul = ("from ultralytics import YOLO\nfor r in YOLO({m!r}).predict({src!r}, imgsz={imgsz}, conf={conf}, "
          "stream=True): pass")
    out = {label: ([*POMONA, "run", s["onnx"], "--source", src, "--imgsz", str(imgsz), "--conf", str(conf),
                    "--jsonl", str(jsonl)], env) for label, env in VARIANTS.items()}
    out["Ultralytics predict .onnx"] = ([PY, "-c", ul.format(m=s["onnx"], src=src, imgsz=imgsz, conf=conf)], {})
    out["Ultralytics predict .pt"] = ([PY, "-c", ul.format(m=s["pt"], src=src, imgsz=imgsz, conf=conf)], {})
    return out


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode()[-2000:]}")
    return seconds


def measure(s: dict, source: str, labels: list[str], reps: int, imgsz: int, conf: float, work: Path) -> dict:
    """ms per frame of each command, round-robin over ``reps`` repetitions (A B C, then C B A, ...)."""
    many, one = s[source]
    jsonl = work / "x.jsonl"
    cmd_many, cmd_one = commands(s, many, imgsz, conf, jsonl), commands(s, one, imgsz, conf, jsonl)
    per = {label: [] for label in labels}
    raw = {label: [] for label in labels}
    for rep in range(reps):
        # every other repetition runs the commands, and each command's two runs, in reverse (A B B A): a machine
        # that slows down or speeds up over the benchmark then shifts both runs of a pair alike, not only one
        for label in (labels if rep % 2 == 0 else labels[::-1]):
            if rep % 2 == 0:
                t_many, t_one = wall(*cmd_many[label]), wall(*cmd_one[label])
            else:
                t_one, t_many = wall(*cmd_one[label]), wall(*cmd_many[label])
            per[label].append((t_many - t_one) / (s["frames"] - 1) * 1e3)
            raw[label].append([round(t_many, 3), round(t_one, 3)])
            print(f"{source} rep {rep + 1}/{reps} {label}: {per[label][-1]:.1f} ms/frame", file=sys.stderr, flush=True)
    ours = per["pomona run"]
    ratios = {b: [u / o for u, o in zip(per[b], ours)] for b in BASELINES if b in per}
    return {"ms_per_frame": {k: [round(v, 2) for v in vals] for k, vals in per.items()},
            "median_ms": {k: round(statistics.median(v), 2) for k, v in per.items()},
            "seconds_60_1": raw,
            "ratio_vs_pomona": {b: {"median": round(statistics.median(r), 3), "min": round(min(r), 3),
                                    "max": round(max(r), 3)} for b, r in ratios.items()}}


def best_of(res: dict, frames: int) -> dict:
    """The best-of-repetitions reading from the stored wall times: per command (fastest t60 - fastest t1) /
    (frames - 1) in ms, and each baseline's ratio to pomona run."""
    ms = {label: round((min(t[0] for t in runs) - min(t[1] for t in runs)) / (frames - 1) * 1e3, 2)
          for label, runs in res["seconds_60_1"].items()}
    return {"ms": ms, "ratio": {b: round(ms[b] / ms["pomona run"], 3) for b in BASELINES if b in ms}}


def long_reading(a: argparse.Namespace, work: Path) -> dict:
    """pomona run and the baselines on --long-frames frames, each source (frames in a folder of their own)."""
    long_work = work / f"long{a.long_frames}"
    s = setup(long_work, a.model, a.imgsz, a.long_frames, a.seed)
    out = {"frames": s["frames"], "reps": a.long_reps, "apples_per_frame": s["apples_per_frame"],
           "load_before": list(os.getloadavg()), "sources": {}}
    for src in a.sources.split(","):
        out["sources"][src] = measure(s, src, ["pomona run", *BASELINES], a.long_reps, a.imgsz, a.conf, long_work)
    out["load_after"] = list(os.getloadavg())
    return out


def replicate(a: argparse.Namespace, s: dict, work: Path, out_json: Path) -> None:
    """--replicate: the same reading once more (pomona run and the baselines, each source), kept in e2e.json
    beside the first, for a pooled median over every repetition."""
    e = json.loads(out_json.read_text())
    if (e["frames"], e["imgsz"], e["conf"], e["seed"]) != (s["frames"], a.imgsz, a.conf, a.seed):
        raise SystemExit("--replicate needs the frames, imgsz, conf and seed of the reading in e2e.json")
    rep = {"command": "python benchmarks/latency/e2e.py " + " ".join(sys.argv[1:]), "reps": a.reps, "note": a.note,
           "load_before": list(os.getloadavg()), "sources": {}}
    for src in a.sources.split(","):
        rep["sources"][src] = measure(s, src, ["pomona run", *BASELINES], a.reps, a.imgsz, a.conf, work)
    rep["load_after"] = list(os.getloadavg())
    e.setdefault("replications", []).append(rep)
    out_json.write_text(json.dumps(e, indent=2) + "\n")
    write_results_md(e)
    print("\n".join(_replication_lines(e)))


def _replication_lines(e: dict) -> list[str]:
    """Each replication's ratios, then the pooled median of every repetition's paired ratio, with its quartiles."""
    reps = e.get("replications") or []
    if not reps:
        return []
    lines = ["", f"The {e['frames']}-frame reading repeated (`--replicate`), same frames and models, later the same day:", ""]
    for i, r in enumerate(reps, 1):
        ratios = "; ".join(f"{src} {rr['ratio_vs_pomona'][b]['median']:.2f}x vs {b.split()[-1]}"
                           + ("" if rr["ratio_vs_pomona"][b]["median"] >= TARGETS[b] else " (**below** its target)")
                           for src, rr in r["sources"].items() for b in BASELINES)
        lines.append(f"- replication {i} ({r['reps']} repetitions, load {r['load_before'][0]:.1f} before): {ratios}")
    lines += ["", f"Pooled, every repetition of the {1 + len(reps)} runs (median of the paired ratios, quartiles, share of "
              "repetitions at or above the target):", ""]
    for src in e["sources"]:
        runs = [e["sources"][src]] + [r["sources"][src] for r in reps if src in r["sources"]]
        for b in BASELINES:
            ratios = [u / p for res in runs for u, p in zip(res["ms_per_frame"][b], res["ms_per_frame"]["pomona run"])]
            q1, median, q3 = statistics.quantiles(ratios, n=4)  # the middle one is the median
            share = sum(r >= TARGETS[b] for r in ratios) / len(ratios)
            ok = "met" if median >= TARGETS[b] else "**missed**"
            lines.append(f"- {src}, vs {b}: **{median:.2f}x** (quartiles {q1:.2f}-{q3:.2f}, "
                         f"{len(ratios)} repetitions, {share:.0%} at or above {TARGETS[b]}x); target: {ok}")
    return lines


ORT_FLOOR = """
import glob, json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import cv2
from pomona.edge.backends import OnnxBackend
from pomona.edge.processing import letterbox, to_blob
from pomona.machine import cpu_cores
model, folder, imgsz = sys.argv[1], sys.argv[2], int(sys.argv[3])
k = cpu_cores()
backend = OnnxBackend(Path(model), threads=1 if k > 1 else None)
blobs = [to_blob(letterbox(cv2.imread(f), (imgsz, imgsz))[0]) for f in sorted(glob.glob(folder + "/*.jpg"))]
best = float("inf")
with ThreadPoolExecutor(k) as pool:
    for rep in range(4):
        t0 = time.perf_counter()
        list(pool.map(backend, blobs))
        best = min(best, (time.perf_counter() - t0) / len(blobs) * 1e3) if rep else best
print(json.dumps({"ms_per_frame": round(best, 2), "frames_at_once": k}))
"""


def ort_floor(s: dict, imgsz: int) -> dict:
    """The bare model as pomona runs it on files: ONNX Runtime's ``session.run`` alone, one frame per core, on
    blobs prepared in advance (best of 3 passes over the frames, after one warm-up pass), in a child. What
    pomona run's whole command adds to this is decoding, pre- and post-processing, JSONL and threads."""
    proc = subprocess.run([PY, "-c", ORT_FLOOR, s["onnx"], s["folder"][0], str(imgsz)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tail(s: dict, frames: int, conf: float, imgsz: int) -> dict:
    """Stage percentiles of the default runtime configuration, in a child (edge.bench: no capture thread)."""
    code = ("import json,sys; from pomona.edge.bench import bench; "
            f"r = bench({s['onnx']!r}, {s['folder'][0]!r}, frames={frames}, conf={conf}, imgsz={imgsz}, per_frame=True); "
            "print(json.dumps(r))")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    pf = r["per_frame"]
    model = np.asarray(pf["model_ms"])
    render = np.asarray(pf["render_ms"])
    pct = lambda a: {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
                     "max": round(float(a.max()), 2)}
    return {"frames": frames, "apples_mean": round(r["apples_mean"], 1), "apples_max": r["apples_max"],
            "model_plus_post_ms": pct(model), "render_ms": pct(render),
            "stages_ms": r["stages_ms"], "peak_rss_mb": round(r["peak_rss_mb"], 1)}


def plot(e: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readings = [(e["frames"], e["sources"])] + ([(e["long"]["frames"], e["long"]["sources"])] if e.get("long") else [])
    sources = [src for src in ("folder", "video") if src in e["sources"]]
    fig, axes = plt.subplots(len(readings), len(sources), figsize=(6.5 * len(sources), 4.2 * len(readings)),
                             squeeze=False)
    for row, (frames, by_source) in zip(axes, readings):
        for ax, src in zip(row, sources):
            if src in by_source:
                _bars(ax, src, by_source[src], frames, (e.get("ort_floor") or {}).get("ms_per_frame"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bars(ax, src: str, res: dict, frames: int, floor_ms: float | None = None) -> None:
    labels = list(res["median_ms"])
    if floor_ms:
        ax.axvline(floor_ms, color="tab:green", ls="--", lw=1,
                   label=f"the bare model as pomona runs it (ONNX Runtime alone): {floor_ms:.1f} ms")
        ax.legend(loc="lower right", fontsize=7)
    y = range(len(labels))
    colours = ["tab:green" if lab.startswith("pomona") else "tab:gray" for lab in labels]
    ax.barh(list(y), [res["median_ms"][lab] for lab in labels], color=colours, alpha=0.8)
    for i, lab in enumerate(labels):
        ax.plot(res["ms_per_frame"][lab], [i] * len(res["ms_per_frame"][lab]), "k.", ms=4)
    ax.set_yticks(list(y), [lab.replace(" (", "\n(") for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ratio = res["ratio_vs_pomona"]
    ax.set_title(f"{src}, {frames} frames: pomona {ratio['Ultralytics predict .onnx']['median']:.2f}x Ultralytics "
                 f".onnx, {ratio['Ultralytics predict .pt']['median']:.2f}x .pt", fontsize=9)
    ax.set_xlabel(f"ms per frame, whole command ((t{frames} - t1) / {frames - 1}); dots: repetitions")
    ax.grid(axis="x", alpha=0.3)


def markdown(e: dict) -> str:
    m = e["machine"]
    lines = ["## End to end: the whole command, as a user runs it", "",
             f"{m['cpu']}, {m['cores']} cores, onnxruntime {m.get('onnxruntime')}, OpenCV {m['opencv']}. "
             f"{e['frames']} frames of {e['frame_size']} rendered by `pomona generate DIR --n {e['frames']} --seed "
             f"{e['seed']}` (folder, and the same frames as an mp4), imgsz {e['imgsz']}, conf {e['conf']}. "
             f"Models: {e['onnx_note']}; `{Path(e['pt']).name}` for Ultralytics' .pt. Time per frame = (wall time of the "
             f"whole command on {e['frames']} frames - on 1 frame) / {e['frames'] - 1}; commands round-robin, "
             f"every other repetition in reverse; median of {e['reps']} repetitions; ratios paired within a "
             "repetition (median, min-max): the verdicts. A second reading, best of "
             f"{e['reps']}: (fastest t{e['frames']} - fastest t1) / {e['frames'] - 1} per command. Load from other jobs "
             "only adds time, but Ultralytics' 3-5 s start-up swings by more than a second, and the fastest long run "
             "of a command may be one whose start-up was fast: then this reading puts it below its own model time. "
             "So it swings as much as a single repetition does, and is shown, not judged by. "
             f"Command: `{e['command']}`.", "",
             f"Load average before / after: {' '.join(f'{v:.1f}' for v in e['load_before'])} / "
             f"{' '.join(f'{v:.1f}' for v in e['load_after'])}. {e.get('note', '')}".rstrip(), ""]
    lines += _reading_lines(e["sources"], e["frames"], e["reps"])
    lines += _replication_lines(e)
    lines += _floor_lines(e)
    if e.get("long"):
        lg = e["long"]
        lines += ["", f"The same method on {lg['frames']} frames (`--long-frames {lg['frames']}`, {lg['reps']} repetitions, "
                  f"frames from the same seed, the first {e['frames']} of them those above; {lg.get('apples_per_frame', '?')} rendered "
                  f"apples per frame against {e.get('apples_per_frame', '?')}): each command's start-up swing is spread over "
                  f"{lg['frames'] - 1} frames instead of {e['frames'] - 1}. Load average before / after: "
                  f"{' '.join(f'{v:.1f}' for v in lg['load_before'])} / {' '.join(f'{v:.1f}' for v in lg['load_after'])}.",
                  ""]
        lines += _reading_lines(lg["sources"], lg["frames"], lg["reps"])
    lines += _tail_lines(e.get("tail"))
    lines += ["", "![whole-command time per frame](e2e.png)", ""]
    return "\n".join(lines)


def _reading_lines(by_source: dict, frames: int, reps: int) -> list[str]:
    """One reading's table (each command's ms per frame) and its ratios against the targets."""
    lines = ["| command | " + " | ".join(f"{src} ms/frame | {src}, best of {reps}" for src in by_source) + " |",
             "|---|" + "---|---|" * len(by_source)]
    best = {src: best_of(res, frames) for src, res in by_source.items()}
    for label in list(next(iter(by_source.values()))["median_ms"]):
        cells = []
        for src, res in by_source.items():
            v = res["median_ms"].get(label)
            cells.append("- | -" if v is None else f"{v:.1f} ({min(res['ms_per_frame'][label]):.1f}-"
                                                   f"{max(res['ms_per_frame'][label]):.1f}) | {best[src]['ms'][label]:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"pomona run (default) vs Ultralytics, same frames, same run, {frames} frames (target: >= 1.4x on "
              "the .onnx, >= 2.5x on the .pt):", ""]
    for src, res in by_source.items():
        for b, r in res["ratio_vs_pomona"].items():
            target = TARGETS[b]
            ok = "met" if r["median"] >= target else "**missed**"
            b_ratio = best[src]["ratio"][b]
            b_ok = "above" if b_ratio >= target else "below"
            lines.append(f"- {src}, vs {b}: **{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f}); target "
                         f"{target}x: {ok}. Best of {reps}: {b_ratio:.2f}x ({b_ok})")
    return lines


def _floor_lines(e: dict) -> list[str]:
    """How close pomona run comes to the bare model (ONNX Runtime alone), when that was measured."""
    f = e.get("ort_floor")
    if not f:
        return []
    ours = {src: res["median_ms"]["pomona run"] for src, res in e["sources"].items()}
    over = ", ".join(f"{src} {ms:.1f} ms (+{ms - f['ms_per_frame']:.1f})" for src, ms in ours.items())
    return ["", f"For scale, the bare model as pomona runs it (ONNX Runtime's `session.run` alone, {f['frames_at_once']} "
            f"frames at a time, blobs prepared in advance, same frames): **{f['ms_per_frame']:.1f} ms per frame**. "
            f"pomona run's whole command: {over}: decoding, letterboxing, masks at source resolution, polygons and "
            "JSONL, on the same two cores. Ultralytics' .onnx command adds its own pre- and post-processing to the "
            "same model, one frame at a time."]


def _tail_lines(t: dict | None) -> list[str]:
    """The tail-latency table of the default runtime (edge.bench), when it was measured."""
    if not t:
        return []
    mp, rd = t["model_plus_post_ms"], t["render_ms"]
    return ["", f"Tail latency of the default runtime (edge.bench on the same frames, {t['frames']} frames, "
            f"{t['apples_mean']} apples per frame on average, up to {t['apples_max']}; synchronous, no capture "
            "thread):", "", "| stage | p50 ms | p99 ms | max ms | p99 / p50 |", "|---|---|---|---|---|",
            f"| model + post-processing | {mp['p50']:.2f} | {mp['p99']:.2f} | {mp['max']:.2f} | "
            f"{mp['p99'] / mp['p50']:.2f} (target <= 2) |",
            f"| drawing | {rd['p50']:.2f} | {rd['p99']:.2f} | {rd['max']:.2f} | {rd['p99'] / rd['p50']:.2f} |"]


def write_results_md(e: dict) -> None:
    """results.md = run.py's tables (from results.json) + this section."""
    sys.path.insert(0, str(HERE))
    import run as latency_run

    base = latency_run.markdown(json.loads((HERE / "results.json").read_text())) if (HERE / "results.json").exists() else ""
    marker = "\n## End to end: the whole command"
    base = base.split(marker)[0].rstrip() + "\n\n"
    (HERE / "results.md").write_text(base + markdown(e))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pomona-apple-n", help="a shipped model's name or a .pt (an .onnx beside it)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--conf", type=float, default=0.05)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--sources", default="folder,video")
    p.add_argument("--variants", default="folder", help="sources on which pomona's alternatives run too")
    p.add_argument("--long-frames", type=int, default=0, help="also the same method on this many frames (0: not)")
    p.add_argument("--long-reps", type=int, default=5)
    p.add_argument("--tail-frames", type=int, default=300, help="0: skip the tail-latency run")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--merge", action="store_true", help="keep sources already in e2e.json that this run skips")
    p.add_argument("--replicate", action="store_true",
                   help="only the --frames reading of pomona run and the baselines again, added to e2e.json as a "
                        "replication (the report pools every repetition)")
    p.add_argument("--note", default="")
    p.add_argument("--from-json", action="store_true", help="only rewrite results.md and e2e.png from e2e.json")
    a = p.parse_args()
    out_json = HERE / "e2e.json"
    if a.from_json:
        e = json.loads(out_json.read_text())
        plot(e, HERE / "e2e.png")
        write_results_md(e)
        return
    from pomona.edge.bench import machine_info

    work = a.work or Path(tempfile.mkdtemp(prefix="pomona-e2e-"))
    s = setup(work, a.model, a.imgsz, a.frames, a.seed)
    if a.replicate:
        replicate(a, s, work, out_json)
        return
    e = json.loads(out_json.read_text()) if a.merge and out_json.exists() else {"sources": {}}
    e.pop("replications", None)  # they repeated the reading this run replaces
    e.update({"command": "python benchmarks/latency/e2e.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
              "imgsz": a.imgsz, "conf": a.conf, "frames": s["frames"], "frame_size": s["frame_size"], "seed": a.seed,
              "reps": a.reps, "onnx_note": s["onnx_note"], "pt": s["pt"], "note": a.note,
              "apples_per_frame": s["apples_per_frame"],
              "load_before": list(os.getloadavg())})
    for src in a.sources.split(","):
        labels = (list(VARIANTS) if src in a.variants.split(",") else ["pomona run"]) + list(BASELINES)
        e["sources"][src] = measure(s, src, labels, a.reps, a.imgsz, a.conf, work)
    e["ort_floor"] = ort_floor(s, a.imgsz)
    e.pop("long", None)
    if a.long_frames:
        e["long"] = long_reading(a, work)
    if a.tail_frames:
        e["tail"] = tail(s, a.tail_frames, a.conf, a.imgsz)
    e["load_after"] = list(os.getloadavg())
    out_json.write_text(json.dumps(e, indent=2) + "\n")
    plot(e, HERE / "e2e.png")
    write_results_md(e)
    print(markdown(e))


if __name__ == "__main__":
    main()
