"""Reliability benchmark: `pomona run` on a real RTSP camera, for a long soak and through camera faults.

    python benchmarks/reliability/run.py --frames 20000 --no-faults    # the full soak
    python benchmarks/reliability/run.py --frames 1500                 # a short soak + every fault
    python benchmarks/reliability/run.py --no-soak                     # faults only (about 5 minutes)
    python benchmarks/reliability/run.py --no-soak --faults restart,stall
    python benchmarks/reliability/run.py --from-json results.json      # rewrite results.md from a run

--model defaults to the shipped default model (pomona-apple-n) when it is installed; --random-model 640
uses a random-weights YOLO11n-seg of the same shape instead (a machine without a trained model).

The camera is GStreamer's RTSP server on 127.0.0.1 (rtsp_server.py, run with Debian's /usr/bin/python3;
tests/install_rtsp.sh installs it), started and stopped here. Every frame it sends carries its number in
its pixels, so each lost frame is counted exactly, and attributed: never made (the server fell behind),
lost during an outage, dropped by pomona as stale (a live source keeps only the newest frame, counted
in the summary's ``dropped``), or lost anywhere else (the target: none).

The run under test is pomona's own runner (``pomona.edge.runner.run``: the live FrameSource with its
reconnect logic, the model, tracking, JSON Lines, the annotated video) in a child process, reading the
stream with pomona's own opener (OpenCV + FFmpeg). A thin tap around that opener's capture logs each
frame the capture thread gets (time, number, size) to a file; nothing else is changed.

Soak: ``--frames`` processed frames of a looping drive-by clip at 30 fps; the child's RSS is sampled
every second. Reports RSS at warm-up and at the end (target: at most 10 MB of growth after warm-up),
FPS in the first vs the last quarter (target: no drift, within 10 %), and every dropped or lost frame.

Faults: server killed and restarted, server gone for good, stream stalled (3 s, 12 s, 30 s, for good),
resolution changed mid-stream and at a restart, SIGTERM while the stream is stalled. The short ones are
also tests in tests/test_reliability.py (restart, gone, stall, resize, sigterm_stall).

Writes results.json, results.md and soak.png into --out (default: next to this script). Bad files, a full
disk and signals are files.py's; its section (from files.json) closes results.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVER = HERE / "rtsp_server.py"
SYSTEM_PYTHON = os.environ.get("POMONA_RTSP_PYTHON", "/usr/bin/python3")
LATE_S = 1.0  # a frame delivered more than this after the camera made it counts as late


def _server_module():
    """rtsp_server.py's pure-Python parts (frame drawing; GStreamer is only imported in its main)."""
    spec = importlib.util.spec_from_file_location("pomona_rtsp_server", SERVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_srv = _server_module()
BITS, block_size = _srv.BITS, _srv.block_size


# --- the frame number in the pixels -------------------------------------------------------------------------
def decode_counter(image: np.ndarray) -> int | None:
    """The frame number drawn by rtsp_server.draw_counter, or None if the strip is not clean black/white."""
    h, w = image.shape[:2]
    bs = block_size(w)
    y = bs + bs // 2
    if 2 * bs > h:
        return None
    xs = (np.arange(BITS) + 1) * bs + bs // 2
    luma = image[y, xs].astype(np.float32)
    if luma.ndim == 2:
        luma = luma.mean(axis=1)
    if np.any(np.abs(luma - 128) < 60):  # a smeared or half-decoded frame: say so rather than guess
        return None
    value = 0
    for bit in luma > 128:
        value = (value << 1) | int(bit)
    return value


# --- the RTSP camera ------------------------------------------------------------------------------------------
def server_unavailable() -> str | None:
    """None when rtsp_server.py can run on this machine, else the reason (tests skip with it)."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found (the RTSP server runs with Debian's python3 and python3-gi)"
    try:
        proc = subprocess.run([SYSTEM_PYTHON, str(SERVER), "--check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"RTSP server check failed: {e}"
    if proc.returncode != 0:
        return (proc.stdout.strip() or proc.stderr.strip()[-300:] or "RTSP server check failed") + \
            " (bash tests/install_rtsp.sh installs it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class RtspCamera:
    """rtsp_server.py in its own process group, on one port for its whole life (restarts included)."""

    def __init__(self, workdir: Path, size: str = "320x240", fps: int = 15, loop: Path | None = None):
        self.workdir, self.size, self.fps, self.loop = Path(workdir), size, fps, loop
        self.port, self.epoch = free_port(), time.time()
        self.log = self.workdir / "server.log"
        self.log.unlink(missing_ok=True)  # restarts append to it; a reused workdir starts it afresh
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, size: str | None = None, timeout: float = 30.0) -> float:
        """Start (or restart) the server; returns the time it listens."""
        self.size = size or self.size
        cmd = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--size", self.size, "--fps", str(self.fps),
               "--epoch", repr(self.epoch), "--log", str(self.log)]
        if self.loop:
            cmd += ["--loop", str(self.loop)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().strip()
                break
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"RTSP server did not start on 127.0.0.1:{self.port}: {line or 'no answer'}")
        return time.time()

    def send(self, command: str) -> float:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return time.time()

    def kill(self) -> float:
        """SIGKILL: the camera vanishes mid-stream, sockets and all."""
        t = time.time()
        _kill_group(self.proc)
        return t

    def k_at(self, t: float) -> float:
        return (t - self.epoch) * self.fps

    def __enter__(self) -> "RtspCamera":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


# --- the run under test: pomona's runner in a child process, with a tap on its capture -------------------------
class _Tap:
    """Logs every read of pomona's capture: ``F index time number width height``, ``X time`` (failed read),
    ``O start end ok`` (open). ``index`` counts good reads as FrameSource does, so it is the JSONL's ``frame``."""

    def __init__(self, path: Path):
        self.file = open(path, "w", buffering=1)
        self.n = 0

    def open(self, url: str):
        from pomona.edge.sources import open_capture
        from pomona.errors import PomonaError

        t0 = time.time()
        try:
            cap = open_capture(url, "stream")  # pomona's own opener: OpenCV + FFmpeg with its timeouts
        except PomonaError:
            self.file.write(f"O {t0:.3f} {time.time():.3f} 0\n")
            raise
        self.file.write(f"O {t0:.3f} {time.time():.3f} 1\n")
        return _TappedCapture(cap, self)


class _TappedCapture:
    def __init__(self, cap, tap: _Tap):
        self.cap, self.tap = cap, tap

    def read(self):
        ok, image = self.cap.read()
        t = time.time()
        if ok and image is not None:
            k = decode_counter(image)
            self.tap.file.write(f"F {self.tap.n} {t:.3f} {-1 if k is None else k} {image.shape[1]} {image.shape[0]}\n")
            self.tap.n += 1
        else:
            self.tap.file.write(f"X {t:.3f}\n")
        return ok, image

    def get(self, prop):
        return self.cap.get(prop)

    def isOpened(self):  # noqa: N802 (cv2's name)
        return self.cap.isOpened()

    def release(self):
        self.cap.release()


def worker_main(argv: list[str]) -> int:
    """The child: pomona's runner on the stream, summary to a file. Exit codes as `pomona run`'s."""
    p = argparse.ArgumentParser()
    for name in ("--model", "--url", "--dir"):
        p.add_argument(name, required=True)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--track", action="store_true")
    p.add_argument("--save-video", action="store_true")
    p.add_argument("--linger", type=float, default=0.0,
                   help="seconds to stay alive after the run returns, as a program that embeds the runner would")
    a = p.parse_args(argv)
    from pomona.edge.runner import run
    from pomona.errors import PomonaError

    d = Path(a.dir)
    tap = _Tap(d / "tap.log")
    try:
        summary = run(a.model, a.url, jsonl=d / "run.jsonl", track=a.track, out=d / "video" if a.save_video else None,
                      save_video=a.save_video, max_frames=a.max_frames, quiet=True,
                      source_kwargs={"opener": lambda: tap.open(a.url), "live": True})
        code = 143 if summary.get("signal") == "SIGTERM" else 0
    except PomonaError as e:
        summary, code = {"error": str(e)}, 1
    summary["end_time"] = time.time()
    tmp = d / "summary.json.tmp"
    tmp.write_text(json.dumps(summary))
    tmp.replace(d / "summary.json")
    time.sleep(a.linger)  # a capture thread still busy with the closed source must not crash the process now
    return code


class Worker:
    """The child process running ``worker_main``; its stderr goes to worker.err."""

    def __init__(self, model: str | Path, url: str, workdir: Path, max_frames: int | None = None,
                 track: bool = True, save_video: bool = False, linger: float = 0.0):
        self.dir = Path(workdir)
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", "--model", str(model), "--url", url,
               "--dir", str(self.dir)]
        cmd += ["--max-frames", str(max_frames)] if max_frames else []
        cmd += ["--track"] if track else []
        cmd += ["--save-video"] if save_video else []
        cmd += ["--linger", str(linger)] if linger else []
        for stale in ("run.jsonl", "tap.log", "summary.json"):  # a reused --workdir: count this run only
            (self.dir / stale).unlink(missing_ok=True)
        self.err = open(self.dir / "worker.err", "w")
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, start_new_session=True,
                                     cwd=str(ROOT))
        self._jsonl_offset, self._jsonl_lines = 0, 0

    def processed(self) -> int:
        """JSONL lines so far (read incrementally: cheap even at 20,000 frames)."""
        path = self.dir / "run.jsonl"
        if path.exists():
            with open(path, "rb") as f:
                f.seek(self._jsonl_offset)
                chunk = f.read()
            self._jsonl_offset += len(chunk)
            self._jsonl_lines += chunk.count(b"\n")
        return self._jsonl_lines

    def last_frame_time(self) -> float:
        frames = read_tap(self.dir / "tap.log")["frames"]
        return frames[-1][1] if frames else 0.0

    def wait_frames(self, n: int, timeout: float) -> bool:
        """Until ``n`` frames are processed (True), the child ends or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.processed() >= n:
                return True
            time.sleep(0.1)
        return self.processed() >= n

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def rss_kb(self) -> int | None:
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, the way systemd or docker stop a run; None if it did not end in ``timeout`` s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        _kill_group(self.proc)
        self.err.close()


# --- reading what happened ------------------------------------------------------------------------------------
def read_tap(path: Path) -> dict:
    frames, fails, opens = [], [], []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if not parts or (parts[0] == "F" and len(parts) < 6):
                continue  # a line the child was writing when it ended
            if parts[0] == "F":
                frames.append((int(parts[1]), float(parts[2]), int(parts[3]), int(parts[4]), int(parts[5])))
            elif parts[0] == "X" and len(parts) == 2:
                fails.append(float(parts[1]))
            elif parts[0] == "O" and len(parts) == 4:
                opens.append((float(parts[1]), float(parts[2]), parts[3] == "1"))
    return {"frames": frames, "fails": fails, "opens": opens}


def read_server_log(path: Path) -> dict:
    """Frames never made (``skip A B``) and the native size from each frame number on."""
    skips, sizes = [], []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "skip":
                skips.append((int(parts[2]), int(parts[3])))
            elif len(parts) >= 4 and parts[1] == "size" and parts[-1].startswith("k="):
                w, h = (int(v) for v in parts[2].split("x"))
                sizes.append((int(parts[-1][2:]), w, h))
    return {"skips": skips, "sizes": sizes}


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """(records, lines that do not parse). The file must hold whole lines only."""
    records, torn = [], 0
    if path.exists():
        text = path.read_text()
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                torn += 1
        if text and not text.endswith("\n"):
            torn += 1
    return records, torn


@dataclass
class Event:
    """One fault: ``t0`` when it began, ``t1`` when the camera was back (== t0 for an instant change)."""
    name: str
    t0: float
    t1: float
    outage: bool = True  # frames may be lost during it (a server down or stalled); not for a size change
    extra: dict = field(default_factory=dict)


def never_made(skips: list[tuple[int, int]], a: int, b: int) -> int:
    """How many frame numbers in a..b the server skipped (never made)."""
    return sum(max(0, min(b, s1) - max(a, s0) + 1) for s0, s1 in skips)


def account(workdir: Path, events: list[Event], cam: RtspCamera) -> dict:
    """Every frame the camera made while the run watched, each in one place; per-event loss and recovery.

    Works on frame numbers, not arrival times: a gap in the numbers belongs to an event when the missing
    numbers reach into what the camera made from 1 s before the event began up to the first fresh frame
    after it (frames that were in flight when the server died, and those made while reconnecting, count
    as lost during the outage). Any other gap is a loss outside an outage.
    """
    logs = _RunLogs.read(workdir)
    decoded = [(t, k, w, h) for _, t, k, w, h in logs.tap["frames"] if k >= 0]
    windows = _event_windows(events, decoded, cam)
    lost_elsewhere, repeats = _attribute_gaps(decoded, windows, logs.server["skips"], cam)
    per_event = {name: pe for name, (_, pe) in windows.items()}
    return {**_capture_counts(logs, decoded, repeats, cam),
            **_loss_and_size_counts(logs, decoded, events, per_event, lost_elsewhere, cam)}


@dataclass
class _RunLogs:
    """What a run left in its workdir: the capture tap, the server log, the JSONL and the summary."""
    tap: dict
    server: dict
    records: list[dict]
    torn: int  # JSONL lines that do not parse
    summary: dict

    @classmethod
    def read(cls, workdir: Path) -> "_RunLogs":
        records, torn = read_jsonl(workdir / "run.jsonl")
        summary_path = workdir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        return cls(read_tap(workdir / "tap.log"), read_server_log(workdir / "server.log"), records, torn, summary)


Window = tuple[tuple[float, float], dict]  # (frame numbers lo..hi that belong to an event, its per-event record)


def _event_windows(events: list[Event], decoded: list[tuple], cam: RtspCamera) -> dict[str, Window]:
    """Per event: the frame numbers whose loss it owns (from 1 s before it began to the first fresh frame
    after it), and its per-event record, still without the gaps."""
    windows = {}
    for e in events:
        k0, k1 = cam.k_at(e.t0), cam.k_at(e.t1)
        fresh = next(((t, k) for t, k, _, _ in decoded if k > k1), None)  # first frame made after the camera was back
        window = (k0 - cam.fps, fresh[1] if fresh else float("inf"))
        pe = {"lost": 0, "never_made": 0, "gap_s": 0.0, "gaps": [], "down_s": round(e.t1 - e.t0, 2),
              "made_while_down": int(round(k1 - k0)), "recovery_s": round(fresh[0] - e.t1, 2) if fresh else None,
              "frames_after": sum(1 for _, k, _, _ in decoded if k > k1)}
        pe.update(e.extra)
        windows[e.name] = (window, pe)
    return windows


def _count_late(decoded: list[tuple], opens: list[tuple], cam: RtspCamera) -> tuple[int, int, float]:
    """(frames late just after a connect, frames late otherwise, the latest delivery in s)."""
    connected = [t1 for _, t1, ok in opens if ok]
    late_connect = late_other = 0
    max_late = 0.0
    for t, k, _, _ in decoded:
        lateness = t - (cam.epoch + k / cam.fps)
        max_late = max(max_late, lateness)
        if lateness > LATE_S:  # the frames FFmpeg buffered while it probed a new connection come out in a burst
            if any(0 <= t - tc <= 0.5 for tc in connected):
                late_connect += 1
            else:
                late_other += 1
    return late_connect, late_other, max_late


def _attribute_gaps(decoded: list[tuple], windows: dict[str, Window], skips: list[tuple[int, int]],
                    cam: RtspCamera) -> tuple[list[dict], int]:
    """Each gap in the frame numbers to the event whose window it reaches into (updating that event's
    record), else to the losses outside an outage; returns (those losses, frames that came again)."""
    lost_elsewhere, repeats = [], 0
    for (t_prev, k_prev, _, _), (t, k, _, _) in zip(decoded, decoded[1:]):
        if k <= k_prev:
            repeats += 1
            continue
        if k == k_prev + 1:
            continue
        skipped = never_made(skips, k_prev + 1, k - 1)
        missing = k - k_prev - 1 - skipped
        hit = next((pe for (lo, hi), pe in windows.values() if k_prev + 1 <= hi and k - 1 >= lo), None)
        if hit is not None:
            hit["lost"] += missing
            hit["never_made"] += skipped
            hit["gap_s"] = round(max(hit["gap_s"], t - t_prev), 2)
            hit["gaps"].append([k_prev, k])
        elif missing:
            lost_elsewhere.append({"after": k_prev, "next": k, "missing": missing, "at_s": round(t - cam.epoch, 2)})
    return lost_elsewhere, repeats


def _capture_counts(logs: _RunLogs, decoded: list[tuple], repeats: int, cam: RtspCamera) -> dict:
    """``account``'s first keys: what the capture got, what became of it, how late, how much was made."""
    frames, summary = logs.tap["frames"], logs.summary
    late_connect, late_other, max_late = _count_late(decoded, logs.tap["opens"], cam)
    processed = len(logs.records)
    dropped = int(summary["dropped"]) if "dropped" in summary else None
    first_k, last_k = (decoded[0][1], decoded[-1][1]) if decoded else (0, -1)
    return {
        "captured": len(frames), "processed": processed, "dropped_stale": dropped,
        # frames the capture thread got that neither reached the JSONL nor count as dropped: when a run is
        # stopped, one may be in the model and one waiting for it (<= 2); more would be frames gone missing
        "unaccounted": (len(frames) - processed - dropped) if dropped is not None else None,
        "undecodable": len(frames) - len(decoded), "repeats": repeats,
        "late_after_connect": late_connect, "late_other": late_other, "max_late_s": round(max_late, 2),
        "made": last_k - first_k + 1 if decoded else 0,
        "never_made": never_made(logs.server["skips"], first_k, last_k),
    }


