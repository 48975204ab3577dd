"""Inference backends: one object per model file that turns an input blob into raw head outputs.

``onnxruntime`` and ``tensorrt`` are the edge path (no torch); ``ultralytics`` runs a ``.pt`` on a
workstation and is imported lazily. Every backend reports its model facts as a :class:`ModelInfo`.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from pomona.edge.metadata import ModelInfo, from_onnx_props, read_engine_file
from pomona.errors import PomonaError, first_line
from pomona.machine import cpu_cores, give_ultralytics_every_core

BACKENDS = ("auto", "onnxruntime", "tensorrt", "ultralytics")
SUFFIX_BACKEND = {".onnx": "onnxruntime", ".engine": "tensorrt", ".pt": "ultralytics"}


def resolve_backend(model: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise PomonaError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    name = SUFFIX_BACKEND.get(model.suffix.lower())
    if name is None:
        raise PomonaError(f"cannot pick a backend for {model.name}: expected .onnx, .engine or .pt")
    return name


# ONNX Runtime's worker threads spin between parallel sections by default: faster alone, but on a small CPU they
# starve the capture and post-processing threads that run beside inference. Chosen by measurement
# (benchmarks/latency/results.md, "ONNX Runtime threads and spinning"); POMONA_ORT_THREADS and
# POMONA_ORT_SPINNING (0/1) override it on a machine where another choice measures faster.
SPINNING = 0


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise PomonaError(f"{name} must be an integer, got {value!r}") from None


def onnx_on_cpu_only() -> bool:
    """Whether ONNX Runtime here has only the CPU to run on (no CUDA or TensorRT provider installed)."""
    import onnxruntime as ort

    return not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())


class OnnxBackend:
    """ONNX Runtime with the best execution provider present (TensorRT > CUDA > CPU)."""

    name = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool | None = None):
        import onnxruntime as ort

        if not path.is_file():
            raise PomonaError(f"model not found: {path}")
        threads = threads or _env_int("POMONA_ORT_THREADS") or cpu_cores()
        spinning = spinning if spinning is not None else bool(_env_int("POMONA_ORT_SPINNING", SPINNING))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.threads, self.spinning = threads, spinning
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        provider_args = []
        for p in providers:
            if p == "TensorrtExecutionProvider":  # cache built engines beside the model; FP16 where the GPU has it
                provider_args.append((p, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                          "trt_engine_cache_path": str(path.parent / ".ort_trt_cache")}))
            else:
                provider_args.append(p)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=provider_args)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise PomonaError(f"cannot load ONNX model {path}: {_onnx_problem(path, e)}") from None
        self.info: ModelInfo = from_onnx_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.dynamic = any(not isinstance(d, int) for d in inp.shape[2:])
        self.input_hw = self.info.imgsz if self.dynamic else (int(inp.shape[2]), int(inp.shape[3]))
        outs = self.session.get_outputs()
        # detections are rank 3 (1, 4+nc+nm, anchors), prototypes rank 4 (1, nm, mh, mw)
        self.output_names = [o.name for o in sorted(outs, key=lambda o: len(o.shape))]
        if len(self.output_names) != 2:
            raise PomonaError(f"{path} is not a YOLO segmentation model (expected 2 outputs, found {len(outs)})")
        self.providers = self.session.get_providers()

    @property
    def device(self) -> str:
        return self.providers[0].replace("ExecutionProvider", "")

    def __call__(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, protos = self.session.run(self.output_names, {self.input_name: blob.astype(self.input_dtype, copy=False)})
        return pred, protos


def _onnx_problem(path: Path, e: Exception) -> str:
    """onnxruntime's error for a broken file, in the words a user needs ("truncated", "empty")."""
    message = first_line(e)
    if path.stat().st_size == 0:
        return "empty file"
    if "INVALID_PROTOBUF" in message or "Protobuf parsing failed" in message:
        return "not an ONNX model, or a truncated copy of one (protobuf parsing failed)"
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", message)


