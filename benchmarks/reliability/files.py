"""Reliability, part two: bad files, a full disk and signals, each through the whole `pomona run` command.

    python benchmarks/reliability/files.py                        # every fault, the shipped model
    python benchmarks/reliability/files.py --faults bad_images,sigkill_x20
    python benchmarks/reliability/files.py --model runs/x/best.onnx

The camera faults and the soak are run.py's; this script runs what a field robot meets on its own disk:
corrupt, truncated and empty images among good ones, a folder with nothing readable, cut and empty videos,
broken model files, the output disk filling up, and SIGINT, SIGTERM and SIGKILL mid-run. Each fault is the
CLI as a user runs it (`pomona run MODEL --source SRC --jsonl OUT --json`), in a child process; the row
says what was tried, the exit code, the one line of error (a traceback fails the row), what the run
processed and skipped, and what was lost: good frames without a whole JSONL line, and torn lines.

The frames are renders (`pomona generate`), so the model finds apples and every JSONL line carries masks
and polygons. Writes files.json beside results.json; results.md (run.py's report) gains its section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
POMONA = [sys.executable, "-m", "pomona.cli"]
GOOD = 40  # good frames in the folder faults
LONG = 300  # frames in the folder the signals interrupt


# --- one run of the CLI ----------------------------------------------------------------------------------
@dataclass
class Run:
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    summary: dict = field(default_factory=dict)

    @property
    def error_line(self) -> str:
        """The run's one line of error ("" when it printed none); after a traceback, its last line marked TRACEBACK."""
        if "Traceback" in self.stderr:
            return "TRACEBACK: " + self.stderr.strip().splitlines()[-1]
        last = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""
        return last if last.startswith("error: ") else ""


def command(model: Path, source: Path, jsonl: Path) -> list[str]:
    """The command every fault runs: `pomona run` with JSON Lines and the summary as JSON."""
    return [*POMONA, "run", str(model), "--source", str(source), "--jsonl", str(jsonl), "--json", "--conf", "0.25"]


