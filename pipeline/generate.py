"""Stage: generate synthetic orchard images.

The procedural backend renders scenes with exact visible-region masks and writes a complete
dataset (images, YOLO-seg labels, manifest) in parallel worker processes; the diffusers backend
makes images only (label them with ``pomona annotate``).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

from pomona import __version__, atomic
from pomona.dataset import write_labels, write_manifest
from pomona.errors import PomonaError
from pomona.machine import cpu_cores
from pomona.pipeline.prompts import load_prompts, prompt_for

BACKENDS = ("procedural", "diffusers")


@dataclass
class GenerateReport:
    out: Path
    images: int
    instances: int
    seconds: float
    backend: str = "procedural"

    def __str__(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        return (f"{self.backend}: wrote {self.images} images with {self.instances} apples to {self.out} "
                f"in {self.seconds:.1f} s ({rate:.1f} images/s)")


def _render_one(job: tuple) -> dict:
    """Worker: render image ``index`` and write its image + labels; returns the manifest record."""
    from pomona.pipeline.procedural import render

    folder, index, prompt, seed, size, disable, depth_noise = job
    scene = render(prompt, seed, size, disable=frozenset(disable), depth=depth_noise is not None)
    name = f"proc_{index:06d}"
    atomic.write_image(Path(folder) / "images" / f"{name}.jpg", scene.image, quality=95)
    write_labels(Path(folder) / "labels" / f"{name}.txt", scene.instances)
    depth_fields = {}
    if depth_noise is not None:  # depth/<name>.png and the 3D ground truth (pipeline/procedural/depth.py)
        from pomona.pipeline.procedural.depth import DepthNoise, write_still_depth

        depth_fields = write_still_depth(folder, name, scene, prompt, seed, DepthNoise(**depth_noise))
    return {
        "file": f"images/{name}.jpg",
        "prompt": prompt,
        "seed": seed,
        "backend": "procedural",
        "group": f"procedural-{seed}",  # each render is independent: its own source group
        "size": list(size),
        "apples": len(scene.instances),
        "params": scene.params,
        "pomona_version": __version__,
        **depth_fields,
    }


def render_jobs(folder: str | Path, indices, prompts: list[str], seed: int, size: tuple[int, int],
                disable: frozenset[str] = frozenset(), depth_noise: dict | None = None) -> list[tuple]:
    """The jobs of :func:`_render_one` (folder first): the only place they are built, for the local process pool
    and for the Ray tasks of :mod:`pomona.pipeline.cluster` alike, so a render option added here reaches both.
    ``depth_noise``: None (no depth) or the depth sensor's parameters (``DepthNoise.params()``)."""
    return [(str(folder), i, prompt_for(i, prompts), seed + i, size, tuple(sorted(disable)), depth_noise) for i in indices]