def _checkpoint_problem(path: Path) -> str | None:
    """What is visibly wrong with a .pt before torch reads it (torch says "Invalid argument" for a cut zip)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not head:
        return "empty file"
    if head == b"PK" and not zipfile.is_zipfile(path):  # torch checkpoints are zip archives, their index at the end
        return "truncated checkpoint (incomplete zip archive; copy the file again)"
    if head != b"PK" and head[:1] != b"\x80":  # neither a zip nor a legacy pickle checkpoint
        return "not a PyTorch checkpoint"
    return None


class TensorRTBackend:
    """A serialized TensorRT engine with pomona's metadata header, run through cuda-python.

    An engine only runs on the TensorRT version and GPU it was built for; on a mismatch it is
    rebuilt from the sibling ``.onnx`` (same stem) with the same precision, or a clear error says so.
    """

    name = "tensorrt"

    def __init__(self, path: Path):
        try:
            import tensorrt as trt
        except ImportError:
            raise PomonaError("the tensorrt backend needs the TensorRT Python package (JetPack ships it; "
                              "on x86 `pip install tensorrt`); use the .onnx with onnxruntime instead") from None
        from pomona.export import tensorrt_engine as te

        if not path.is_file():
            raise PomonaError(f"model not found: {path}")
        info, engine_bytes = read_engine_file(path)
        want = te.build_target(info.precision)
        have = {k: info.extra.get(k) for k in want}
        if have != want:
            onnx = te.sibling_onnx(path)
            if onnx is None:
                raise PomonaError(f"{path} was built for {have} but this machine is {want}, and there is no sibling "
                                  f".onnx to rebuild it from; export it again on this machine")
            print(f"pomona: {path.name} was built for {have}, this machine is {want}: rebuilding from {onnx.name} ...",
                  file=sys.stderr)
            path = te.build_engine(onnx, precision=info.precision)
            info, engine_bytes = read_engine_file(path)
        self.info = info
        cudart = te.cudart()
        self._cudart = cudart
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise PomonaError(f"TensorRT could not deserialize {path} (corrupt file or incompatible build)")
        self.context = self.engine.create_execution_context()
        self.stream = te.check(cudart.cudaStreamCreate())
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append([name, dtype, None, 0])
        if len(self.inputs) != 1 or len(self.outputs) != 2:
            raise PomonaError(f"{path} is not a YOLO segmentation engine")
        shape = tuple(self.engine.get_tensor_shape(self.inputs[0][0]))
        self.dynamic = any(d == -1 for d in shape)
        self.input_hw = info.imgsz if self.dynamic else (int(shape[2]), int(shape[3]))
        self.input_dtype = self.inputs[0][1].type
        self.device = "cuda"
        self._shape = None

    def _ensure_buffers(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate device buffers when the input shape changes (dynamic engines)."""
        if shape == self._shape:
            return
        te_check = __import__("pomona.export.tensorrt_engine", fromlist=["check"]).check
        cudart = self._cudart
        for t in self.inputs + self.outputs:
            if t[3]:
                cudart.cudaFree(t[3])
        name = self.inputs[0][0]
        self.context.set_input_shape(name, shape)
        for t in self.inputs + self.outputs:
            t[2] = tuple(self.context.get_tensor_shape(t[0]))
            t[3] = te_check(cudart.cudaMalloc(int(np.prod(t[2])) * t[1].itemsize))
            self.context.set_tensor_address(t[0], t[3])
        self._shape = shape

    def __call__(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self._cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        blob = np.ascontiguousarray(blob, dtype=self.inputs[0][1])
        self._ensure_buffers(tuple(blob.shape))
        cudart.cudaMemcpyAsync(self.inputs[0][3], blob.ctypes.data, blob.nbytes, kind_h2d, self.stream)
        self.context.execute_async_v3(self.stream)
        outs = []
        for name, dtype, shape, ptr in self.outputs:
            host = np.empty(shape, dtype)
            cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind_d2h, self.stream)
            outs.append(host)
        cudart.cudaStreamSynchronize(self.stream)
        outs.sort(key=lambda a: a.ndim)
        return outs[0].astype(np.float32, copy=False), outs[1].astype(np.float32, copy=False)


class UltralyticsBackend:
    """A ``.pt`` through Ultralytics' own predictor (workstation only: imports torch lazily).

    Not a raw-output backend: the Predictor hands it whole frames (see ``predict``).
    """

    name = "ultralytics"

    def __init__(self, path: Path):
        if not path.is_file():
            raise PomonaError(f"model not found: {path}")
        try:
            from ultralytics import YOLO
        except ImportError:
            raise PomonaError("the ultralytics backend needs the pipeline extras (pip install 'pomona[pipeline]')") from None
        give_ultralytics_every_core()
        problem = _checkpoint_problem(path)
        if problem:
            raise PomonaError(f"cannot load {path}: {problem}")
        try:
            self.model = YOLO(str(path), task="segment")
        except Exception as e:
            detail = re.sub(r"^ERROR\W*", "", first_line(e))  # Ultralytics' own prefix would read "error: ERROR"
            raise PomonaError(f"cannot load {path} with Ultralytics: {detail}") from None
        if getattr(self.model, "task", None) != "segment":
            raise PomonaError(f"{path} is a {self.model.task} model, pomona needs a segmentation model")
        inner = getattr(self.model, "model", None)
        args = getattr(inner, "args", {}) or {}
        imgsz = args.get("imgsz", 640) if isinstance(args, dict) else 640
        imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        stride = int(max(getattr(inner, "stride", [32]))) if inner is not None else 32
        self.info = ModelInfo(names=dict(self.model.names), imgsz=tuple(int(v) for v in imgsz), stride=stride,
                              precision="fp32", extra={"source": path.name})
        self.input_hw = self.info.imgsz
        self.dynamic = True
        self.device = "cpu"
        try:
            import torch

            self.device = "cuda:0" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover - ultralytics always brings torch
            pass

    def predict(self, image_bgr: np.ndarray, conf: float, iou: float, imgsz: int):
        # retina_masks: masks at source resolution, the same contract as the edge post-processing
        return self.model.predict(image_bgr, conf=conf, iou=iou, imgsz=imgsz, retina_masks=True, verbose=False,
                                  device=self.device)[0]
