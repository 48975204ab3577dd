"""``export_model``: weights -> ONNX (FP32/FP16, static/dynamic) or TensorRT engine, then a parity check.

The exported file is written under a temporary name and only takes its real name after the parity
check passes; a failed check leaves ``<name>.failed`` and a report, never a file that looks valid.
"""

from __future__ import annotations

from pathlib import Path

from pomona.errors import PomonaError

FORMATS = ("onnx", "engine")


def onnx_name(weights: Path, half: bool) -> Path:
    return weights.with_name(weights.stem + (".fp16" if half else "") + ".onnx")


def export_model(weights: str | Path, format: str = "onnx", half: bool = False, int8: bool = False,
                 calib: str | Path | None = None, dynamic: bool = False, imgsz: int | None = None,
                 out: str | Path | None = None, parity: bool = True) -> dict:
    """Export and verify; returns {"path", "precision", "parity": report or None, ...}."""
    weights = Path(weights)
    if format not in FORMATS:
        raise PomonaError(f"unknown export format {format!r}; choose onnx or engine")
    if int8 and format != "engine":
        raise PomonaError("--int8 is a TensorRT option: use --format engine --int8 --calib DIR")
    if int8 and calib is None:
        raise PomonaError("--int8 needs --calib DIR: a folder of synthetic images from `pomona generate`")
    if calib is not None and not int8:
        raise PomonaError("--calib is only used with --int8")
    if weights.suffix.lower() != ".pt":
        raise PomonaError(f"export starts from PyTorch weights (.pt), got {weights.name}")
    if not weights.is_file():
        raise PomonaError(f"weights not found: {weights}")
    if imgsz is not None and (imgsz < 32 or imgsz % 32):
        raise PomonaError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    if format == "onnx":
        return _export_onnx(weights, half, dynamic, imgsz, Path(out) if out else onnx_name(weights, half), parity)
    return _export_engine(weights, "int8" if int8 else ("fp16" if half else "fp32"), calib, dynamic, imgsz,
                          Path(out) if out else None, parity)


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _export_onnx(weights: Path, half: bool, dynamic: bool, imgsz: int | None, out: Path, parity: bool) -> dict:
    from pomona.export.onnx_export import export_onnx, initializer_dtypes
    from pomona.export.parity import enforce, parity_check

    if out.suffix != ".onnx":
        raise PomonaError(f"--out for an ONNX export must end in .onnx, got {out.name}")
    staged = _staging(out)
    try:
        _, info = export_onnx(weights, staged, half=half, dynamic=dynamic, imgsz=imgsz)
        report = None
        if parity:
            report = parity_check(weights, staged, info.precision, final=out)
            enforce(report, staged, out)
        staged.replace(out)
        out.with_name(out.name + ".failed").unlink(missing_ok=True)  # a stale failure from an earlier run
    finally:
        if staged.exists():
            staged.unlink()
    dtypes = initializer_dtypes(out)
    return {"path": str(out), "format": "onnx", "precision": info.precision, "dynamic": dynamic,
            "imgsz": list(info.imgsz), "weight_dtypes": {("float16" if k == 10 else "float32" if k == 1 else str(k)): v
                                                         for k, v in sorted(dtypes.items())},
            "parity": report}


def _export_engine(weights: Path, precision: str, calib, dynamic: bool, imgsz: int | None, out: Path | None,
                   parity: bool) -> dict:
    from pomona.export import tensorrt_engine as te
    from pomona.export.parity import enforce, parity_check

    te._trt()  # a clear error before spending time on the ONNX
    onnx = _export_onnx(weights, False, dynamic, imgsz, onnx_name(weights, False), parity)
    onnx_path = Path(onnx["path"])
    target = out or te.engine_path(onnx_path, precision)
    staged = _staging(target)
    try:
        te.build_engine(onnx_path, precision, out=staged, calib=Path(calib) if calib else None)
        report = None
        if parity:
            report = parity_check(weights, staged, precision, final=target)
            enforce(report, staged, target)
        staged.replace(target)
    finally:
        if staged.exists():
            staged.unlink()
    return {"path": str(target), "format": "engine", "precision": precision, "dynamic": dynamic, "onnx": str(onnx_path),
            "parity": report, "onnx_parity": onnx["parity"]}
