"""Stage: text-to-image orchard pictures with any diffusers pipeline (the ``diffusers`` generator backend).

SD-Turbo, SDXL-Turbo, SD 1.5, SDXL, FLUX.1-schnell or any other text-to-image pipeline that
``AutoPipelineForText2Image`` can load, by Hub id or local folder. Images only: label them with
``pomona annotate OUT --labeler yolo-sam`` or ``--labeler model``.

Image ``i`` uses prompt ``prompt_for(i, prompts)`` and its own generator seeded ``seed + i``, so an
image is the same whatever ``--batch`` is and whether it was made in one run or after a resume.
Every image is written atomically and the manifest is rewritten after each batch: an
interrupted run keeps what is done, and a re-run only makes what is missing.
"""

from __future__ import annotations

import inspect
import os
import time
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
        return (f"diffusers: wrote {self.written} images, skipped {self.skipped} already done -> {self.out} "
                f"in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s; load {self.load_seconds:.1f} s); "
                f"{self.model} ({self.pipeline}, {self.device} {self.dtype}), steps {self.sampling.steps}, "
                f"guidance {guidance} ({self.sampling.source})")


# --- per-model defaults --------------------------------------------------------------------------------


def default_sampling(pipeline_class: str, model: str, pipe: Any = None) -> Sampling:
    """Steps and guidance the model was made for, inferred from the pipeline class and the model's name.

    A local folder may not carry the model's name, so the configs decide too: distilled SD/SDXL
    models (Turbo) ship a scheduler with ``timestep_spacing: trailing``; FLUX.1-schnell's
    transformer has no guidance embedding, FLUX.1-dev's does.
    """
    name = model.lower().replace("_", "-")
    scheduler_spacing = _config_value(pipe, "scheduler", "timestep_spacing")
    if "Flux" in pipeline_class:
        guidance_embeds = _config_value(pipe, "transformer", "guidance_embeds")
        if "schnell" in name or guidance_embeds is False:
            return Sampling(4, 0.0, "FLUX.1-schnell defaults")
        return Sampling(28, 3.5, "FLUX.1-dev defaults")
    if "StableDiffusion3" in pipeline_class:
        if "turbo" in name:
            return Sampling(4, 0.0, "SD3 turbo defaults")
        return Sampling(28, 7.0, "SD3 defaults")
    if pipeline_class.startswith("StableDiffusion"):
        xl = "XL" in pipeline_class
        if "turbo" in name or "lightning" in name or scheduler_spacing == "trailing":
            return Sampling(1, 0.0, f"{'SDXL-' if xl else 'SD-'}Turbo defaults (1 step, no guidance)")
        if xl:
            return Sampling(30, 5.0, "SDXL defaults")
        return Sampling(25, 7.5, "SD 1.x/2.x defaults")
    # Any other pipeline: its own __call__ defaults, capped so a default run stays reasonable.
    params = _call_parameters(pipe) if pipe is not None else {}
    steps = params.get("num_inference_steps")
    guidance = params.get("guidance_scale")
    steps_default = steps.default if steps is not None and isinstance(steps.default, int) else 25
    guidance_default = guidance.default if guidance is not None and isinstance(guidance.default, (int, float)) else None
    return Sampling(min(steps_default, 30), guidance_default, f"{pipeline_class} defaults")


def _config_value(pipe: Any, component: str, key: str) -> Any:
    part = getattr(pipe, component, None)
    config = getattr(part, "config", None)
    return config.get(key) if config is not None and hasattr(config, "get") else None


def _call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


# --- device and loading --------------------------------------------------------------------------------


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


def load_pipeline(model: str, device: str, dtype: Any | None = None):
    """Load a text-to-image pipeline; every failure is one PomonaError line naming the model."""
    try:
        import torch
        from diffusers import AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging
    except ImportError as e:
        raise PomonaError(f"the diffusers backend needs the diffusion extra: pip install 'pomona[diffusion]' ({e})") from None
    from huggingface_hub import constants as hub_constants

    path = Path(model).expanduser()
    local = path.exists()
    if local:
        if not path.is_dir():
            raise PomonaError(f"--model {model} is a file; pass a diffusers pipeline folder (with model_index.json) or a Hub id")
        if not (path / "model_index.json").is_file():
            raise PomonaError(f"--model {model} is not a diffusers pipeline folder (no model_index.json)")
    elif _looks_like_path(model):
        raise PomonaError(f"model folder not found: {model}")
    if dtype is None:
        dtype = _dtype_for(device, _pipeline_class_name(path) if local else model)
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars: our own bar is the progress
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(str(path) if local else model, torch_dtype=dtype)
    except (OSError, ValueError, EnvironmentError) as e:
        if not local and hub_constants.HF_HUB_OFFLINE:
            raise PomonaError(offline_message(model)) from None
        what = "pipeline folder" if local else "Hub model"
        raise PomonaError(f"could not load diffusers {what} '{model}': {_first_line(e)}") from None
    except Exception as e:  # broken or mismatched component weights, unknown pipeline class, ...
        raise PomonaError(f"could not load diffusers model '{model}': {type(e).__name__}: {_first_line(e)}") from None
    try:
        pipe = pipe.to(device)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        raise PomonaError(f"could not move '{model}' to {device}: {_first_line(e)}") from None
    pipe.set_progress_bar_config(disable=True)  # per-step bars would interleave with the per-image bar
    return pipe


