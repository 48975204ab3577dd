"""Counting error of tracking on the renderer's drive-by video.

    python benchmarks/counting/run.py MODEL [--frames 90] [--seeds 0 1 2]

Renders drive-by clips (pomona.pipeline.procedural.render_driveby: driveby.mp4 + driveby.json with the
true number of distinct apples), runs `pomona run --track` logic on each, and reports
|counted - true| / true. Writes results.json and results.md next to this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".onnx (or .engine/.pt) model")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", default="640x360")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--out", default=str(HERE))
    a = p.parse_args()
    from pomona.edge.runner import run
    from pomona.pipeline.procedural import render_driveby

    w, h = (int(v) for v in a.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pomona-count-") as tmp:
        for seed in a.seeds:
            clip = Path(tmp) / f"seed{seed}"
            true = int(render_driveby(clip, frames=a.frames, seed=seed, size=(w, h))["distinct_apples"])
            summary = run(a.model, str(clip / "driveby.mp4"), conf=a.conf, track=True, quiet=True)
            counted = int(summary["distinct_apples"])
            rows.append({"seed": seed, "true": true, "counted": counted,
                         "rel_error": abs(counted - true) / max(true, 1), "fps": summary["fps"],
                         "detections_per_frame": summary["apples"] / max(summary["frames"], 1)})
            print(f"seed {seed}: true {true}, counted {counted}", file=sys.stderr)
    tot_true = sum(r["true"] for r in rows)
    result = {"command": "python benchmarks/counting/run.py " + " ".join(sys.argv[1:]), "model": a.model,
              "frames": a.frames, "size": a.size, "conf": a.conf, "clips": rows,
              "mean_rel_error": sum(r["rel_error"] for r in rows) / len(rows),
              "total_rel_error": abs(sum(r["counted"] for r in rows) - tot_true) / max(tot_true, 1)}
    out = Path(a.out)
    from pomona.pipeline.procedural import RENDERER_VERSION

    result["renderer_version"] = RENDERER_VERSION  # the clips change with the renderer: compare within one version
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Counting distinct apples with tracking (ByteTrack, edgefirst-tracker) on synthetic drive-by clips", "",
             f"Model `{a.model}`, {a.frames} frames per clip at {a.size} (renderer {RENDERER_VERSION}), conf {a.conf}. "
             f"Command: `{result['command']}`.",
             "", "| seed | true apples | counted | relative error | detections/frame | fps |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['true']} | {r['counted']} | {100 * r['rel_error']:.1f}% | "
                     f"{r['detections_per_frame']:.1f} | {r['fps']:.1f} |")
    lines += ["", f"Mean relative error **{100 * result['mean_rel_error']:.1f}%** (total: "
              f"{100 * result['total_rel_error']:.1f}%).", ""]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
