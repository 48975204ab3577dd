"""What the runtime needs to know about a model, stored inside the model file itself.

ONNX: a ``pomona`` entry (JSON) in ``metadata_props`` next to Ultralytics' own keys.
TensorRT: a length-prefixed JSON header before the serialized engine (4-byte little-endian length,
the layout Ultralytics uses, so its loader can read our engines too).
No side files: a model copied alone onto a robot still knows its class names and input size.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pomona.errors import PomonaError

METADATA_KEY = "pomona"
ENGINE_HEADER_MAX = 1 << 20  # a header longer than 1 MiB is not ours: refuse instead of reading garbage


@dataclass
class ModelInfo:
    """Model facts the runtime needs: classes, input size, stride, precision."""

    names: dict[int, str]
    imgsz: tuple[int, int]  # (height, width) the model was exported for
    stride: int = 32
    task: str = "segment"
    precision: str = "fp32"  # fp32 | fp16 | int8
    dynamic: bool = False
    batch: int = 1
    pomona_version: str = ""
    extra: dict = field(default_factory=dict)  # tensorrt version, gpu name, source weights, ...

    def to_json(self) -> str:
        d = asdict(self)
        d["names"] = {str(k): v for k, v in self.names.items()}
        d["imgsz"] = list(self.imgsz)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> "ModelInfo":
        try:
            imgsz = d["imgsz"]
            imgsz = (int(imgsz), int(imgsz)) if isinstance(imgsz, (int, float)) else (int(imgsz[0]), int(imgsz[1]))
            return cls(
                names={int(k): str(v) for k, v in dict(d["names"]).items()},
                imgsz=imgsz,
                stride=int(d.get("stride", 32)),
                task=str(d.get("task", "segment")),
                precision=str(d.get("precision", "fp32")),
                dynamic=bool(d.get("dynamic", False)),
                batch=int(d.get("batch", 1)),
                pomona_version=str(d.get("pomona_version", "")),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PomonaError(f"{source}: pomona metadata is incomplete or malformed ({e})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelInfo":
        try:
            d = json.loads(text)
        except json.JSONDecodeError:
            raise PomonaError(f"{source}: pomona metadata is not valid JSON") from None
        return cls.from_dict(d, source)


def current_version() -> str:
    try:
        from importlib.metadata import version

        return version("pomona")
    except Exception:  # running from a source tree without an install
        return "0+unknown"


def from_onnx_props(props: dict[str, str], source: str) -> ModelInfo:
    """From ONNX metadata_props (as onnxruntime's ``custom_metadata_map`` returns them)."""
    if METADATA_KEY not in props:
        hint = " (it has Ultralytics metadata: export it with `pomona export` to add pomona's)" if "names" in props else ""
        raise PomonaError(f"{source} has no pomona metadata{hint}")
    return ModelInfo.from_json(props[METADATA_KEY], source)


def info_from_ultralytics_props(props: dict[str, str]) -> dict:
    """Ultralytics writes names/imgsz as Python literals; turn them into plain values."""
    out = {}
    for key in ("names", "imgsz"):
        if key in props:
            out[key] = ast.literal_eval(props[key])
    for key in ("stride", "batch"):
        if key in props:
            out[key] = int(props[key])
    if "task" in props:
        out["task"] = props["task"]
    return out


def write_engine_file(path: str | Path, info: ModelInfo, engine_bytes: bytes) -> None:
    from pomona.atomic import atomic_path

    header = info.to_json().encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(len(header).to_bytes(4, byteorder="little", signed=True))
            f.write(header)
            f.write(engine_bytes)


def read_engine_file(path: str | Path) -> tuple[ModelInfo, bytes]:
    """Split an engine file into its metadata header and the serialized engine."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PomonaError(f"cannot read engine {path}: {e.strerror or e}") from None
    n = int.from_bytes(data[:4], byteorder="little", signed=True) if len(data) >= 4 else -1
    if not 0 < n <= min(ENGINE_HEADER_MAX, len(data) - 4):
        raise PomonaError(f"{path} has no pomona metadata header (export it with `pomona export --format engine`)")
    try:
        d = json.loads(data[4 : 4 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PomonaError(f"{path} has no pomona metadata header (export it with `pomona export --format engine`)") from None
    return ModelInfo.from_dict(d, str(path)), data[4 + n :]