def _loss_and_size_counts(logs: _RunLogs, decoded: list[tuple], events: list[Event], per_event: dict,
                          lost_elsewhere: list[dict], cam: RtspCamera) -> dict:
    """``account``'s other keys: losses inside and outside outages, sizes, reconnects, the run's own files."""
    tap, server, summary = logs.tap, logs.server, logs.summary
    sizes = server["sizes"] or [(0, *(int(v) for v in cam.size.split("x")))]
    not_native = sum(1 for _, k, w, h in decoded if _native(sizes, k) != (w, h))
    return {
        "lost_elsewhere": sum(g["missing"] for g in lost_elsewhere), "lost_elsewhere_gaps": lost_elsewhere[:10],
        # the target: nothing lost but frames during an outage (a size change is not one)
        "lost_unexpected": sum(g["missing"] for g in lost_elsewhere)
        + sum(per_event[e.name]["lost"] for e in events if not e.outage),
        "not_native_size": not_native,
        "events": per_event, "sizes_delivered": sorted({f"{w}x{h}" for _, _, w, h in decoded}),
        "native_sizes": server["sizes"], "reconnects": summary.get("reconnects"), "opens": len(tap["opens"]),
        "failed_reads": len(tap["fails"]), "jsonl_torn_lines": logs.torn, "summary": summary,
        "jsonl_sizes": sorted({f"{r['size'][0]}x{r['size'][1]}" for r in logs.records}),
    }