def generate_procedural(out: Path, n: int, size: tuple[int, int] = (640, 640), seed: int = 0,
                        prompts: list[str] | None = None, workers: int | None = None,
                        disable: frozenset[str] = frozenset(), depth_noise=None) -> GenerateReport:
    """Render ``n`` scenes into a new dataset folder ``out`` (written to a temp folder, renamed at the end).
    ``depth_noise`` (a ``procedural.depth_noise.DepthNoise``): also write depth/ and the 3D ground truth."""
    from tqdm import tqdm

    from pomona.pipeline.procedural import FAMILIES

    unknown = set(disable) - set(FAMILIES)
    if unknown:
        raise PomonaError(f"unknown randomisation family {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    prompts = prompts or load_prompts(None)
    workers = workers or cpu_cores()
    t0 = time.perf_counter()
    with atomic.atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        jobs = render_jobs(tmp, range(n), prompts, seed, size, disable, None if depth_noise is None else depth_noise.params())
        bar = tqdm(total=n, desc="render", unit="img")
        if workers == 1:
            records = []
            for job in jobs:
                records.append(_render_one(job))
                bar.update()
        else:
            # fork keeps start-up cheap; the renderer holds no threads or GPU state
            with mp.get_context("fork").Pool(workers) as pool:
                records = []
                for rec in pool.imap(_render_one, jobs, chunksize=max(1, min(8, n // (workers * 4)))):
                    records.append(rec)
                    bar.update()
        bar.close()
        write_manifest(tmp, records)
    return GenerateReport(out, n, sum(r["apples"] for r in records), time.perf_counter() - t0)


def _check_fresh(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PomonaError(f"{out} already exists and is not empty; choose a new folder or delete it")


def generate(out: Path, n: int = 100, backend: str = "procedural", size: tuple[int, int] = (640, 640), seed: int = 0,
             prompts: Path | None = None, workers: int | None = None, video: bool = False, frames: int = 90,
             model: str | None = None, steps: int | None = None, guidance: float | None = None, batch: int = 1,
             negative_prompt: str | None = None, device: str | None = None, depth: bool = False,
             depth_noise: str | float | None = None, ray: str | None = None):
    """Dispatch to a backend; validates the arguments every backend shares.
    ``depth`` (procedural): also aligned depth and 3D ground truth, seen through ``depth_noise`` (a preset name
    or a level, see ``procedural.depth_noise.depth_noise``; default d435, 0 = clean).
    ``ray``: a Ray address (local, auto, HOST:PORT, ray://HOST:PORT): the cluster makes the same dataset, and
    ``out`` may be an fsspec URL (s3://, gs://); see :mod:`pomona.pipeline.cluster`."""
    location, out = str(out), Path(out)
    if backend not in BACKENDS:
        raise PomonaError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if n < 1:
        raise PomonaError(f"--n must be at least 1, got {n}")
    if workers is not None and workers < 1:
        raise PomonaError(f"--workers must be at least 1, got {workers}")
    prompt_list = load_prompts(prompts)
    noise = _depth_noise(backend, depth, depth_noise)
    if ray is not None:
        diffusers = dict(model=model, steps=steps, guidance=guidance, batch=batch, negative_prompt=negative_prompt,
                         device=device)
        return _generate_on_ray(location, ray, backend, n, size, seed, prompt_list, video, noise, diffusers)
    if backend == "diffusers":
        from pomona.pipeline.diffusion import generate_diffusers

        if batch < 1:
            raise PomonaError(f"--batch must be at least 1, got {batch}")
        return generate_diffusers(out, n=n, model=model, prompts=prompt_list, size=size, seed=seed, steps=steps,
                                  guidance=guidance, batch=batch, negative_prompt=negative_prompt, device=device)
    _check_fresh(out)
    if video:
        if frames < 2:
            raise PomonaError(f"--frames must be at least 2, got {frames}")
        from pomona.pipeline.procedural import render_driveby

        t0 = time.perf_counter()
        summary = render_driveby(out, frames=frames, seed=seed, size=size, prompt=prompt_list[0] if prompts else None,
                                 depth_noise=noise)
        return (f"drive-by video: {frames} frames, {summary['distinct_apples']} distinct apples -> {out} "
                f"in {time.perf_counter() - t0:.1f} s")
    return generate_procedural(out, n, size, seed, prompt_list, workers, depth_noise=noise)


def _depth_noise(backend: str, depth: bool, level: str | float | None):
    """The depth sensor for --depth (None without it); --depth-noise alone, or with diffusers, is a mistake."""
    if not depth:
        if level is not None:
            raise PomonaError("--depth-noise needs --depth")
        return None
    if backend != "procedural":
        raise PomonaError("--depth needs the procedural backend (diffusers images have no ground-truth depth)")
    from pomona.pipeline.procedural.depth_noise import depth_noise

    return depth_noise(level)


def _generate_on_ray(out: str, address: str, backend: str, n: int, size: tuple[int, int], seed: int,
                     prompts: list[str], video: bool, depth_noise, diffusers: dict):
    if video:
        raise PomonaError("--ray renders stills; a --video drive-by is one sequence, render it without --ray")
    if backend == "diffusers":
        from pomona.pipeline.cluster.diffuse import generate_diffusers_ray

        if diffusers["batch"] < 1:
            raise PomonaError(f"--batch must be at least 1, got {diffusers['batch']}")
        return generate_diffusers_ray(out, n, prompts=prompts, size=size, seed=seed, address=address, **diffusers)
    from pomona.pipeline.cluster.render import generate_procedural_ray

    return generate_procedural_ray(out, n, size, seed, prompts, frozenset(), address, depth_noise=depth_noise)
