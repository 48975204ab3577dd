"""Stage: text-to-image orchard pictures with any diffusers pipeline (the ``diffusers`` generator backend).

SD-Turbo, SDXL-Turbo, SD 1.5, SDXL, FLUX.1-schnell or any other text-to-image pipeline that
``AutoPipelineForText2Image`` can load, by Hub id or local folder. Images only: label them with
``pomona annotate OUT --labeler yolo-sam`` or ``--labeler model``.

Image ``i`` uses prompt ``prompt_for(i, prompts)`` and its own generator seeded ``seed + i``, so an
image is the same whatever ``--batch`` is and whether it was made in one run or after a resume.
Every image is written atomically and the manifest is rewritten after each batch: an
interrupted run keeps what is done, and a re-run only makes what is missing (without loading
the model at all when nothing is missing).
"""

from __future__ import annotations

import inspect
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pomona import __version__, atomic
from pomona.dataset import read_manifest, write_manifest
from pomona.errors import PomonaError
from pomona.pipeline.prompts import prompt_for

BACKEND = "diffusers"
NAME_PREFIX = "diff_"
# What must agree between a manifest record and this run for an existing image to count as done.
IDENTITY_KEYS = ("prompt", "negative_prompt", "seed", "model", "steps", "guidance", "size")
# Component configs that decide per-model defaults and the size rule; read from disk before loading.
CONFIG_FILES = {"scheduler": "scheduler/scheduler_config.json", "transformer": "transformer/config.json",
                "vae": "vae/config.json"}


@dataclass(frozen=True)
class Sampling:
    """Steps and guidance for one run, and where they came from (printed and recorded)."""

    steps: int
    guidance: float | None
    source: str


@dataclass
class DiffusionReport:
    out: Path
    written: int
    skipped: int
    seconds: float
    load_seconds: float
    model: str
    pipeline: str
    device: str
    dtype: str
    sampling: Sampling

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        guidance = "pipeline default" if self.sampling.guidance is None else f"{self.sampling.guidance:g}"
        load = f"load {self.load_seconds:.1f} s" if self.written or self.load_seconds else "model not loaded"
        return (f"diffusers: wrote {self.written} images, skipped {self.skipped} already done -> {self.out} "
                f"in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s; {load}); "
                f"{self.model} ({self.pipeline}, {self.device} {self.dtype}), steps {self.sampling.steps}, "
                f"guidance {guidance} ({self.sampling.source})")


# --- per-model defaults --------------------------------------------------------------------------------


def default_sampling(pipeline_class: str, model: str, configs: dict[str, dict] | None = None) -> Sampling:
    """Steps and guidance the model was made for, from the pipeline class and the model's name.

    A local folder may not carry the model's name, so component configs decide too: distilled
    SD/SDXL models (Turbo) ship a scheduler with ``timestep_spacing: trailing``; FLUX.1-schnell's
    transformer has no guidance embedding, FLUX.1-dev's does.
    """
    configs = configs or {}
    name = model.lower().replace("_", "-")
    if "Flux" in pipeline_class:
        if "schnell" in name or configs.get("transformer", {}).get("guidance_embeds") is False:
            return Sampling(4, 0.0, "FLUX.1-schnell defaults")
        return Sampling(28, 3.5, "FLUX.1-dev defaults")
    if "StableDiffusion3" in pipeline_class:
        if "turbo" in name:
            return Sampling(4, 0.0, "SD3 turbo defaults")
        return Sampling(28, 7.0, "SD3 defaults")
    if pipeline_class.startswith("StableDiffusion"):
        xl = "XL" in pipeline_class
        trailing = configs.get("scheduler", {}).get("timestep_spacing") == "trailing"
        if "turbo" in name or trailing:
            return Sampling(1, 0.0, f"{'SDXL' if xl else 'SD'}-Turbo defaults")
        if xl:
            return Sampling(30, 5.0, "SDXL defaults")
        return Sampling(25, 7.5, "SD 1.x/2.x defaults")
    # Any other pipeline: its own __call__ defaults, steps capped so a default run stays reasonable.
    params = _call_parameters(pipeline_class)
    steps = getattr(params.get("num_inference_steps"), "default", None)
    guidance = getattr(params.get("guidance_scale"), "default", None)
    return Sampling(min(steps, 30) if isinstance(steps, int) else 25,
                    float(guidance) if isinstance(guidance, (int, float)) else None, f"{pipeline_class} defaults")