def _native(sizes: list[tuple[int, int, int]], k: int) -> tuple[int, int]:
    """The size the camera sent frame ``k`` at (the last ``size`` line of the server log at or before k)."""
    current = sizes[0][1:]
    for k0, w, h in sizes:
        if k0 <= k:
            current = (w, h)
    return current


# --- faults ---------------------------------------------------------------------------------------------------
WARM_FRAMES = 20  # processed frames before a fault: the model is warm and the stream flows
AFTER_FRAMES = 20  # processed frames after the camera is back: the run has recovered

FAULTS = {
    "restart": "server killed (SIGKILL) mid-stream, restarted 2 s later on the same port",
    "gone": "server killed (SIGKILL) mid-stream and never restarted",
    "stall": "stream stalls for 3 s (RTSP session open, no frames), then resumes",
    "stall_12s": "stream stalls for 12 s, then resumes",
    "stall_30s": "stream stalls for 30 s, then resumes",
    "frozen": "stream stalls and never resumes (server up, RTSP session open)",
    "resize": "resolution 320x240 -> 640x360 mid-stream (new SPS, same session); later the server restarts at 640x360",
    "sigterm_stall": "stream stalls; 1 s later the run gets SIGTERM (systemd/docker stop)",
}


def run_fault(name: str, model: str | Path, workdir: Path, fps: int = 15, size: str = "320x240") -> dict:
    """One fault against a fresh camera and a fresh run; returns what happened, accounted for."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    f = _FaultRun(name, workdir, RtspCamera(workdir, size=size, fps=fps), result={"fault": name, "tried": FAULTS[name]})
    t_start = time.time()
    try:
        _start_run(f, model)
        n0 = f.worker.processed()
        _INJECT[name](f)
        _let_it_recover(f, n0)
    except RuntimeError as e:  # the harness could not set the fault up: say so in the row, do not guess
        f.result["harness_error"] = str(e)
    finally:
        if f.worker is not None:
            f.worker.close()
        f.cam.kill()
    f.result["seconds"] = round(time.time() - t_start, 1)
    return _judge(f)


@dataclass
class _FaultRun:
    """One fault in progress: its camera, the run under test, the events so far and the result row."""
    name: str
    workdir: Path
    cam: RtspCamera
    worker: Worker | None = None
    events: list[Event] = field(default_factory=list)
    result: dict = field(default_factory=dict)


def _start_run(f: _FaultRun, model: str | Path) -> None:
    """The camera, then the run on it, until the run has processed ``WARM_FRAMES``."""
    f.cam.start()
    f.worker = Worker(model, f.cam.url, f.workdir, track=True, save_video=f.name == "resize",
                      linger=6.0 if f.name == "sigterm_stall" else 0.0)
    if not f.worker.wait_frames(WARM_FRAMES, timeout=60):
        raise RuntimeError(f"the run did not get going: {_tail(f.workdir / 'worker.err')}")


def _restart(f: _FaultRun) -> None:
    t0 = f.cam.kill()
    time.sleep(2.0)
    f.events.append(Event("restart", t0, f.cam.start()))


def _end_for_good(f: _FaultRun) -> None:
    """``gone`` (server killed) or ``frozen`` (stream stalled): the camera never comes back."""
    t0 = f.cam.kill() if f.name == "gone" else f.cam.send("stall")
    code = f.worker.wait_exit(timeout=90)
    f.events.append(Event(f.name, t0, t0))
    f.result["ended_after_s"] = round(time.time() - t0, 1) if code is not None else None


def _stall(f: _FaultRun) -> None:
    seconds = {"stall": 3.0, "stall_12s": 12.0, "stall_30s": 30.0}[f.name]
    t0 = f.cam.send("stall")
    _sleep_unless_ended(f.worker, seconds)
    f.events.append(Event(f.name, t0, f.cam.send("resume")))


def _resize(f: _FaultRun) -> None:
    t0 = f.cam.send("size 640x360")
    f.events.append(Event("resize_in_stream", t0, t0, outage=False))
    f.worker.wait_frames(f.worker.processed() + AFTER_FRAMES, timeout=20)
    t0 = f.cam.kill()
    time.sleep(1.0)
    f.events.append(Event("resize_at_restart", t0, f.cam.start(size="640x360")))


def _sigterm_during_stall(f: _FaultRun) -> None:
    f.cam.send("stall")
    time.sleep(1.0)
    t0 = time.time()
    f.worker.proc.send_signal(signal.SIGTERM)
    for _ in range(200):  # the summary is written when the run has ended; the process lingers on
        if (f.workdir / "summary.json").exists() or f.worker.proc.poll() is not None:
            break
        time.sleep(0.1)
    f.result["ended_after_s"] = round(time.time() - t0, 1)
    f.worker.wait_exit(timeout=30)
    f.events.append(Event("sigterm_stall", t0, t0, outage=False))


_INJECT = {"restart": _restart, "gone": _end_for_good, "frozen": _end_for_good, "stall": _stall,
           "stall_12s": _stall, "stall_30s": _stall, "resize": _resize, "sigterm_stall": _sigterm_during_stall}


def _let_it_recover(f: _FaultRun, n0: int) -> None:
    """A run still going after the fault must get ``AFTER_FRAMES`` more frames; then it is stopped."""
    if f.worker.proc.poll() is None:  # the camera is back: the run must go on
        n1 = max(f.worker.processed(), n0 + 1)
        f.result["continued"] = f.worker.wait_frames(n1 + AFTER_FRAMES, timeout=40)
        f.worker.terminate(timeout=20)
    f.result["exit_code"] = f.worker.wait_exit(timeout=20)


def _judge(f: _FaultRun) -> dict:
    """The result row completed: every frame accounted for, any traceback, the outcome and whether it is ok."""
    result = f.result
    result.update(account(f.workdir, f.events, f.cam))
    err = (f.workdir / "worker.err").read_text(errors="replace")
    result["traceback"] = "Traceback" in err or "Fatal Python error" in err
    result["last_error_line"] = result["summary"].get("error", "")
    result["outcome"], result["ok"] = _outcome(f.name, result)
    return result


def _sleep_unless_ended(worker: Worker, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and worker.proc.poll() is None:
        time.sleep(0.1)


def _tail(path: Path, n: int = 600) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _outcome(name: str, r: dict) -> tuple[str, bool]:
    """One line for the table, and whether it met the target (nothing lost but frames during an outage)."""
    code, s = r.get("exit_code"), r["summary"]
    if r.get("harness_error"):
        return f"not measured: {r['harness_error'][:300]}", False
    crashed = code is not None and code < 0 or r["traceback"]
    clean = not crashed and r["jsonl_torn_lines"] == 0 and (r["unaccounted"] or 0) <= 2 and r["lost_unexpected"] == 0
    if crashed:
        return f"CRASHED (exit {code}{', traceback' if r['traceback'] else ''})", False
    if name in ("gone", "frozen"):
        ok = code == 1 and ("gave up" in r["last_error_line"] or "no frame" in r["last_error_line"])
        return (f"run ended after {r.get('ended_after_s')} s with one clear error (exit {code}): "
                f"\"{r['last_error_line']}\"; JSONL whole"), bool(ok and clean)
    if name == "sigterm_stall":
        ok = code == 143 and s.get("signal") == "SIGTERM"
        return (f"run ended {r.get('ended_after_s')} s after SIGTERM, exit {code}, summary written"
                f"{'' if ok else ' (expected exit 143)'}"), bool(ok and clean)
    if s.get("error"):
        return f"run ended with an error (exit {code}): \"{s['error']}\"", False
    if not r.get("continued"):
        return "run did not continue after the fault", False
    bits = [f"run continued ({s.get('reconnects', 0)} reconnect{'s' if s.get('reconnects') != 1 else ''})"]
    if name == "resize":
        sizes = r["sizes_delivered"]
        bits.append(f"frames delivered at {', '.join(sizes)}; JSONL sizes {', '.join(r['jsonl_sizes'])}")
        if r["not_native_size"]:
            bits.append(f"{r['not_native_size']} frames after the in-stream change came at the opening size "
                        f"(OpenCV scales them, aspect not kept) until the reconnect")
    if r["late_other"]:
        bits.append(f"{r['late_other']} frames delivered over {LATE_S:.0f} s late (up to {r['max_late_s']} s)")
    return "; ".join(bits), bool(clean)


# --- soak -----------------------------------------------------------------------------------------------------
def loop_clip(workdir: Path, size: tuple[int, int] = (640, 360), frames: int = 90) -> Path | None:
    """A drive-by orchard clip (apples that move, for the model and the tracker) as raw I420 for the server."""
    import cv2

    raw = workdir / f"driveby_{size[0]}x{size[1]}.i420"
    if raw.exists():
        return raw
    try:
        from pomona.pipeline.procedural import render_driveby
    except ImportError:  # no pipeline extras: the server's own ramp instead
        return None
    render_driveby(workdir / "clip", frames=frames, seed=0, size=size)
    video = workdir / "clip" / "driveby.mp4"
    cap = cv2.VideoCapture(str(video))
    with open(raw, "wb") as f:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            f.write(cv2.cvtColor(cv2.resize(image, size), cv2.COLOR_BGR2YUV_I420).tobytes())
    cap.release()
    return raw


def soak(model: str | Path, frames: int, workdir: Path, fps: int = 30, size: tuple[int, int] = (640, 360),
         warmup: float = 0.1, sample_s: float = 1.0, max_hours: float = 12.0, track: bool = True) -> dict:
    """``frames`` processed frames of a looping clip from the RTSP camera; RSS and FPS over time."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clip = loop_clip(workdir, size)
    cam = RtspCamera(workdir, size=f"{size[0]}x{size[1]}", fps=fps, loop=clip)
    samples: list[tuple[float, int, int]] = []  # (time, processed frames, RSS kB)
    worker = None
    t_start = time.time()
    try:
        cam.start()
        worker = Worker(model, cam.url, workdir, max_frames=frames, track=track)
        deadline = time.monotonic() + max_hours * 3600
        next_report = time.monotonic() + 60
        while worker.proc.poll() is None and time.monotonic() < deadline:
            rss = worker.rss_kb()
            if rss is not None:
                samples.append((time.time(), worker.processed(), rss))
            if time.monotonic() > next_report:
                print(f"soak: {samples[-1][1] if samples else 0}/{frames} frames, RSS {(rss or 0) / 1024:.0f} MB",
                      file=sys.stderr, flush=True)
                next_report += 60
            time.sleep(sample_s)
        timed_out = worker.proc.poll() is None
        code = worker.terminate(timeout=30) if timed_out else worker.proc.returncode
    finally:
        if worker is not None:
            worker.close()
        cam.kill()
    acc = account(workdir, [], cam)
    records, _ = read_jsonl(workdir / "run.jsonl")
    return _soak_report(frames, samples, records, acc, code, timed_out, warmup, time.time() - t_start,
                        {"fps": fps, "size": f"{size[0]}x{size[1]}",
                         "source": "drive-by clip" if clip else "test ramp"})