def _pipeline_class_name(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def _dtype_for(device: str, hint: str):
    """FP32 on CPU; on accelerators FP16, except FLUX which is trained in and overflows outside bfloat16."""
    import torch

    if device == "cpu":
        return torch.float32
    if "flux" in hint.lower() and (device != "mps"):
        return torch.bfloat16
    return torch.float16


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


def generate_diffusers(out: Path, n: int, model: str | None, prompts: list[str], size: tuple[int, int],
                       seed: int = 0, steps: int | None = None, guidance: float | None = None, batch: int = 1,
                       negative_prompt: str | None = None, device: str | None = None) -> DiffusionReport:
    """Make ``n`` images ``OUT/images/diff_XXXXXX.jpg`` (size = (width, height)) and ``OUT/manifest.jsonl``.

    Resumable: an image that exists and whose manifest record matches this run is skipped; one
    made with other settings stops the run (use a new folder) rather than mixing two datasets.
    """
    import torch
    from tqdm import tqdm

    if not model:
        raise PomonaError("--model is required for --backend diffusers: a Hub id such as stabilityai/sd-turbo "
                          "or a local diffusers pipeline folder")
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

    device = pick_device(device)
    t_load = time.perf_counter()
    pipe = load_pipeline(model, device)
    load_seconds = time.perf_counter() - t_load
    pipeline_class = type(pipe).__name__
    _check_size(pipe, pipeline_class, width, height)

    defaults = default_sampling(pipeline_class, model, pipe)
    given = [flag for flag, value in (("--steps", steps), ("--guidance", guidance)) if value is not None]
    source = "given" if len(given) == 2 else defaults.source + "".join(f", {flag} given" for flag in given)
    sampling = Sampling(steps if steps is not None else defaults.steps,
                        guidance if guidance is not None else defaults.guidance, source)
    call_params = _call_parameters(pipe)
    if negative_prompt and "negative_prompt" not in call_params:
        raise PomonaError(f"{pipeline_class} takes no negative prompt; drop --negative-prompt")
    dtype_name = str(pipe.dtype).replace("torch.", "")
    scheduler_name = type(pipe.scheduler).__name__ if getattr(pipe, "scheduler", None) is not None else None

    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(images_dir)
    records = read_manifest(out)
    position = {r.get("file"): k for k, r in enumerate(records)}

    def wanted(i: int) -> dict:
        return {
            "file": f"images/{image_name(i)}",
            "prompt": prompt_for(i, prompts),
            "negative_prompt": negative_prompt,
            "seed": seed + i,
            "backend": BACKEND,
            "model": model,
            "pipeline": pipeline_class,
            "steps": sampling.steps,
            "guidance": sampling.guidance,
            "scheduler": scheduler_name,
            "size": [width, height],
            "dtype": dtype_name,
            "group": f"{BACKEND}-{seed + i}",  # every image is an independent sample: its own source group
            "pomona_version": __version__,
        }

    todo, skipped = [], 0
    for i in range(n):
        want = wanted(i)
        k = position.get(want["file"])
        if k is not None and (out / want["file"]).is_file():
            old = records[k]
            diff = [key for key in IDENTITY_KEYS if old.get(key) != want[key]]
            if diff:
                key = diff[0]
                raise PomonaError(f"{out / want['file']} was made with {key}={old.get(key)!r}, this run asks for "
                                  f"{key}={want[key]!r}; use a new output folder (or delete {out})")
            skipped += 1
        else:
            todo.append(i)

    accepts = {"negative_prompt", "guidance_scale", "height", "width", "generator", "output_type",
               "num_inference_steps", "num_images_per_prompt"} & set(call_params)
    bar = tqdm(total=n, initial=skipped, desc=f"diffusers {Path(model).name or model}", unit="img")
    t0 = time.perf_counter()
    written = 0
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            kwargs: dict[str, Any] = {
                "prompt": [prompt_for(i, prompts) for i in chunk],
                "num_inference_steps": sampling.steps,
                "height": height,
                "width": width,
                # one CPU generator per image: its noise depends on its own seed only (batch size and
                # device do not change which noise an image gets)
                "generator": [torch.Generator("cpu").manual_seed(seed + i) for i in chunk],
                "output_type": "np",
            }
            if sampling.guidance is not None and "guidance_scale" in accepts:
                kwargs["guidance_scale"] = sampling.guidance
            if negative_prompt:
                kwargs["negative_prompt"] = [negative_prompt] * len(chunk)
            kwargs = {k: v for k, v in kwargs.items() if k == "prompt" or k in accepts}
            images = np.asarray(pipe(**kwargs).images)
            if images.shape[0] != len(chunk):
                raise PomonaError(f"{pipeline_class} returned {images.shape[0]} images for {len(chunk)} prompts")
            if not np.isfinite(images).all():
                raise PomonaError(f"{model} produced NaN pixels in {dtype_name} on {device}; try a fp16-safe VAE, "
                                  f"fewer steps, or --device cpu")
            for i, image in zip(chunk, images):
                atomic.write_image(images_dir / image_name(i), _to_bgr_uint8(image), quality=95)
                record = wanted(i)
                k = position.get(record["file"])
                if k is None:
                    position[record["file"]] = len(records)
                    records.append(record)
                else:
                    records[k] = record
            write_manifest(out, records)  # after every batch: an interrupted run keeps what is done
            written += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    return DiffusionReport(out, written, skipped, time.perf_counter() - t0, load_seconds, model, pipeline_class,
                           device, dtype_name, sampling)


def _check_size(pipe: Any, pipeline_class: str, width: int, height: int) -> None:
    """SD needs sides divisible by the VAE's factor (8); FLUX packs 2x2 latents, so 16."""
    multiple = int(getattr(pipe, "vae_scale_factor", 8) or 8) * (2 if "Flux" in pipeline_class else 1)
    if width % multiple or height % multiple:
        def near(v: int) -> int:
            return max(multiple, round(v / multiple) * multiple)
        raise PomonaError(f"{pipeline_class} needs width and height divisible by {multiple}; got {width}x{height}, "
                          f"try --size {near(width)} {near(height)}")