def _call_parameters(pipeline: Any) -> dict[str, inspect.Parameter]:
    """The keyword arguments a pipeline (object or class name) accepts."""
    if isinstance(pipeline, str):
        try:
            import diffusers

            pipeline = getattr(diffusers, pipeline, None)
        except ImportError:
            pipeline = None
        if pipeline is None:
            return {}
    return dict(inspect.signature(pipeline.__call__).parameters)


def _size_multiple(pipeline_class: str, configs: dict[str, dict]) -> int:
    """SD needs sides divisible by the VAE's downscale (8 for real models); FLUX packs 2x2 latents: 16."""
    blocks = configs.get("vae", {}).get("block_out_channels")
    factor = 2 ** (len(blocks) - 1) if blocks else 8
    return factor * (2 if "Flux" in pipeline_class else 1)


# --- model, device, loading ----------------------------------------------------------------------------


def pick_device(device: str | None) -> str:
    """``device`` as given (checked), else cuda, else mps, else cpu."""
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise PomonaError(f"--device {device} asked for, but CUDA is not available here; use --device cpu")
        if device == "mps" and not torch.backends.mps.is_available():
            raise PomonaError("--device mps asked for, but MPS is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_for(device: str, pipeline_class: str):
    """FP32 on CPU; FP16 on accelerators, except FLUX: trained in bfloat16, it overflows in FP16."""
    import torch

    if device == "cpu":
        return torch.float32
    if "Flux" in pipeline_class and device != "mps":
        return torch.bfloat16
    return torch.float16


def _looks_like_path(model: str) -> bool:
    """A Hub id is ``name`` or ``org/name``; anything else is meant as a folder."""
    if model.startswith((".", "/", "~")) or model.endswith("/") or model.count("/") > 1:
        return True
    return os.sep != "/" and os.sep in model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def offline_message(model: str) -> str:
    short = model.rstrip("/").split("/")[-1]
    return (f"diffusers model '{model}' is not on disk and downloads are off (HF_HUB_OFFLINE=1); on a machine with "
            f"internet run `hf download {model} --local-dir models/{short}` and pass --model models/{short}, "
            f"or set POMONA_ONLINE=1 (or HF_HUB_OFFLINE=0) to let pomona fetch it")


def resolve_model(model: str | None) -> tuple[str, bool]:
    """(what to load, is it a local folder). Fails in milliseconds, before torch is imported, for
    no model, a folder that is not a pipeline, or a Hub id that is not cached while offline."""
    if not model:
        raise PomonaError("--model is required for --backend diffusers: a Hub id such as stabilityai/sd-turbo "
                          "or a local diffusers pipeline folder")
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PomonaError(f"--model {model} is a file; pass a diffusers pipeline folder (with model_index.json) "
                              f"or a Hub id")
        if not (path / "model_index.json").is_file():
            raise PomonaError(f"--model {model} is not a diffusers pipeline folder (no model_index.json)")
        return str(path), True
    if _looks_like_path(model):
        raise PomonaError(f"model folder not found: {model}")
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "model_index.json")
    except HFValidationError:
        raise PomonaError(f"--model {model!r} is neither a folder nor a valid Hub id (org/name)") from None
    if hub_constants.HF_HUB_OFFLINE and not isinstance(cached, str):
        raise PomonaError(offline_message(model))
    return model, False


def read_configs(source: str, local: bool) -> tuple[str, dict[str, dict]]:
    """(pipeline class, component configs) from the folder or the Hub cache, without loading weights;
    ("", {}) for a Hub model that is not downloaded yet."""
    def read(relative: str) -> dict:
        if local:
            path: Any = Path(source) / relative
        else:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(source, relative)
            if not isinstance(path, str):
                return {}
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    index = read("model_index.json")
    return str(index.get("_class_name", "")), {key: read(rel) for key, rel in CONFIG_FILES.items()}