def rss_stats(frames: list[int], rss_mb: list[float], warm_n: int, n_final: int) -> dict:
    """RSS at warm-up and at the end, from the samples taken while frames were processed: after ``warm_n``
    frames and before the last one (the sample after it catches the process tearing down, which frees memory)."""
    post = [(k, r) for k, r in zip(frames, rss_mb) if warm_n <= k < n_final]
    if not post:
        return {"rss_warm_mb": None, "rss_end_mb": None, "rss_growth_mb": None, "rss_max_after_warm_mb": None,
                "rss_slope_mb_per_10k_frames": None, "rss_ok": False}
    warm, end = post[0][1], post[-1][1]
    slope = None
    if len(post) >= 3 and post[-1][0] > post[0][0]:
        slope = float(np.polyfit([k for k, _ in post], [r for _, r in post], 1)[0] * 10_000)  # MB per 10k frames
    return {"rss_warm_mb": _r(warm), "rss_end_mb": _r(end), "rss_growth_mb": _r(end - warm),
            "rss_max_after_warm_mb": _r(max(r for _, r in post)), "rss_slope_mb_per_10k_frames": _r(slope, 2),
            "rss_ok": end - warm <= 10.0}


def _soak_report(frames, samples, records, acc, code, timed_out, warmup, seconds, camera) -> dict:
    n = len(records)
    warm_n = max(50, int(warmup * frames))
    rss = rss_stats([k for _, k, _ in samples], [r / 1024 for _, _, r in samples], warm_n, n)
    ts = np.array([r["timestamp"] for r in records], float)
    q = n // 4
    fps_q = [None, None]
    if q >= 2:
        fps_q = [float((q - 1) / (ts[q - 1] - ts[0])), float((q - 1) / (ts[-1] - ts[n - q]))]
    drift = (fps_q[1] / fps_q[0] - 1) if fps_q[0] else None
    out = {
        "frames_target": frames, "frames": n, "seconds": round(seconds, 1), "exit_code": code, "timed_out": timed_out,
        "camera": camera, "warmup_frames": warm_n,
        "rss_start_mb": round(samples[0][2] / 1024, 1) if samples else None, **rss,
        "fps_first_quarter": _r(fps_q[0], 2), "fps_last_quarter": _r(fps_q[1], 2), "fps_drift": _r(drift, 3),
        "fps_overall": _r(n / (ts[-1] - ts[0]), 2) if n > 1 else None,
        "dropped_stale": acc["dropped_stale"], "captured": acc["captured"], "lost": acc["lost_elsewhere"],
        "never_made": acc["never_made"], "undecodable": acc["undecodable"], "made": acc["made"],
        "reconnects": acc["reconnects"], "jsonl_torn_lines": acc["jsonl_torn_lines"],
        "error": acc["summary"].get("error"),
        "targets": {"rss_growth_mb_max": 10.0, "fps_drift_max": 0.10},
        "series": {"t": [round(t - samples[0][0], 2) for t, _, _ in samples] if samples else [],
                   "frames": [k for _, k, _ in samples], "rss_mb": [round(r / 1024, 2) for _, _, r in samples]},
        "fps_series": _fps_series(ts, samples[0][0] if samples else (ts[0] if n else 0.0)),
    }
    out["fps_ok"] = drift is not None and abs(drift) <= 0.10
    out["ok"] = bool(out["rss_ok"] and out["fps_ok"] and n >= frames and not out["error"] and out["lost"] == 0)
    return out


