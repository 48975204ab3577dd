"""ONNX -> TensorRT engine with the TensorRT Python API (builder, OnnxParser, FP16/INT8 flags).

Engines are only valid for the TensorRT version and GPU that built them, so the file name carries
both plus the precision (``best.fp16.trt10.3.0.orin.engine``) and the metadata header records them;
the runtime rebuilds from the sibling ``.onnx`` when they do not match this machine.
INT8 calibration reads synthetic images from a ``pomona generate`` folder, never real photos.
No torch here: device memory goes through cuda-python.

Written against the TensorRT 8.6-10.x Python API (TensorRT 11 removed the INT8 calibrator and the
precision flags in favour of strongly typed networks: INT8 there needs a Q/DQ ONNX instead).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from pomona.edge.metadata import ModelInfo, from_onnx_props, write_engine_file
from pomona.errors import PomonaError, first_line

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_MAX_IMAGES = 256


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise PomonaError("TensorRT export needs the TensorRT Python package (JetPack ships it; on x86 "
                          "`pip install tensorrt`); the .onnx runs anywhere with onnxruntime") from None
    return trt


def cudart():
    """cuda-python's runtime module (12.x+ layout first, then the older ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError:
            raise PomonaError("TensorRT inference needs cuda-python (pip install cuda-python)") from None
    return runtime


