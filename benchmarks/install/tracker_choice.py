"""Which ByteTrack for the edge install: Roboflow's ``trackers`` (what pomona used) vs ``edgefirst-tracker``.

    pip install trackers==2.6.1    # not part of any pomona extra any more (supervision is, in pomona[pipeline])
    python benchmarks/install/tracker_choice.py [--frames 90]

Tracker only, no model: renders drive-by clips (pomona.pipeline.procedural.render_driveby, whose
driveby_gt.jsonl has every visible apple's box and true id per frame), turns the ground truth into
detections of a simulated detector (apples under 100 px dropped, then at three noise levels: each
detection missed with probability p, boxes jittered by N(0, s) px, false positives, scores uniform in
0.3-0.95) and counts distinct apples with each tracker as AppleTracker runs it (conf 0.25: tracks start
at 0.35; 30 frames of lost-track buffer at 30 fps). edgefirst's settings (smoothing, IoU gate, matches
before an id) are chosen on seeds 5-9 and reported on seeds 0-4. Writes tracker_choice.json/.md here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NOISE = [(0.0, 0.0, 0.0), (0.1, 1.5, 0.5), (0.25, 3.0, 1.0)]  # (miss probability, jitter px, false positives/frame)
CONF = 0.25


def detections(frames: list[dict], rng, miss: float, jitter: float, fp_rate: float, size=(640, 360)):
    out = []
    for f in frames:
        boxes, scores, ids = [], [], []
        for a in f["apples"]:
            if a["area"] < 100 or rng.random() < miss:
                continue
            boxes.append(np.array(a["box"], np.float32) + rng.normal(0, jitter, 4).astype(np.float32))
            scores.append(rng.uniform(0.3, 0.95))
            ids.append(a["track_id"])
        for _ in range(rng.poisson(fp_rate)):
            x, y = rng.uniform(0, size[0] - 40), rng.uniform(0, size[1] - 40)
            boxes.append(np.array([x, y, x + 30, y + 30], np.float32))
            scores.append(rng.uniform(0.25, 0.5))
        out.append((np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), ids))
    return out


def count_trackers(dets, min_frames: int = 2) -> int:
    import supervision as sv
    from trackers import ByteTrackTracker

    t = ByteTrackTracker(lost_track_buffer=30, frame_rate=30, track_activation_threshold=CONF,
                         high_conf_det_threshold=CONF + 0.1, minimum_consecutive_frames=min_frames,
                         minimum_iou_threshold=0.1)
    seen = set()
    for boxes, scores, _ in dets:
        r = t.update(sv.Detections(xyxy=boxes, confidence=scores, class_id=np.zeros(len(boxes), int)))
        seen.update(int(i) for i in (r.tracker_id if r.tracker_id is not None else []) if i >= 0)
    return len(seen)


def count_edgefirst(dets, smoothing: float, iou: float, matches: int) -> int:
    from edgefirst.tracker import ByteTrack

    t = ByteTrack(high_conf=CONF + 0.1, iou=iou, update=smoothing, lifespan_ns=int(1e9))
    seen = set()
    for i, (boxes, scores, _) in enumerate(dets):
        tracks = t.update(boxes, scores, np.zeros(len(boxes), np.uint64), int(i * 1e9 / 30))
        seen.update(x.uuid for x in tracks if x is not None and x.count >= matches)
    return len(seen)


def errors(count, clips: dict, seeds) -> list[float]:
    """Mean |counted - true| / true over ``seeds``, one number per noise level."""
    out = []
    for miss, jitter, fp in NOISE:
        errs = []
        for s in seeds:
            dets = detections(clips[s], np.random.default_rng(100 + s), miss, jitter, fp)
            true = len({i for _, _, ids in dets for i in ids})
            errs.append(abs(count(dets) - true) / true)
        out.append(round(float(np.mean(errs)), 3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=90)
    a = p.parse_args()
    from pomona.pipeline.procedural import render_driveby

    clips = {}
    with tempfile.TemporaryDirectory(prefix="pomona-tracker-") as tmp:
        for seed in range(10):
            render_driveby(Path(tmp) / str(seed), frames=a.frames, seed=seed, size=(640, 360))
            lines = (Path(tmp) / str(seed) / "driveby_gt.jsonl").read_text().splitlines()
            clips[seed] = [json.loads(line) for line in lines]
    grid = list(itertools.product([0.5, 0.7, 0.9], [0.1, 0.2, 0.3], [2, 3, 4]))
    tuned = {cfg: errors(lambda d, c=cfg: count_edgefirst(d, *c), clips, range(5, 10)) for cfg in grid}
    # among the settings that confirm an apple after at most 3 matches (a weak detector's apples are
    # seen for few frames), the best on the tuning seeds
    best = min((c for c in grid if c[2] <= 3), key=lambda c: np.mean(tuned[c]))
    rows = []
    for name, count in [("trackers 2.6.1 ByteTrack, 2 frames to confirm (pomona before)", count_trackers),
                        ("trackers 2.6.1 ByteTrack, 3 frames to confirm", lambda d: count_trackers(d, 3)),
                        (f"edgefirst-tracker 0.38.0, smoothing {best[0]}, IoU {best[1]}, {best[2]} matches "
                         "(pomona now)", lambda d: count_edgefirst(d, *best)),
                        ("edgefirst-tracker 0.38.0, its defaults (smoothing 0.25, IoU 0.25), 2 matches",
                         lambda d: count_edgefirst(d, 0.25, 0.25, 2))]:
        rows.append({"tracker": name, "mean_rel_error": errors(count, clips, range(5))})
    command = ("python benchmarks/install/tracker_choice.py " + " ".join(sys.argv[1:])).strip()
    result = {"command": command, "noise": NOISE, "chosen": best, "rows": rows}
    (HERE / "tracker_choice.json").write_text(json.dumps(result, indent=2) + "\n")
    head = " | ".join(f"miss {m:.0%}, jitter {j} px, {f} FP/frame" for m, j, f in NOISE)
    lines = ["# ByteTrack for the edge install: counting error on simulated detections", "",
             f"Command: `{result['command']}`. Mean |counted - true| / true over drive-by seeds 0-4 ({a.frames} "
             "frames, 640x360); edgefirst's settings chosen on seeds 5-9.", "",
             f"| tracker | {head} |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tracker']} | " + " | ".join(f"{100 * e:.1f}%" for e in r["mean_rel_error"]) + " |")
    (HERE / "tracker_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