def _r(v, nd: int = 1):
    return None if v is None else round(float(v), nd)


def _fps_series(ts: np.ndarray, origin: float, window_s: float = 10.0) -> dict:
    """Processed frames per second in whole ``window_s`` windows; times (window middles) from ``origin``."""
    if len(ts) < 2:
        return {"t": [], "fps": [], "window_s": window_s}
    edges = np.arange(ts[0], ts[-1] + window_s, window_s)
    counts, _ = np.histogram(ts, edges)
    keep = edges[1:] <= ts[-1]  # whole windows only
    mids = (edges[:-1] + window_s / 2)[keep]
    return {"t": [round(float(m - origin), 1) for m in mids],
            "fps": [round(float(c / window_s), 2) for c in counts[keep]],
            "window_s": window_s}


def plot_soak(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    running = [i for i, k in enumerate(s["series"]["frames"]) if k < s["frames"]]  # not the teardown
    t = np.array(s["series"]["t"])[running] / 60
    ax1.plot(t, np.array(s["series"]["rss_mb"])[running], color="tab:blue")
    warm = [tt for tt, i in zip(t, running) if s["series"]["frames"][i] >= s["warmup_frames"]]
    if warm:
        ax1.axvline(warm[0], color="gray", ls="--", lw=1, label=f"warm-up ({s['warmup_frames']} frames)")
        ax1.axhline(s["rss_warm_mb"] + 10, color="tab:red", ls=":", lw=1, label="warm-up + 10 MB (target)")
        ax1.set_ylim(s["rss_warm_mb"] - 40, max(s["rss_warm_mb"] + 20, s["rss_max_after_warm_mb"] + 5))
        ax1.legend(loc="lower right", fontsize=8)
    ax1.set_ylabel("RSS (MB; start-up ramp cut off)")
    ax1.set_title(f"pomona run soak: {s['frames']} frames from RTSP ({s['camera']['size']} @ {s['camera']['fps']} fps)")
    ft = np.array(s["fps_series"]["t"]) / 60
    window = s["fps_series"].get("window_s", 10)
    ax2.plot(ft, s["fps_series"]["fps"], color="tab:green", label=f"processed FPS ({window:.0f} s windows)")
    ax2.set_ylabel("FPS")
    ax2.set_xlabel("minutes")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- report ---------------------------------------------------------------------------------------------------
def fault_row(r: dict) -> str:
    """fault | what was tried | frames lost | reconnect time | outcome"""
    evs = r["events"]
    lost = sum(e["lost"] for e in evs.values()) + r["lost_elsewhere"]
    parts = []
    for name, e in evs.items():
        if e["down_s"] > 0 and r["fault"] not in ("gone", "frozen", "sigterm_stall"):
            parts.append(f"{e['lost']} in the {e['down_s']:.1f} s outage ({e['made_while_down']} made while it lasted)")
        elif e["lost"]:
            parts.append(f"{e['lost']} at {name.replace('_', ' ')}")
    if r["lost_unexpected"]:
        parts.append(f"**{r['lost_unexpected']} outside any outage**")
    if r["unaccounted"] is not None and r["unaccounted"] > 2:
        parts.append(f"**{r['unaccounted']} vanished inside pomona**")
    if r["fault"] in ("gone", "frozen", "sigterm_stall") and not parts:
        parts.append("nothing before the end; the run stops there")
    lost_txt = f"{lost}" + (f": {'; '.join(parts)}" if parts else "")
    rec = []
    for name, e in evs.items():
        if r["fault"] in ("gone", "frozen", "sigterm_stall") or e.get("recovery_s") is None:
            continue
        label = f"{name.replace('_', ' ')}: " if len(evs) > 1 else ""
        rec.append(f"{label}{e['recovery_s']} s")
    rec_txt = ", ".join(rec) if rec else "n/a"
    if r["fault"].startswith("stall") and r.get("reconnects") == 0 and rec:
        rec_txt += " (no reconnect needed)"
    mark = "" if r["ok"] else " **(target missed)**"
    return f"| {r['fault']} | {r['tried']} | {lost_txt} | {rec_txt} | {r['outcome']}{mark} |"


FINDINGS = """## What the faults found

Fixed in `edge/sources.py` (both have a test that fails on the old code):

- **SIGTERM or Ctrl-C while the stream is stalled crashed the process** (segfault, exit -11, instead of
  the summary and exit 143). `FrameSource.close()` released the OpenCV capture while the capture thread was
  still blocked in `read()` (a stalled RTSP read returns only after OpenCV's 5 s timeout), and FFmpeg used
  the freed context when the read came back. Now `close()` only releases a capture whose thread has ended;
  a thread still in a read releases it itself on its way out. Tests: `test_sigterm_during_a_stall_exits_cleanly`,
  `test_close_never_releases_a_capture_under_a_blocked_read`.
- **A stall longer than about 20 s ended the run although reconnect attempts were left.** The consumer's
  10 s "no frame" timeout ran from the last frame, while each RTSP reopen of a stalled server waits up to 5 s,
  so the 5 reconnect attempts were cut short ("delivered no frame for 10 s"). Now the consumer waits as long
  as the capture thread keeps coming back from its reads and reopens; the source's own retry limit ends the
  run ("gave up after 5 reconnect attempts"), and a thread stuck inside one call still times out. Before the
  fix, `stall_30s` ended the run after 20 s; now it reconnects when the stream resumes. Test:
  `test_live_source_waits_for_its_own_reconnects`.

Measured, not changed:

- **In-stream resolution change**: OpenCV's FFmpeg reader keeps delivering the size it opened with: frames
  of the new mode are scaled to it, aspect not kept, and `CAP_PROP_FRAME_WIDTH` keeps the old value, so
  over RTSP pomona cannot see the change. Nothing is lost and the run goes on; the new size arrives with the
  next reconnect (a camera that restarts its stream in the new mode is picked up at once). JSONL `size` is
  always the size of the frame the model saw, so coordinates stay consistent with it. Where a source does
  deliver frames of a new size within one stream (a GStreamer pipeline, a camera SDK, a custom opener), the
  runtime takes them as they come: each frame is letterboxed at its own size, the change is said once on
  stderr and counted (`size_changes` in the summary), and the annotated video keeps its first size with the
  later frames fitted in, aspect kept (`test_resolution_change_within_one_stream` in tests/test_throughput.py).
- **Late frames**: during a stall the last frames before it come out of FFmpeg's decoder only when a read
  times out (5 and 10 s later) and get the time they arrive as their timestamp; after each (re)connect the
  frames FFmpeg buffered while probing the stream (about 2 s) come out in a burst, most of them dropped as
  stale. The `late` counts in results.json say how many frames arrived over 1 s after the camera made them.
- **Outage tolerance**: a refused connection (server down) is retried 5 times with 0.5-2.5 s back-off, about
  8 s in all, then the run ends with one clear error (the `gone` row); a frozen stream gets about 50 s (reads
  time out after 5 s, then 5 reopens of up to 5 s each: the `frozen` row). A camera that takes longer to
  come back ends the run with that error; its supervisor (systemd, docker) restarts it.
"""


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Reliability: soak, camera faults, bad files and signals", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += _setup_section(results)
    if results.get("soak"):
        lines += _soak_section(results)
    if results.get("faults"):
        lines += _faults_section(results)
    lines += _files_section(out)
    (out / "results.md").write_text("\n".join(lines).rstrip() + "\n")


def _files_section(out: Path) -> list[str]:
    """files.py's section (bad files, a full disk, signals), when that benchmark has run into ``out``."""
    spec = importlib.util.spec_from_file_location("pomona_reliability_files", HERE / "files.py")
    files = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = files  # dataclasses look their module up there
    spec.loader.exec_module(files)
    return ["", *files.section(out)]


def _setup_section(results: dict) -> list[str]:
    m = results["machine"]
    return [f"Setup: {m['cpus']} CPUs ({m['platform']}; load average {m['load_avg_at_start'][0]:.1f} at the start), "
            f"Python {m['python']}, OpenCV {m['opencv']}; model: {results['model']}. Camera: GStreamer's RTSP "
            f"server on 127.0.0.1 (`rtsp_server.py`: H.264 by openh264, every frame numbered in its pixels), "
            f"read by pomona's own opener (OpenCV + FFmpeg). Command: "
            f"`{re.sub(r' --note .*', ' --note ...', results['command'])}`.", ""]


def _soak_section(results: dict) -> list[str]:
    s = results["soak"]
    ok = lambda good: "ok" if good else "**missed**"  # noqa: E731
    return ["## Soak", "",
            f"{s['frames']} frames processed (target {s['frames_target']}) from a {s['camera']['source']} "
            f"looped by "
            f"the RTSP server at {s['camera']['size']}, {s['camera']['fps']} fps, with tracking and JSONL. "
            f"The full 20,000-frame soak: `python benchmarks/reliability/run.py --frames 20000 --no-faults` "
            f"once the default model is installed, or with this run's model "
            f"`{results['full_soak_command']}`.", "",
            *([_setup_line(results["soak_setup"]), ""] if results.get("soak_setup") else []),
            "| measure | value | target |", "|---|---|---|",
            f"| frames | {s['frames']} | {s['frames_target']} |",
            f"| duration | {s['seconds'] / 60:.1f} min | |",
            f"| RSS at warm-up (after {s['warmup_frames']} frames) | {s['rss_warm_mb']} MB | |",
            f"| RSS at the end | {s['rss_end_mb']} MB (max after warm-up {s['rss_max_after_warm_mb']} MB) | |",
            f"| RSS growth after warm-up | {s['rss_growth_mb']} MB ({s['rss_slope_mb_per_10k_frames']} MB per "
            f"10,000 frames by a linear fit) | at most 10 MB: {ok(s['rss_ok'])} |",
            f"| FPS, first quarter | {s['fps_first_quarter']} | |",
            f"| FPS, last quarter | {s['fps_last_quarter']} | |",
            f"| FPS drift | {_pct(s['fps_drift'])} | within 10 %: {ok(s['fps_ok'])} |",
            f"| dropped as stale (newest frame kept) | {s['dropped_stale']} of {s['captured']} captured "
            f"| by design |",
            f"| lost (sent, never captured) | {s['lost']} of {s['made']} made | 0: {ok(s['lost'] == 0)} |",
            f"| never sent (server behind) | {s['never_made']} | not pomona's |",
            f"| reconnects, errors | {s['reconnects']}, {s['error'] or 'none'} | |", "",
            "![RSS and FPS over the soak](soak.png)", ""]


def _faults_section(results: dict) -> list[str]:
    return ["## Camera faults", "",
            "Each fault runs pomona's runner (tracking on, JSONL; the resize run also writes the annotated "
            "video) on a fresh 320x240, 15 fps stream, after 20 processed frames. *Frames lost*: frame numbers "
            "the camera "
            "sent that pomona's capture never got (frames a busy server never sent are not counted); frames the "
            "live source dropped as stale are counted apart (results.json). *Reconnect time*: from the camera "
            "being back (restarted or resumed) to the first new frame. Target: nothing lost except frames "
            "during an outage.", "",
            *([_setup_line(results["faults_setup"]), ""] if results.get("faults_setup") else []),
            "| fault | what was tried | frames lost | reconnect time | outcome |", "|---|---|---|---|---|",
            *(fault_row(r) for r in results["faults"]),
            "", FINDINGS]


def merge_previous(results: dict, path: Path) -> dict:
    """``results`` plus the soak or the faults of an earlier run (``path``) that this run did not do; the part
    taken over keeps its own model, command and machine (``soak_setup`` / ``faults_setup``)."""
    if not path.exists():
        return results
    old = json.loads(path.read_text())
    setup = lambda r: {k: r.get(k) for k in ("model", "command", "machine", "note")}  # noqa: E731
    for part in ("soak", "faults"):
        if part not in results and part in old:
            results[part] = old[part]
            results[f"{part}_setup"] = old.get(f"{part}_setup") or setup(old)
    return results


def _setup_line(setup: dict) -> str:
    m = setup["machine"]
    return (f"Setup of this part: {m['cpus']} CPUs (load average {m['load_avg_at_start'][0]:.1f} at the start), "
            f"OpenCV {m['opencv']}; model: {setup['model']}. Command: "
            f"`{re.sub(r' --note .*', ' --note ...', setup['command'])}`." + (f" {setup['note']}" if setup.get('note') else ""))


def _without_note(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            out.append("'...'")
        elif arg.startswith("--note="):
            out.append("--note '...'")
        else:
            out.append(arg)
        skip = arg == "--note"
    return out


def _pct(v):
    return "n/a" if v is None else f"{100 * v:+.1f} %"


def random_model(imgsz: int, folder: Path) -> Path:
    """A randomly initialised one-class YOLO11n-seg exported to ONNX (the architecture of the shipped models,
    weights that find little): for runs on a machine without a trained model. Needs the pipeline extras."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    from pomona.export.exporter import export_model

    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"random_yolo11n_seg_{imgsz}.pt"
    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=1, verbose=False)
    model.names = {0: "apple"}
    torch.save({"model": model, "train_args": {"imgsz": imgsz, "task": "segment"}, "epoch": -1, "date": None}, pt)
    return Path(export_model(pt, format="onnx", parity=False)["path"])


def default_model() -> str | None:
    try:
        from pomona.models import DEFAULT_MODEL, get_model
    except ImportError:
        return None
    return DEFAULT_MODEL if get_model(DEFAULT_MODEL) is not None else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    p = _arg_parser()
    a = p.parse_args(argv)
    if a.from_json:
        return _rewrite_report(a)
    model = a.model or (None if a.random_model else default_model())
    if model is None and not a.random_model:
        p.error("the default model pomona-apple-n is not installed; pass --model (or --random-model 640)")
    why = server_unavailable()
    if why:
        print(f"reliability: cannot start the RTSP server: {why}", file=sys.stderr)
        return 2
    import cv2

    work = a.workdir or Path(tempfile.mkdtemp(prefix="pomona-reliability-"))
    a.out.mkdir(parents=True, exist_ok=True)
    model, model_label = _model_to_run(model, a.random_model, work)
    results = _results_head(a, argv, model, model_label, work, opencv=cv2.__version__)
    if not a.no_faults:
        results["faults"] = _run_faults(a.faults, model, work)
    if not a.no_soak:
        print(f"soak: {a.frames} frames ...", file=sys.stderr, flush=True)
        results["soak"] = soak(model, a.frames, work / "soak", fps=a.soak_fps)
        plot_soak(results["soak"], a.out / "soak.png")
    if a.merge:
        results = merge_previous(results, a.out / "results.json")
    write_report(results, a.out)
    print(f"wrote {a.out / 'results.md'}", file=sys.stderr)
    ok = all(r["ok"] for r in results.get("faults", [])) and (results.get("soak") or {"ok": True})["ok"]
    return 0 if ok else 1


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model (.onnx/.engine/.pt or a shipped name); default: pomona-apple-n")
    p.add_argument("--random-model", type=int, default=None, metavar="IMGSZ",
                   help="instead of --model: a random-weights YOLO11n-seg exported at this size "
                        "(no trained model needed)")
    p.add_argument("--frames", type=int, default=20_000, help="soak length in processed frames")
    p.add_argument("--soak-fps", type=int, default=30)
    p.add_argument("--faults", default="all", help=f"comma list of {', '.join(FAULTS)}; or all")
    p.add_argument("--no-soak", action="store_true")
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--out", type=Path, default=HERE, help="where results.json, results.md and soak.png go")
    p.add_argument("--workdir", type=Path, default=None, help="scratch (logs, JSONL); default: a temp folder")
    p.add_argument("--note", default="", help="a line for the top of results.md")
    p.add_argument("--merge", action="store_true",
                   help="keep the part this run skips (the faults with --no-faults, the soak with --no-soak) from "
                        "the results.json already in --out, with its own setup line")
    p.add_argument("--from-json", type=Path, default=None,
                   help="only rewrite results.md (and soak.png) in --out from this results.json")
    return p


def _rewrite_report(a: argparse.Namespace) -> int:
    """--from-json: results.md and soak.png again from a stored results.json, the soak analysis redone."""
    results = json.loads(a.from_json.read_text())
    results["note"] = a.note or results.get("note", "")
    s = results.get("soak")
    if s:  # the analysis again, on the stored samples
        s.update(rss_stats(s["series"]["frames"], s["series"]["rss_mb"], s["warmup_frames"], s["frames"]))
        s["ok"] = bool(s["rss_ok"] and s["fps_ok"] and s["frames"] >= s["frames_target"] and not s["error"]
                       and s["lost"] == 0)
        plot_soak(s, a.out / "soak.png")
    write_report(results, a.out)
    return 0


def _model_to_run(model: str | Path | None, random_imgsz: int | None, work: Path) -> tuple[str | Path, str]:
    """(the model file or name, its label in the report): ``model``, or a random-weights one exported now."""
    if model is None:
        model = random_model(random_imgsz, work / "model")
        return model, f"random-weights YOLO11n-seg, ONNX at {random_imgsz} (--random-model {random_imgsz})"
    return model, str(model)


def _results_head(a: argparse.Namespace, argv: list[str], model: str | Path, model_label: str, work: Path,
                  opencv: str) -> dict:
    """results.json's first keys: the model, the commands, the note, the workdir and the machine."""
    model_flag = f"--model {a.model}" if a.model else f"--random-model {a.random_model}" if a.random_model else ""
    return {"model": model_label, "model_path": str(model),
            "command": " ".join(["python benchmarks/reliability/run.py"] + _without_note(argv)),
            "full_soak_command": " ".join(w for w in ("python benchmarks/reliability/run.py", model_flag,
                                                      "--frames 20000 --no-faults") if w),
            "note": a.note, "workdir": str(work),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "opencv": opencv, "load_avg_at_start": os.getloadavg()}}


def _run_faults(faults: str, model: str | Path, work: Path) -> list[dict]:
    """The faults named in --faults ("all": every one), one after another, each in its own workdir."""
    names = list(FAULTS) if faults == "all" else [f.strip() for f in faults.split(",") if f.strip()]
    rows = []
    for name in names:
        print(f"fault: {name} ...", file=sys.stderr, flush=True)
        r = run_fault(name, model, work / name)
        print(f"  {r['outcome']}", file=sys.stderr, flush=True)
        rows.append(r)
    return rows


if __name__ == "__main__":
    sys.exit(main())
