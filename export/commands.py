"""CLI command ``pomona export`` (typer/stdlib only at import time: the CLI loads this for every command)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer


class ExportFormat(str, Enum):
    onnx = "onnx"
    engine = "engine"


def export(
    weights: str = typer.Argument(..., help="Trained weights (.pt), e.g. runs/quickstart/weights/best.pt; or, for "
                                            "--format engine, a pomona .onnx (no torch needed); or a shipped model's "
                                            "name (pomona-apple-n), exported into the working directory."),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="onnx (runs anywhere) or engine (TensorRT, on the target GPU)."),
    half: bool = typer.Option(False, "--half", help="FP16 weights (ONNX) / FP16 engine."),
    int8: bool = typer.Option(False, "--int8", help="INT8 (needs --calib): a TensorRT INT8 engine, or for --format onnx a "
                                                    "quantized ONNX for CPUs (ONNX Runtime, QDQ)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="INT8 calibration: a `pomona generate` folder (synthetic images only)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic input size (rectangular inference, any --imgsz at run time)."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Export size (default: the training size)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: beside the weights)."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the parity check (not recommended)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (and nothing else) on stdout."),
) -> None:
    """Export to ONNX or TensorRT with pomona metadata inside, then check parity against the source model."""
    from pomona.stdio import stdout_to_stderr

    with stdout_to_stderr(as_json):  # Ultralytics and TensorRT log to stdout
        from pomona.export.exporter import export_model

        result = export_model(weights, format=format.value, half=half, int8=int8, calib=calib, dynamic=dynamic,
                              imgsz=imgsz, out=out, parity=not no_parity)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    typer.echo(f"exported: {result['path']} ({result['format']}, {result['precision']})")
    rep = result.get("parity")
    if rep:
        miou = "n/a" if rep["mean_mask_iou"] is None else f"{rep['mean_mask_iou']:.4f}"
        typer.echo(f"parity vs {rep['reference']}: {rep['status']} (mean mask IoU {miou}, tolerance "
                   f"{rep['tolerance_mask_iou']}, {rep['matched']} matched apples on {rep['images']} synthetic images; "
                   f"report {rep['report']})")
        if rep["status"] == "inconclusive":
            typer.echo("warning: the model detected nothing on the parity images, so parity could not be measured",
                       err=True)