def load_pipeline(model: str, device: str, dtype: Any | None = None):
    """Load a text-to-image pipeline onto ``device``; every failure is one PomonaError line naming the model."""
    source, local = resolve_model(model)
    try:
        from diffusers import AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging
    except ImportError as e:
        raise PomonaError(f"the diffusers backend needs the diffusion extra: pip install 'pomona[diffusion]' ({e})") from None
    from huggingface_hub import constants as hub_constants

    if dtype is None:
        dtype = dtype_for(device, read_configs(source, local)[0] or model)
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars: ours is the progress
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            # diffusers passes a deprecated argument to huggingface_hub: noise, not the user's concern
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:
        if not local and hub_constants.HF_HUB_OFFLINE:  # model_index.json cached, some weights not
            raise PomonaError(offline_message(model)) from None
        what = "pipeline folder" if local else "Hub model"
        raise PomonaError(f"could not load diffusers {what} '{model}': {_first_line(e)}") from None
    except Exception as e:  # broken or mismatched component weights, unknown pipeline class, ...
        raise PomonaError(f"could not load diffusers model '{model}': {type(e).__name__}: {_first_line(e)}") from None
    try:
        pipe = pipe.to(device)
    except RuntimeError as e:  # includes CUDA out of memory
        raise PomonaError(f"could not move '{model}' to {device}: {_first_line(e)}") from None
    pipe.set_progress_bar_config(disable=True)  # per-step bars would interleave with the per-image bar
    return pipe


def _pipeline_configs(pipe: Any) -> dict[str, dict]:
    return {key: dict(getattr(getattr(pipe, key, None), "config", None) or {}) for key in CONFIG_FILES}


# --- generation ---------------------------------------------------------------------------------------


def image_name(index: int) -> str:
    return f"{NAME_PREFIX}{index:06d}.jpg"


def _remove_stale_temps(images: Path) -> None:
    """A killed process (SIGKILL) cannot run atomic_path's cleanup: drop its hidden temp files."""
    for tmp in images.glob(f".{NAME_PREFIX}*.tmp.jpg"):
        tmp.unlink(missing_ok=True)


def _to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    rgb = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def plan_sampling(pipeline_class: str, configs: dict[str, dict], model: str, width: int, height: int,
                  steps: int | None, guidance: float | None) -> Sampling:
    """Check the size against the model and settle steps and guidance (given, or the model's defaults)."""
    multiple = _size_multiple(pipeline_class, configs)
    if width % multiple or height % multiple:
        near = [max(multiple, round(v / multiple) * multiple) for v in (width, height)]
        raise PomonaError(f"{pipeline_class} needs width and height divisible by {multiple}; got {width}x{height}, "
                          f"try --size {near[0]} {near[1]}")
    defaults = default_sampling(pipeline_class, model, configs)
    given = [flag for flag, value in (("--steps", steps), ("--guidance", guidance)) if value is not None]
    source_text = "given" if len(given) == 2 else defaults.source + "".join(f", {flag} given" for flag in given)
    return Sampling(steps if steps is not None else defaults.steps,
                    guidance if guidance is not None else defaults.guidance, source_text)


def image_identity(i: int, prompts: list[str], seed: int, model: str, sampling: Sampling, size: tuple[int, int],
                   negative_prompt: str | None) -> dict:
    """What makes image ``i`` what it is (the manifest keys a resumed run must agree on)."""
    return {"file": f"images/{image_name(i)}", "prompt": prompt_for(i, prompts), "negative_prompt": negative_prompt,
            "seed": seed + i, "model": model, "steps": sampling.steps, "guidance": sampling.guidance,
            "size": [int(size[0]), int(size[1])]}


def made_by(pipe) -> dict:
    """The manifest keys that say which pipeline made an image."""
    return {"backend": BACKEND, "pipeline": type(pipe).__name__, "dtype": str(pipe.dtype).replace("torch.", ""),
            "pomona_version": __version__,
            "scheduler": type(pipe.scheduler).__name__ if getattr(pipe, "scheduler", None) is not None else None}


