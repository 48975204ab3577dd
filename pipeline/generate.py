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

    folder, index, prompt, seed, size, disable = job
    scene = render(prompt, seed, size, disable=frozenset(disable))
    name = f"proc_{index:06d}"
    atomic.write_image(Path(folder) / "images" / f"{name}.jpg", scene.image, quality=95)
    write_labels(Path(folder) / "labels" / f"{name}.txt", scene.instances)
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
    }


def render_jobs(folder: str | Path, indices, prompts: list[str], seed: int, size: tuple[int, int],
                disable: frozenset[str] = frozenset()) -> list[tuple]:
    """The jobs of :func:`_render_one` (folder first): the only place they are built, for the local process pool
    and for the Ray tasks of :mod:`pomona.pipeline.cluster` alike, so a render option added here reaches both."""
    return [(str(folder), i, prompt_for(i, prompts), seed + i, size, tuple(sorted(disable))) for i in indices]


def generate_procedural(out: Path, n: int, size: tuple[int, int] = (640, 640), seed: int = 0,
                        prompts: list[str] | None = None, workers: int | None = None,
                        disable: frozenset[str] = frozenset()) -> GenerateReport:
    """Render ``n`` scenes into a new dataset folder ``out`` (written to a temp folder, renamed at the end)."""
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
        jobs = render_jobs(tmp, range(n), prompts, seed, size, disable)
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
             negative_prompt: str | None = None, device: str | None = None):
    """Dispatch to a backend; validates the arguments every backend shares."""
    out = Path(out)
    if backend not in BACKENDS:
        raise PomonaError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if n < 1:
        raise PomonaError(f"--n must be at least 1, got {n}")
    if workers is not None and workers < 1:
        raise PomonaError(f"--workers must be at least 1, got {workers}")
    prompt_list = load_prompts(prompts)
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
        summary = render_driveby(out, frames=frames, seed=seed, size=size, prompt=prompt_list[0] if prompts else None)
        return (f"drive-by video: {frames} frames, {summary['distinct_apples']} distinct apples -> {out} "
                f"in {time.perf_counter() - t0:.1f} s")
    return generate_procedural(out, n, size, seed, prompt_list, workers)
