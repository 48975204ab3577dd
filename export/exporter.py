"""``export_model``: weights -> ONNX (FP32/FP16/INT8, static/dynamic) or TensorRT engine, then a parity check.

Two starting points:
  * ``best.pt`` (workstation, needs torch + Ultralytics): ONNX, or ONNX then an engine; parity vs PyTorch.
  * ``best.onnx`` with ``--format engine`` (the Jetson container, no torch): the engine is built from the
    ONNX, its metadata carried over, and parity is checked against ONNX Runtime on that same ONNX.

The exported file is written under a temporary name and only takes its real name after the parity
check passes; a failed check leaves ``<name>.failed`` and a report, never a file that looks valid.
"""

from __future__ import annotations

from pathlib import Path

from pomona.errors import PomonaError

FORMATS = ("onnx", "engine")


def onnx_name(weights: Path, precision: str = "fp32") -> Path:
    """best.pt -> best.onnx (FP32), best.fp16.onnx, best.int8.onnx."""
    return weights.with_name(weights.stem + ("" if precision == "fp32" else f".{precision}") + ".onnx")


def _resolve_weights(weights: str | Path, format: str) -> tuple[Path, bool]:
    """A path as given, or a shipped model's name: its .onnx for an engine (no torch needed on the robot),
    its .pt for ONNX. Returns (file, whether it was a shipped name)."""
    from pomona.models import is_shipped_name, resolve_model

    if not is_shipped_name(weights):
        return Path(weights), False
    return resolve_model(str(weights), prefer="onnx" if format == "engine" else "pt"), True


def _engine_name(onnx: Path, precision: str) -> str:
    from pomona.export.tensorrt_engine import engine_path

    return engine_path(onnx, precision).name


def export_model(weights: str | Path, format: str = "onnx", half: bool = False, int8: bool = False,
                 calib: str | Path | None = None, dynamic: bool = False, imgsz: int | None = None,
                 out: str | Path | None = None, parity: bool = True) -> dict:
    """Export and verify; returns {"path", "format", "precision", "parity": report or None, ...}.

    ``weights`` is a ``.pt`` (any format) or, for ``format="engine"``, an ``.onnx`` exported by pomona.
    ``int8`` needs ``calib``, a ``pomona generate`` folder: TensorRT INT8 for engines, ONNX Runtime static
    quantization (QDQ) for ONNX.
    """
    if format not in FORMATS:
        raise PomonaError(f"unknown export format {format!r}; choose onnx or engine")
    weights, shipped = _resolve_weights(weights, format)
    if int8 and half:
        raise PomonaError("choose one of --half and --int8")
    if int8 and calib is None:
        raise PomonaError("--int8 needs --calib DIR: a folder of synthetic images from `pomona generate`")
    if calib is not None and not int8:
        raise PomonaError("--calib is only used with --int8")
    if imgsz is not None and (imgsz < 32 or imgsz % 32):
        raise PomonaError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    precision = "int8" if int8 else ("fp16" if half else "fp32")
    suffix = weights.suffix.lower()
    if suffix == ".onnx":
        if format == "onnx":
            raise PomonaError(f"{weights.name} is already ONNX; use --format engine to build a TensorRT engine from it, "
                              "or export the .pt again for another ONNX precision")
        if dynamic or imgsz is not None:
            raise PomonaError(f"--dynamic and --imgsz are fixed inside {weights.name}; export the .pt again to change them")
    elif suffix != ".pt":
        raise PomonaError(f"export starts from PyTorch weights (.pt), or an .onnx for --format engine; got {weights.name}")
    if not weights.is_file():
        raise PomonaError(f"weights not found: {weights}")
    out = Path(out) if out else None
    if out is None and shipped:  # the package folder may be read-only: a shipped model's export lands here
        out = Path.cwd() / (onnx_name(weights, precision).name if format == "onnx" else _engine_name(weights, precision))
    if format == "onnx":
        if int8 and dynamic:
            raise PomonaError("--int8 ONNX needs a fixed input size (drop --dynamic): ranges are calibrated at one size")
        target = out or onnx_name(weights, precision)
        if int8:
            return _export_onnx_int8(weights, imgsz, target, Path(calib), parity)
        return _export_onnx(weights, half, dynamic, imgsz, target, parity)
    if suffix == ".onnx":
        return _engine_from_onnx(weights, precision, calib, out, parity)
    return _export_engine(weights, precision, calib, dynamic, imgsz, out, parity)


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _check_onnx_out(out: Path) -> None:
    if out.suffix != ".onnx":
        raise PomonaError(f"--out for an ONNX export must end in .onnx, got {out.name}")