def make_batch(pipe, chunk: list[int], prompts: list[str], seed: int, sampling: Sampling, size: tuple[int, int],
               negative_prompt: str | None, model: str) -> list[np.ndarray]:
    """Images ``chunk`` (indices) in one pipeline call, as BGR uint8; the same for a run here and a Ray actor."""
    import torch

    width, height = (int(v) for v in size)
    call_params = _call_parameters(pipe)
    if negative_prompt and "negative_prompt" not in call_params:
        raise PomonaError(f"{type(pipe).__name__} takes no negative prompt; drop --negative-prompt")
    kwargs: dict[str, Any] = {
        "prompt": [prompt_for(i, prompts) for i in chunk],
        "num_inference_steps": sampling.steps,
        "height": height,
        "width": width,
        # one CPU generator per image: an image's noise depends on its own seed only, not
        # on the batch it lands in or the device
        "generator": [torch.Generator("cpu").manual_seed(seed + i) for i in chunk],
        "output_type": "np",
        "guidance_scale": sampling.guidance,
        "negative_prompt": [negative_prompt] * len(chunk) if negative_prompt else None,
    }
    kwargs = {k: v for k, v in kwargs.items() if k == "prompt" or (k in call_params and v is not None)}
    images = np.asarray(pipe(**kwargs).images)
    if images.shape[0] != len(chunk):
        raise PomonaError(f"{type(pipe).__name__} returned {images.shape[0]} images for {len(chunk)} prompts")
    if not np.isfinite(images).all():
        raise PomonaError(f"{model} produced NaN pixels in {str(pipe.dtype).replace('torch.', '')} on {pipe.device}; "
                          f"try --device cpu or a model with an fp16-safe VAE")
    return [_to_bgr_uint8(image) for image in images]


def generate_diffusers(out: Path, n: int, model: str | None, prompts: list[str], size: tuple[int, int],
                       seed: int = 0, steps: int | None = None, guidance: float | None = None, batch: int = 1,
                       negative_prompt: str | None = None, device: str | None = None) -> DiffusionReport:
    """Make ``n`` images ``OUT/images/diff_XXXXXX.jpg`` of ``size`` = (width, height) and ``OUT/manifest.jsonl``.

    Resumable: an image that exists and whose manifest record matches this run is skipped; one
    made with other settings stops the run (use a new folder) rather than mixing two datasets.
    """
    source, local = resolve_model(model)  # fail fast, before torch and diffusers are imported
    out, (width, height) = _checked_arguments(out, n, prompts, size, batch, steps, guidance)
    device = pick_device(device)  # imports torch
    pipeline_class, configs, pipe, load_seconds = _identify_pipeline(source, local, model, device)
    sampling = plan_sampling(pipeline_class, configs, model, width, height, steps, guidance)
    dtype_name = str(dtype_for(device, pipeline_class)).replace("torch.", "")
    job = _Job(model, prompts, seed, sampling, (width, height), negative_prompt)
    images_dir, manifest = _open_output(out)
    todo, skipped = _plan_resume(out, n, job, manifest)
    written, seconds = 0, 0.0
    if todo:  # a re-run with nothing missing never loads the model
        pipe, load_seconds = _ready_pipeline(pipe, load_seconds, model, device, negative_prompt)
        pipeline_class, dtype_name = type(pipe).__name__, str(pipe.dtype).replace("torch.", "")
        written, seconds = _make_missing(pipe, job, todo, batch, manifest, images_dir, n, skipped)
    return DiffusionReport(out, written, skipped, seconds, load_seconds, model,
                           pipeline_class, device, dtype_name, sampling)


@dataclass(frozen=True)
class _Job:
    """What every image of one run shares: enough to name, make and record image ``i``."""

    model: str
    prompts: list[str]
    seed: int
    sampling: Sampling
    size: tuple[int, int]
    negative_prompt: str | None

    def identity(self, i: int) -> dict:
        return image_identity(i, self.prompts, self.seed, self.model, self.sampling, self.size, self.negative_prompt)

    def make(self, pipe: Any, chunk: list[int]) -> list[np.ndarray]:
        return make_batch(pipe, chunk, self.prompts, self.seed, self.sampling, self.size, self.negative_prompt,
                          self.model)