def pomona_run(model: Path, source: Path, jsonl: Path, timeout: float = 300) -> Run:
    t0 = time.perf_counter()
    proc = subprocess.run(command(model, source, jsonl), capture_output=True, text=True, timeout=timeout)
    return _finished(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def _finished(code: int | None, out: str, err: str, seconds: float) -> Run:
    run = Run(code, out, err, seconds)
    try:
        run.summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except json.JSONDecodeError:
        pass
    return run


def read_lines(jsonl: Path) -> tuple[list[dict], int]:
    """(the whole records, the torn lines: ones that do not parse, and a last line without its newline)."""
    if not jsonl.exists():
        return [], 0
    text = jsonl.read_text()
    lines = text.splitlines()
    records, torn = [], 0
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
        else:
            if i == len(lines) - 1 and not text.endswith("\n"):
                torn += 1
    return records, torn


# --- the material ------------------------------------------------------------------------------------------
def frames(work: Path, n: int, seed: int) -> list[Path]:
    """n rendered orchard frames (reused when ``work`` has them)."""
    folder = work / "renders"
    images = sorted((folder / "images").glob("*.jpg"))
    if len(images) != n:
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([*POMONA, "generate", str(folder), "--n", str(n), "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
        images = sorted((folder / "images").glob("*.jpg"))
    return images


def bad_files(good: Path) -> dict[str, bytes]:
    """What a camera or a copy cut short leaves behind, by file name, made from one good JPEG."""
    import cv2

    data = good.read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(good)))[1].tobytes()
    return {"empty.jpg": b"", "cut_in_half.jpg": data[: len(data) // 2], "cut_at_90pc.jpg": data[: len(data) * 9 // 10],
            "random_bytes.jpg": random.Random(0).randbytes(20_000), "text.jpg": b"not a picture\n",
            "cut.png": png[:-100], "header_only.jpg": data[:600]}


def mixed_folder(work: Path, images: list[Path]) -> tuple[Path, list[str], list[str]]:
    """The good frames with the bad files sorted in between them: (folder, good names, bad names)."""
    folder = work / "mixed"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    good = []
    for i, p in enumerate(images):
        good.append(f"{i:03d}_good.jpg")
        shutil.copyfile(p, folder / good[-1])
    bad = []
    for j, (name, data) in enumerate(bad_files(images[0]).items()):
        bad.append(f"{(j * 5 + 2):03d}_{name}")  # between good frames, not all at the start or the end
        (folder / bad[-1]).write_bytes(data)
    return folder, good, bad


def video(work: Path, images: list[Path], name: str = "clip.mp4", fourcc: str = "mp4v") -> Path:
    import cv2

    path = work / name
    if not path.exists():
        h, w = cv2.imread(str(images[0])).shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 15, (w, h))
        for p in images:
            writer.write(cv2.imread(str(p)))
        writer.release()
    return path


def long_folder(work: Path, images: list[Path]) -> Path:
    folder = work / "long"
    if len(list(folder.glob("*.jpg"))) != LONG:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(LONG):
            shutil.copyfile(images[i % len(images)], folder / f"f{i:04d}.jpg")
    return folder


# --- the faults -------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    model: Path
    work: Path
    images: list[Path]


def fault_bad_images(c: Ctx) -> dict:
    folder, good, bad = mixed_folder(c.work, c.images)
    jsonl = c.work / "bad_images.jsonl"
    run = pomona_run(c.model, folder, jsonl)
    records, torn = read_lines(jsonl)
    written = {r["image"] for r in records}
    lost = len([g for g in good if g not in written])
    skipped = run.summary.get("skipped")
    ok = run.code == 0 and not run.error_line and skipped == len(bad) and lost == 0 and torn == 0
    return _row("bad_images", f"{len(good)} good frames with {len(bad)} bad files between them: "
                + ", ".join(n.split('_', 1)[1] for n in bad), run, 0, ok, records, torn, lost,
                f"{run.summary.get('frames')} frames, {skipped} skipped and named ("
                + ", ".join(sorted(run.summary.get("skipped_files", []))[:3]) + ", ...)")


def fault_only_bad_images(c: Ctx) -> dict:
    folder = c.work / "only_bad"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in bad_files(c.images[0]).items():
        (folder / name).write_bytes(data)
    return _error_row("only_bad_images", "a folder of only the bad files above", c, folder, c.model)


def fault_cut_video(c: Ctx) -> dict:
    clip = video(c.work, c.images)
    cut = c.work / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    jsonl = c.work / "cut_video.jsonl"
    run = pomona_run(c.model, cut, jsonl)
    records, torn = read_lines(jsonl)
    # OpenCV writes an .mp4's index (moov) at the end: a copy cut in half has none and cannot be opened at
    # all, so the right outcome is one clear error; a container that streams (.mkv, .ts) gives its frames
    ok = torn == 0 and "Traceback" not in run.stderr and (
        (run.code == 2 and run.error_line != "") or (run.code == 0 and 0 < len(records) < len(c.images)))
    outcome = (f"{len(records)} frames up to the cut" if run.code == 0 else
               "one line, exit 2: OpenCV writes an .mp4's index at its end, so the cut copy cannot be opened")
    return _row("cut_video", f"an .mp4 of {len(c.images)} frames cut in half (a copy interrupted)", run, "0 or 2", ok,
                records, torn, 0, outcome)


def fault_cut_recording(c: Ctx) -> dict:
    """A recording cut short (power lost while the robot recorded): an MJPG .avi, readable up to the cut."""
    import cv2

    data = video(c.work, c.images, "clip.avi", "MJPG").read_bytes()
    cut = c.work / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    cap = cv2.VideoCapture(str(cut))
    readable = 0
    while cap.read()[0]:
        readable += 1
    cap.release()
    jsonl = c.work / "cut_recording.jsonl"
    run = pomona_run(c.model, cut, jsonl)
    records, torn = read_lines(jsonl)
    lost = readable - len(records)
    ok = run.code == 0 and not run.error_line and "Traceback" not in run.stderr and torn == 0 and lost == 0 \
        and 0 < readable < len(c.images)
    return _row("cut_recording", f"an MJPG .avi of {len(c.images)} frames cut in half (power lost mid-recording)",
                run, 0, ok, records, torn, lost,
                f"{len(records)} frames up to the cut (OpenCV alone reads {readable}), the last one damaged; exit 0")


def fault_empty_video(c: Ctx) -> dict:
    empty = c.work / "empty.mp4"
    empty.write_bytes(b"")
    return _error_row("empty_video", "a zero-byte .mp4", c, empty, c.model)


def _broken_model(c: Ctx, name: str, content: bytes) -> Path:
    path = c.work / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def fault_cut_model(c: Ctx) -> dict:
    data = c.model.read_bytes()
    model = _broken_model(c, "cut.onnx", data[: len(data) // 2])
    return _error_row("cut_model", "the .onnx cut in half (an interrupted copy)", c, c.images[0].parent, model)


def fault_empty_model(c: Ctx) -> dict:
    model = _broken_model(c, "empty.onnx", b"")
    return _error_row("empty_model", "a zero-byte .onnx", c, c.images[0].parent, model)


def fault_wrong_model(c: Ctx) -> dict:
    model = _broken_model(c, "notes.onnx", b"model: yolo11n-seg\nimgsz: 640\n")
    return _error_row("wrong_model", "a text file named .onnx", c, c.images[0].parent, model)


def fault_garbage_pt(c: Ctx) -> dict:
    model = _broken_model(c, "weights.pt", b"\x13" + random.Random(1).randbytes(50_000))
    return _error_row("garbage_pt", "random bytes named .pt", c, c.images[0].parent, model)


def _error_row(name: str, tried: str, c: Ctx, source: Path, model: Path) -> dict:
    """A fault that must end the run at once with exit 2, one line of error, and no JSONL that looks complete."""
    jsonl = c.work / f"{name}.jsonl"
    jsonl.unlink(missing_ok=True)
    run = pomona_run(model, source, jsonl)
    records, torn = read_lines(jsonl)
    ok = run.code == 2 and run.error_line != "" and "TRACEBACK" not in run.error_line and not jsonl.exists()
    left = "no JSONL left" if not jsonl.exists() else f"JSONL left with {len(records)} lines"
    return _row(name, tried, run, 2, ok, records, torn, 0, f"one line, exit {run.code}; {left}")


def _tmpfs_usable(folder: Path) -> str | None:
    """Why a 64 KiB tmpfs cannot be mounted here in a private mount namespace (None: it can)."""
    if shutil.which("unshare") is None:
        return "no unshare"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{folder}'"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["mount refused"])[-1]


def fault_disk_full(c: Ctx) -> dict:
    """The kernel's own ENOSPC: the JSONL on a 64 KiB tmpfs in a private mount namespace (no root needed where
    user namespaces are allowed; nothing stays mounted), the file copied out before the namespace ends."""
    disk, kept = c.work / "disk", c.work / "kept"
    for d in (disk, kept):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    tried = f"the JSONL on a 64 KiB tmpfs that fills up during a {LONG}-frame folder"
    why = _tmpfs_usable(disk)
    if why:
        return {"name": "disk_full", "tried": tried, "ok": None, "outcome": f"not run: cannot mount a tmpfs ({why})"}
    jsonl = disk / "r.jsonl"
    cli = " ".join(command(c.model, long_folder(c.work, c.images), jsonl))
    script = f"mount -t tmpfs -o size=64k tmpfs '{disk}' && {{ {cli}; rc=$?; cp '{jsonl}' '{kept}/'; exit $rc; }}"
    t0 = time.perf_counter()
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    run = _finished(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)
    records, torn = read_lines(kept / "r.jsonl")
    in_order = [r["frame"] for r in records] == list(range(len(records)))
    size = (kept / "r.jsonl").stat().st_size if (kept / "r.jsonl").exists() else 0
    ok = run.code == 2 and "disk full" in run.error_line and torn == 0 and in_order and 0 < len(records) < LONG
    return _row("disk_full", tried, run, 2, ok, records, torn, 0,
                f"stopped at the first write that did not fit: {len(records)} whole lines kept ({size} bytes), "
                "frames after it not processed")


def _start(c: Ctx, jsonl: Path) -> subprocess.Popen:
    jsonl.unlink(missing_ok=True)
    # Ctrl-C as a terminal sends it: a shell runs background jobs with SIGINT ignored, and a child inherits that
    return subprocess.Popen(command(c.model, long_folder(c.work, c.images), jsonl), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_lines(proc: subprocess.Popen, jsonl: Path, lines: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= lines:
            return True
        time.sleep(0.01)
    return False


def _signalled(c: Ctx, name: str, sig: signal.Signals, expected: int) -> dict:
    jsonl = c.work / f"{name}.jsonl"
    t0 = time.perf_counter()
    proc = _start(c, jsonl)
    started = _wait_lines(proc, jsonl, 20)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    run = _finished(proc.returncode, out, err, time.perf_counter() - t0)
    records, torn = read_lines(jsonl)
    frames = run.summary.get("frames")
    lost = None if frames is None else frames - len(records)
    stopped = run.summary.get("interrupted") and run.summary.get("signal") == sig.name and (frames or LONG) < LONG
    ok = bool(started and stopped and run.code == expected and torn == 0 and lost == 0 and not run.error_line)
    why = {"SIGINT": "Ctrl-C", "SIGTERM": "systemd or docker stopping the service"}[sig.name]
    return _row(name, f"{sig.name} after 20 frames of {LONG} ({why})", run, expected, ok, records,
                torn, lost, f"summary written ({frames} frames, signal {run.summary.get('signal')}); "
                            f"{len(records)} whole lines")


def fault_sigint(c: Ctx) -> dict:
    return _signalled(c, "sigint", signal.SIGINT, 0)


def fault_sigterm(c: Ctx) -> dict:
    return _signalled(c, "sigterm", signal.SIGTERM, 143)


def fault_sigkill_x20(c: Ctx, kills: int = 20) -> dict:
    """SIGKILL cannot be caught: whole lines must come from how each line is written (one write call each).
    Twenty kills, each at a random moment after the first line, count every torn line."""
    rng = random.Random(2)
    jsonl = c.work / "sigkill.jsonl"
    torn_total = lines_total = out_of_order = 0
    t0 = time.perf_counter()
    for _ in range(kills):
        proc = _start(c, jsonl)
        if _wait_lines(proc, jsonl, 1):
            time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.communicate(timeout=60)
        records, torn = read_lines(jsonl)
        torn_total += torn
        lines_total += len(records)
        out_of_order += [r["frame"] for r in records] != list(range(len(records)))
    ok = torn_total == 0 and out_of_order == 0 and lines_total > 0
    return {"name": "sigkill_x20", "tried": f"SIGKILL at a random moment, {kills} runs of the {LONG}-frame folder",
            "exit": "-9", "expected_exit": "-9", "error": "", "frames": lines_total, "jsonl_lines": lines_total,
            "torn": torn_total, "lost": None, "seconds": round(time.perf_counter() - t0, 1), "ok": ok,
            "outcome": f"{lines_total} whole lines over {kills} kills, {torn_total} torn, {out_of_order} runs out of "
                       "order; frames in flight at the kill have no line (at most the pipeline's few)"}


def _row(name: str, tried: str, run: Run, expected, ok: bool, records: list, torn: int, lost: int | None,
         outcome: str) -> dict:
    return {"name": name, "tried": tried, "exit": run.code, "expected_exit": expected, "error": run.error_line,
            "frames": run.summary.get("frames", len(records)), "skipped": run.summary.get("skipped"),
            "jsonl_lines": len(records), "torn": torn, "lost": lost, "seconds": round(run.seconds, 1), "ok": bool(ok),
            "outcome": outcome}


FAULTS = {"bad_images": fault_bad_images, "only_bad_images": fault_only_bad_images, "cut_video": fault_cut_video,
          "cut_recording": fault_cut_recording,
          "empty_video": fault_empty_video, "cut_model": fault_cut_model, "empty_model": fault_empty_model,
          "wrong_model": fault_wrong_model, "garbage_pt": fault_garbage_pt, "disk_full": fault_disk_full,
          "sigint": fault_sigint, "sigterm": fault_sigterm, "sigkill_x20": fault_sigkill_x20}


# --- the report -----------------------------------------------------------------------------------------------
def markdown(results: dict) -> list[str]:
    """results.md's section for these faults (run.py's write_report puts it after the camera faults)."""
    m = results["machine"]
    lines = ["## Bad files, a full disk and signals", "",
             "Each fault is the whole command as a user runs it (`pomona run MODEL --source SRC --jsonl OUT --json "
             "--conf 0.25`), in a child process, on rendered orchard frames (`pomona generate`). *Lost*: frames the "
             "run processed (or good frames it was given) without a whole JSONL line; *torn*: JSONL lines that do not "
             "parse, or a last line without its newline. Target: bad input skipped and counted or one line of error, "
             "never a traceback; nothing lost; no torn line.", "",
             f"Setup: {m['cpus']} CPUs, Python {m['python']}, OpenCV {m['opencv']}; model: `{results['model']}`. "
             f"Command: `{results['command']}`.", "",
             "| fault | what was tried | exit | error line | frames / skipped | lost / torn | outcome |",
             "|---|---|---|---|---|---|---|"]
    for r in results["faults"]:
        if r["ok"] is None:
            lines.append(f"| {r['name']} | {r['tried']} | - | - | - | - | {r['outcome']} |")
            continue
        verdict = "" if r["ok"] else "**failed**: "
        error = f"`{r['error']}`" if r["error"] else "none"
        lost = "-" if r["lost"] is None else r["lost"]
        skipped = "" if r.get("skipped") in (None, 0) else f" / {r['skipped']}"
        lines.append(f"| {r['name']} | {r['tried']} | {r['exit']} (expected {r['expected_exit']}) | {error} | "
                     f"{r['frames']}{skipped} | {lost} / {r['torn']} | {verdict}{r['outcome']} |")
    return lines + [""]


def section(out: Path) -> list[str]:
    """The section from ``out``/files.json, when this benchmark has run there."""
    path = out / "files.json"
    return markdown(json.loads(path.read_text())) if path.exists() else []


def _report(results: dict, out: Path) -> None:
    """files.json, then results.md again through run.py's report (which ends with this section)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "files.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "files.json")
    if (out / "results.json").exists():
        spec = importlib.util.spec_from_file_location("pomona_reliability_run", HERE / "run.py")
        run = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = run
        spec.loader.exec_module(run)
        run.write_report(json.loads((out / "results.json").read_text()), out)
    else:
        (out / "results.md").write_text("# Reliability\n\n" + "\n".join(markdown(results)))


def _default_model() -> Path:
    from pomona.models import DEFAULT_MODEL, resolve_model

    return resolve_model(DEFAULT_MODEL, prefer="onnx")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="an .onnx; default: the shipped default model's")
    p.add_argument("--faults", default="all", help=f"comma list of {', '.join(FAULTS)}; or all")
    p.add_argument("--seed", type=int, default=4343, help="render seed of the frames")
    p.add_argument("--work", type=Path, default=None, help="scratch; default: a temp folder")
    p.add_argument("--out", type=Path, default=HERE, help="where files.json and results.md go")
    a = p.parse_args(argv)
    names = list(FAULTS) if a.faults == "all" else [f.strip() for f in a.faults.split(",") if f.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        p.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    import cv2

    model = a.model or _default_model()
    work = a.work or Path(tempfile.mkdtemp(prefix="pomona-files-"))
    ctx = Ctx(model, work, frames(work, GOOD, a.seed))
    rows = []
    for name in names:
        print(f"fault: {name} ...", file=sys.stderr, flush=True)
        rows.append(FAULTS[name](ctx))
        print(f"  {'ok' if rows[-1]['ok'] else 'not run' if rows[-1]['ok'] is None else 'FAILED'}: "
              f"{rows[-1]['outcome']}", file=sys.stderr, flush=True)
    results = {"model": str(model), "command": "python benchmarks/reliability/files.py " + " ".join(argv or sys.argv[1:]),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__},
               "faults": rows}
    _report(results, a.out)
    print(f"wrote {a.out / 'files.json'} and {a.out / 'results.md'}", file=sys.stderr)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
