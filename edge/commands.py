"""CLI commands of the edge runtime: ``pomona run`` and ``pomona bench``.

Only typer and the standard library at import time: the CLI loads this module for every command,
and the robot must not pay for (or even have) the heavy libraries of other stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def run(
    model: Optional[str] = typer.Argument(None, help="Model: .onnx or .engine (edge), .pt (workstation, via Ultralytics), "
                                                     "or a shipped model's name; default: the default shipped model "
                                                     "(`pomona models`)."),
    source: str = typer.Option(..., "--source", help="Video file, image folder/file, camera index (0), csi://0, rtsp://... or a GStreamer pipeline."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold."),
    iou: float = typer.Option(0.7, "--iou", help="NMS IoU threshold."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Inference size (default: the model's; other sizes need a --dynamic export)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for annotated images (or the video with --save-video)."),
    save_video: bool = typer.Option(False, "--save-video", help="Write one annotated .mp4 (into --out, default runs/edge)."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="JSON Lines file: one line per frame with every apple."),
    track: bool = typer.Option(False, "--track", help="Track apples across frames (ByteTrack) and count distinct apples."),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt or ultralytics."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
    no_polygons: bool = typer.Option(False, "--no-polygons", help="Leave polygons out of the JSONL (smaller files)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    depth: Optional[str] = typer.Option(None, "--depth", help="Aligned 16-bit depth (mm): a folder of PNGs (paired by "
                                                              "name or frame index), a 16-bit video, or realsense[:SERIAL]. "
                                                              "Adds each apple's 3D centre, diameter and picking point."),
    intrinsics: Optional[Path] = typer.Option(None, "--intrinsics", help="With --depth: JSON with fx, fy, cx, cy, or "
                                                                        "the renderer's manifest.jsonl."),
) -> None:
    """Run the model on a camera, stream, video or folder: annotated output, JSONL, live FPS on stderr."""
    from pomona.edge.runner import run as run_source

    summary = run_source(model, source, conf=conf, iou=iou, imgsz=imgsz, out=out, save_video=save_video, jsonl=jsonl,
                         track=track, backend=backend, max_frames=max_frames, polygons=not no_polygons, depth=depth,
                         intrinsics=intrinsics)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        _exit_for_signal(summary)
        return
    line = f"{summary['frames']} frames, {summary['apples']} apple detections, {summary['fps']} fps"
    if "distinct_apples" in summary:
        line += f", {summary['distinct_apples']} distinct apples"
    if summary["dropped"]:
        line += f", {summary['dropped']} stale frames dropped"
    if summary.get("skipped"):
        line += f", {summary['skipped']} unreadable files skipped"
    if summary["interrupted"]:
        line += " (stopped by SIGTERM)" if summary.get("signal") == "SIGTERM" else " (stopped by Ctrl-C)"
    typer.echo(line)
    for key in ("video", "out", "jsonl"):
        if key in summary:
            typer.echo(f"{key}: {summary[key]}")
    _exit_for_signal(summary)


def _exit_for_signal(summary: dict) -> None:
    if summary.get("signal") == "SIGTERM":
        raise typer.Exit(143)  # 128 + SIGTERM: a supervisor sees the run was stopped; its outputs are complete


def bench(
    model: Optional[str] = typer.Argument(None, help="Model to benchmark (.onnx, .engine, .pt or a shipped model's name; "
                                                     "default: the default shipped model)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Image folder or video (default: rendered synthetic orchard frames)."),
    frames: int = typer.Option(100, "--frames", help="Frames to time (after 5 warm-up frames)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt or ultralytics."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Inference size (default: the model's)."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold."),
) -> None:
    """Per-stage latency (capture, pre, infer, post, render) p50/p95/p99, FPS and peak memory."""
    from pomona.edge.bench import STAGES, bench as run_bench

    result = run_bench(model, source, frames=frames, backend=backend, imgsz=imgsz, conf=conf)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    typer.echo(f"{result['model']}  backend={result['backend']} device={result['device']} "
               f"precision={result['precision']} imgsz={result['imgsz']}  ({result['frames']} frames, "
               f"{result['apples_mean']:.1f} apples/frame)")
    typer.echo(f"{'stage':<8} {'p50':>8} {'p95':>8} {'p99':>8}  ms")
    for stage in STAGES:
        s = result["stages_ms"][stage]
        typer.echo(f"{stage:<8} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f}")
    typer.echo(f"end-to-end {result['fps_e2e']:.1f} fps (model only {result['fps_model']:.1f} fps), "
               f"post {100 * result['post_share_of_model']:.0f}% of model time, peak RSS {result['peak_rss_mb']:.0f} MB")