def _publish(staged: Path, out: Path, reference: Path, precision: str, parity: bool) -> dict | None:
    """Parity-check ``staged`` against ``reference``; on a pass give it its real name, else move it aside."""
    from pomona.export.parity import enforce, parity_check

    report = None
    if parity:
        report = parity_check(reference, staged, precision, final=out)
        enforce(report, staged, out)
    staged.replace(out)
    out.with_name(out.name + ".failed").unlink(missing_ok=True)  # a stale failure from an earlier run
    return report


def _onnx_result(out: Path, precision: str, dynamic: bool, imgsz, report: dict | None) -> dict:
    import onnx

    from pomona.export.onnx_export import initializer_dtypes

    def name(k: int) -> str:  # onnx calls float32 "FLOAT"
        return "float32" if k == onnx.TensorProto.FLOAT else onnx.TensorProto.DataType.Name(k).lower()

    dtypes = {name(k): v for k, v in sorted(initializer_dtypes(out).items())}
    return {"path": str(out), "format": "onnx", "precision": precision, "dynamic": dynamic, "imgsz": list(imgsz),
            "weight_dtypes": dtypes, "parity": report}


def _export_onnx(weights: Path, half: bool, dynamic: bool, imgsz: int | None, out: Path, parity: bool) -> dict:
    from pomona.export.onnx_export import export_onnx

    _check_onnx_out(out)
    staged = _staging(out)
    try:
        _, info = export_onnx(weights, staged, half=half, dynamic=dynamic, imgsz=imgsz)
        report = _publish(staged, out, weights, info.precision, parity)
    finally:
        staged.unlink(missing_ok=True)
    return _onnx_result(out, info.precision, dynamic, info.imgsz, report)


def _export_onnx_int8(weights: Path, imgsz: int | None, out: Path, calib: Path, parity: bool) -> dict:
    """.pt -> FP32 ONNX (scratch) -> INT8 QDQ ONNX calibrated on synthetic images; parity vs PyTorch."""
    import tempfile

    from pomona.export.onnx_export import export_onnx
    from pomona.export.onnx_int8 import quantize_int8
    from pomona.export.tensorrt_engine import calibration_images

    _check_onnx_out(out)
    calibration_images(calib)  # a wrong --calib fails before the export
    staged = _staging(out)
    try:
        with tempfile.TemporaryDirectory(prefix="pomona-int8-") as tmp:
            fp32, info = export_onnx(weights, Path(tmp) / "fp32.onnx", imgsz=imgsz)
            quantize_int8(fp32, staged, calib)
        report = _publish(staged, out, weights, "int8", parity)
    finally:
        staged.unlink(missing_ok=True)
    return _onnx_result(out, "int8", False, info.imgsz, report)


def _build_verified_engine(onnx_path: Path, reference: Path, precision: str, calib, target: Path | None,
                           parity: bool) -> tuple[Path, dict | None]:
    from pomona.export import tensorrt_engine as te

    target = target or te.engine_path(onnx_path, precision)
    staged = _staging(target)
    try:
        te.build_engine(onnx_path, precision, out=staged, calib=Path(calib) if calib else None)
        report = _publish(staged, target, reference, precision, parity)
    finally:
        staged.unlink(missing_ok=True)
    return target, report


def _export_engine(weights: Path, precision: str, calib, dynamic: bool, imgsz: int | None, out: Path | None,
                   parity: bool) -> dict:
    """.pt -> FP32 ONNX (beside the weights, parity vs PyTorch) -> engine (parity vs PyTorch)."""
    from pomona.export import tensorrt_engine as te

    te._trt()  # a clear error before spending time on the ONNX
    onnx = _export_onnx(weights, False, dynamic, imgsz, onnx_name(weights), parity)
    onnx_path = Path(onnx["path"])
    target, report = _build_verified_engine(onnx_path, weights, precision, calib, out, parity)
    return {"path": str(target), "format": "engine", "precision": precision, "dynamic": dynamic, "onnx": str(onnx_path),
            "parity": report, "onnx_parity": onnx["parity"]}


def _engine_from_onnx(onnx_path: Path, precision: str, calib, out: Path | None, parity: bool) -> dict:
    """.onnx -> engine without torch: metadata from the ONNX, parity vs ONNX Runtime (CPU) on the same ONNX."""
    from pomona.export import tensorrt_engine as te

    info = te.onnx_info(onnx_path)  # a foreign or broken ONNX fails here, before TensorRT is needed
    if info.precision == "int8":
        raise PomonaError(f"{onnx_path.name} is an INT8 ONNX for ONNX Runtime on CPUs; build engines from the FP32 "
                          ".onnx (TensorRT calibrates its own INT8 with --int8 --calib DIR)")
    te._trt()
    target, report = _build_verified_engine(onnx_path, onnx_path, precision, calib, out, parity)
    return {"path": str(target), "format": "engine", "precision": precision, "dynamic": info.dynamic,
            "imgsz": list(info.imgsz), "onnx": str(onnx_path), "parity": report}