class _Manifest:
    """The output folder's manifest records, found by file; rewritten whole after each batch."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.records = read_manifest(out)
        self.position = {r.get("file"): k for k, r in enumerate(self.records)}

    def record(self, file: str) -> dict | None:
        k = self.position.get(file)
        return None if k is None else self.records[k]

    def put(self, record: dict) -> None:
        """Replace the record of the same file in place, or append a new one."""
        if record["file"] in self.position:
            self.records[self.position[record["file"]]] = record
        else:
            self.position[record["file"]] = len(self.records)
            self.records.append(record)

    def write(self) -> None:
        write_manifest(self.out, self.records)


def _checked_arguments(out: Path, n: int, prompts: list[str], size: tuple[int, int], batch: int,
                       steps: int | None, guidance: float | None) -> tuple[Path, tuple[int, int]]:
    """The output folder and (width, height), after every check that needs neither torch nor the model."""
    if n < 0:
        raise PomonaError(f"--n must not be negative, got {n}")
    if batch < 1:
        raise PomonaError(f"--batch must be at least 1, got {batch}")
    if steps is not None and steps < 1:
        raise PomonaError(f"--steps must be at least 1, got {steps}")
    if guidance is not None and guidance < 0:
        raise PomonaError(f"--guidance must not be negative, got {guidance}")
    if not prompts:
        raise PomonaError("no prompts given")
    width, height = (int(v) for v in size)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PomonaError(f"output is a file, not a folder: {out}")
    return out, (width, height)


def _timed_load(model: str, device: str) -> tuple[Any, float]:
    t_load = time.perf_counter()
    pipe = load_pipeline(model, device)
    return pipe, time.perf_counter() - t_load


def _identify_pipeline(source: str, local: bool, model: str, device: str) -> tuple[str, dict[str, dict], Any, float]:
    """(pipeline class, component configs, pipeline or None, load seconds), read from disk without loading
    the weights when the model is there; the pipeline is only loaded here when it must be."""
    pipeline_class, configs = read_configs(source, local)
    if pipeline_class:
        return pipeline_class, configs, None, 0.0
    # a Hub model not downloaded yet (online): download it to learn what it is
    pipe, load_seconds = _timed_load(model, device)
    return type(pipe).__name__, _pipeline_configs(pipe), pipe, load_seconds


def _open_output(out: Path) -> tuple[Path, _Manifest]:
    """The images folder (made, cleared of a killed run's temp files) and the manifest so far."""
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(images_dir)
    return images_dir, _Manifest(out)


def _plan_resume(out: Path, n: int, job: _Job, manifest: _Manifest) -> tuple[list[int], int]:
    """(indices still to make, how many are done). Done: the file exists and its record matches this run;
    a record made with other settings stops the run rather than mixing two datasets in one folder."""
    todo, skipped = [], 0
    for i in range(n):
        want = job.identity(i)
        old = manifest.record(want["file"])
        if old is None or not (out / want["file"]).is_file():
            todo.append(i)
            continue
        changed = [key for key in IDENTITY_KEYS if old.get(key) != want[key]]
        if changed:
            key = changed[0]
            raise PomonaError(f"{out / want['file']} was made with {key}={old.get(key)!r}, this run asks for "
                              f"{key}={want[key]!r}; use a new output folder (or delete {out})")
        skipped += 1
    return todo, skipped


def _ready_pipeline(pipe: Any | None, load_seconds: float, model: str, device: str,
                    negative_prompt: str | None) -> tuple[Any, float]:
    """The loaded pipeline (loading it now if planning did not) and the load seconds, checked against the run."""
    if pipe is None:
        pipe, load_seconds = _timed_load(model, device)
    if negative_prompt and "negative_prompt" not in _call_parameters(pipe):
        raise PomonaError(f"{type(pipe).__name__} takes no negative prompt; drop --negative-prompt")
    return pipe, load_seconds


def _make_missing(pipe: Any, job: _Job, todo: list[int], batch: int, manifest: _Manifest, images_dir: Path,
                  n: int, skipped: int) -> tuple[int, float]:
    """Make the ``todo`` images ``batch`` at a time under one progress bar: (images written, seconds)."""
    from tqdm import tqdm

    made = made_by(pipe)
    bar = tqdm(total=n, initial=skipped, desc=f"diffusers {Path(job.model).name or job.model}", unit="img")
    written = 0
    t_gen = time.perf_counter()
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            _write_batch(job, chunk, job.make(pipe, chunk), made, manifest, images_dir)
            written += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    return written, time.perf_counter() - t_gen


def _write_batch(job: _Job, chunk: list[int], images: list[np.ndarray], made: dict, manifest: _Manifest,
                 images_dir: Path) -> None:
    """Write one batch's images atomically and record them in the manifest."""
    for i, image in zip(chunk, images):
        atomic.write_image(images_dir / image_name(i), image, quality=95)
        manifest.put({**job.identity(i), **made, "group": f"{BACKEND}-{job.seed + i}"})  # independent samples
    manifest.write()  # after every batch: an interrupted run keeps what is done