def check(result):
    """cuda-python returns (error, value...): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise PomonaError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


def gpu_name() -> str:
    props = check(cudart().cudaGetDeviceProperties(0))
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\x00").strip()


def build_target(precision: str) -> dict:
    """What an engine must have been built for to run here."""
    return {"tensorrt": _trt().__version__, "gpu": gpu_name(), "precision": precision}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def engine_path(onnx: Path, precision: str) -> Path:
    target = build_target(precision)
    stem = onnx.name.split(".")[0]
    return onnx.with_name(f"{stem}.{precision}.trt{target['tensorrt']}.{_slug(target['gpu'])}.engine")


def sibling_onnx(engine: Path) -> Path | None:
    """The FP32 .onnx an engine was built from (recorded in its header; else same stem)."""
    from pomona.edge.metadata import read_engine_file

    try:
        info, _ = read_engine_file(engine)
        recorded = info.extra.get("onnx")
    except PomonaError:
        recorded = None
    for cand in ([engine.with_name(recorded)] if recorded else []) + [engine.with_name(engine.name.split(".")[0] + ".onnx")]:
        if cand.is_file():
            return cand
    return None


def onnx_info(onnx: Path) -> ModelInfo:
    """pomona's metadata from an ONNX file's metadata_props (one-line errors for a missing/foreign/broken file)."""
    import onnxruntime as ort

    onnx = Path(onnx)
    if not onnx.is_file():
        raise PomonaError(f"ONNX model not found: {onnx}")
    try:
        sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise PomonaError(f"cannot load ONNX model {onnx}: {first_line(e)}") from None
    info = from_onnx_props(sess.get_modelmeta().custom_metadata_map, str(onnx))
    if info.task != "segment":
        raise PomonaError(f"{onnx} is a {info.task} model; pomona builds engines for segmentation models")
    return info


def calibration_images(calib: Path) -> list[Path]:
    """Images of a ``pomona generate`` folder (it has a manifest.jsonl): synthetic by construction."""
    from pomona.dataset import list_images

    calib = Path(calib)
    if not calib.is_dir():
        raise PomonaError(f"--calib folder not found: {calib}")
    root = calib.parent if calib.name == "images" else calib
    if not (root / "manifest.jsonl").is_file():
        raise PomonaError(f"--calib {calib} is not a `pomona generate` folder (no manifest.jsonl): INT8 calibration "
                          "uses synthetic images only, never the real evaluation photos")
    images = list_images(root / "images" if (root / "images").is_dir() else root)
    if not images:
        raise PomonaError(f"--calib {calib} holds no images")
    return images[:CALIB_MAX_IMAGES]


def _make_calibrator(trt, images: list[Path], input_hw: tuple[int, int], cache: Path):
    from pomona.dataset import read_image
    from pomona.edge.processing import letterbox, to_blob

    rt = cudart()

    class SyntheticCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds letterboxed synthetic frames, one per batch, exactly as the runtime pre-processes them."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.images = list(images)
            self.nbytes = 3 * input_hw[0] * input_hw[1] * 4
            self.device = check(rt.cudaMalloc(self.nbytes))

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if not self.images:
                return None
            blob = np.ascontiguousarray(to_blob(letterbox(read_image(self.images.pop(0)), input_hw)[0]))
            check(rt.cudaMemcpy(self.device, blob.ctypes.data, self.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return SyntheticCalibrator()


def build_engine(onnx: Path, precision: str = "fp16", out: Path | None = None, calib: Path | None = None,
                 workspace_gb: float = 2.0) -> Path:
    """Build (or reuse a cached) engine for this machine from an FP32 ``.onnx``; returns its path."""
    trt = _trt()
    if precision not in PRECISIONS:
        raise PomonaError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    info = onnx_info(onnx)
    out = out or engine_path(onnx, precision)
    target = build_target(precision)
    if _cached_engine_fits(out, target):
        print(f"pomona: reusing cached engine {out.name}", file=sys.stderr)
        return out
    if int(trt.__version__.split(".")[0]) >= 11 and precision != "fp32":
        raise PomonaError(f"TensorRT {trt.__version__} is strongly typed only: build FP32, or use TensorRT 10 for "
                          f"{precision}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    network = _parse_network(trt, builder, logger, onnx)
    profile = _input_profile(builder, config, network, info)
    _set_precision(trt, config, precision, profile, info, onnx, out, calib)
    print(f"pomona: building {precision} TensorRT engine {out.name} (minutes on a Jetson) ...", file=sys.stderr)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PomonaError(f"TensorRT failed to build an engine from {onnx} (see the TensorRT log above)")
    engine_info = ModelInfo(names=info.names, imgsz=info.imgsz, stride=info.stride, task=info.task,
                            precision=precision, dynamic=info.dynamic, batch=1, pomona_version=info.pomona_version,
                            extra={**info.extra, **target, "onnx": onnx.name, "format": "engine"})
    write_engine_file(out, engine_info, bytes(serialized))
    return out


def _cached_engine_fits(out: Path, target: dict) -> bool:
    """An engine already at ``out`` built for this target (TensorRT version, GPU, precision) is reused."""
    if not out.is_file():
        return False
    from pomona.edge.metadata import read_engine_file

    try:
        cached, _ = read_engine_file(out)
    except PomonaError:
        return False
    return {k: cached.extra.get(k) for k in target} == target


def _parse_network(trt, builder, logger, onnx: Path):
    """The ONNX graph as a TensorRT network (explicit batch; TensorRT 10 has no other kind)."""
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PomonaError(f"TensorRT could not parse {onnx}: {errors[:300]}")
    return network


def _input_profile(builder, config, network, info):
    """A dynamic input gets an optimization profile (32 px up to twice the export size); None for a fixed one."""
    inp = network.get_input(0)
    if not (info.dynamic or any(d == -1 for d in inp.shape)):
        return None
    h, w = info.imgsz
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, min=(1, 3, 32, 32), opt=(1, 3, h, w), max=(1, 3, 2 * h, 2 * w))
    config.add_optimization_profile(profile)
    return profile


def _set_precision(trt, config, precision: str, profile, info, onnx: Path, out: Path, calib: Path | None) -> None:
    """FP16 for fp16 and int8 (layers INT8 cannot take fall back to FP16, not FP32); INT8 with its calibrator."""
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision != "int8":
        return
    if profile is not None:
        config.set_calibration_profile(profile)
    # beside the engine (the ONNX may sit on a read-only mount); reused by rebuilds on another GPU
    cache = out.parent / (onnx.name.split(".")[0] + ".int8.calib")
    if calib is None and not cache.is_file():
        raise PomonaError("--int8 needs --calib DIR with synthetic images (e.g. from `pomona generate`)")
    config.set_flag(trt.BuilderFlag.INT8)
    images = calibration_images(calib) if calib is not None else []
    if calib is not None and cache.is_file():
        cache.unlink()  # new calibration data: do not reuse ranges measured on other images
    config.int8_calibrator = _make_calibrator(trt, images, info.imgsz, cache)
