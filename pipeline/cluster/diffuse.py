"""``pomona generate --backend diffusers --ray``: text-to-image as Ray actors.

Ray Core actors, for the reason given in :mod:`.label`: each actor loads the pipeline once (on its own GPU when
the cluster has GPUs: ``num_gpus=1``) and makes ``--batch`` images per call with diffusion.py's own
``make_batch``, so an image depends on its seed only, as in a single-machine run. The actor publishes each image
and then its manifest record (:mod:`.job`); a killed actor is restarted and its calls retried, and a call skips
the images an earlier try finished.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pomona import atomic
from pomona.errors import PomonaError
from pomona.pipeline.cluster.connect import cluster_summary, on_cluster, ray_session
from pomona.pipeline.cluster.job import finish, prepare, probe_every_node, record_rel
from pomona.pipeline.cluster.progress import ClusterRun, ShardResult, gather, node_name
from pomona.pipeline.cluster.store import Store

MAX_RESTARTS = 3


@dataclass
class ClusterDiffusionReport:
    out: str
    images: int
    made: int
    done_before: int
    model: str
    run: ClusterRun

    def __str__(self) -> str:
        rate = self.run.rate(self.made)
        head = (f"diffusers on Ray ({self.run.nodes} node(s), {self.run.gpus:g} GPUs): {self.images} images of "
                f"{self.model} in {self.out}; made {self.made} in {self.run.seconds:.1f} s ({rate:.2f} images/s, "
                f"model loading included), {self.done_before} were already done")
        return "\n".join([head, *self.run.lines()])


class DiffusionWorker:
    """Actor: one text-to-image pipeline, loaded once."""

    def __init__(self, store: Store, model: str, device: str, job: dict):
        from pomona.pipeline.diffusion import load_pipeline, made_by

        self.store, self.model, self.job = store, model, job
        self.pipe = load_pipeline(model, device)
        self.made_by = made_by(self.pipe)

    def make(self, chunk: list[int]) -> ShardResult:
        from pomona.pipeline.diffusion import BACKEND, Sampling, image_identity, image_name, make_batch

        start, job = time.perf_counter(), self.job
        todo = [i for i in chunk if not self.store.exists(record_rel(i))]  # a retried call skips what is done
        sampling = Sampling(**job["sampling"])
        records = []
        if todo:
            images = make_batch(self.pipe, todo, job["prompts"], job["seed"], sampling, job["size"],
                                job["negative_prompt"], self.model)
            with tempfile.TemporaryDirectory(prefix="pomona-diffuse-") as scratch:
                for i, image in zip(todo, images):
                    rel = f"images/{image_name(i)}"
                    self.store.put_file(atomic.write_image(Path(scratch) / rel, image, quality=95), rel)
                    record = {**image_identity(i, job["prompts"], job["seed"], job["model_name"], sampling,
                                               job["size"], job["negative_prompt"]),
                              **self.made_by, "group": f"{BACKEND}-{job['seed'] + i}"}
                    self.store.put_json(record_rel(i), record)  # last: the image is done
                    records.append(record)
        return ShardResult(node_name(), len(todo), len(chunk) - len(todo), time.perf_counter() - start, records)


def _plan(model: str | None, size: tuple[int, int], steps: int | None, guidance: float | None):
    """(model folder or Hub id, steps and guidance) from what is on disk; fails before Ray starts."""
    from pomona.pipeline.diffusion import plan_sampling, read_configs, resolve_model

    source, local = resolve_model(model)
    if steps is not None and steps < 1:
        raise PomonaError(f"--steps must be at least 1, got {steps}")
    if guidance is not None and guidance < 0:
        raise PomonaError(f"--guidance must not be negative, got {guidance}")
    pipeline_class, configs = read_configs(source, local)
    if not pipeline_class:
        raise PomonaError(f"--ray needs the model on disk on every node: download '{model}' first "
                          f"(hf download {model} --local-dir models/NAME) and pass the folder")
    sampling = plan_sampling(pipeline_class, configs, str(model), int(size[0]), int(size[1]), steps, guidance)
    return (str(Path(source).absolute()) if local else source), sampling


def generate_diffusers_ray(out: str | Path, n: int, model: str | None, prompts: list[str], size: tuple[int, int],
                           seed: int, steps: int | None, guidance: float | None, batch: int,
                           negative_prompt: str | None, device: str | None, address: str) -> ClusterDiffusionReport:
    """Make ``n`` images with actors on the Ray cluster at ``address`` into ``out`` (a shared folder or URL)."""
    from pomona.pipeline.diffusion import image_identity

    where, sampling = _plan(model, size, steps, guidance)
    job = {"prompts": prompts, "seed": seed, "size": [int(size[0]), int(size[1])], "negative_prompt": negative_prompt,
           "sampling": {"steps": sampling.steps, "guidance": sampling.guidance, "source": sampling.source},
           "model_name": str(model)}
    signature = {"backend": "diffusers", "prompts_sha1": hashlib.sha1("\n".join(prompts).encode()).hexdigest(),
                 "images": [image_identity(i, prompts, seed, str(model), sampling, size, negative_prompt)
                            for i in range(min(n, 2))]}
    store = Store(out)
    with ray_session(address) as ray:
        cluster = cluster_summary(ray)
        created = not store.exists()
        try:
            probe_every_node(ray, store)
            done = set(on_cluster(ray, prepare, store, signature))
        except Exception:
            if created and store.is_empty():
                store.remove("")
            raise
        todo = [i for i in range(n) if i not in done]
        chunks = [todo[k:k + batch] for k in range(0, len(todo), batch)]
        use_gpu = cluster[2] >= 1 and device != "cpu"
        workers = min(len(chunks), int(cluster[2]) if use_gpu else max(1, int(cluster[1])))
        actor = ray.remote(DiffusionWorker).options(num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1,
                                                    max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        actors = [actor.remote(store, where, "cuda" if use_gpu else "cpu", job) for _ in range(workers)]
        refs = [actors[k % workers].make.remote(chunk) for k, chunk in enumerate(chunks)]  # round-robin queues
        run = gather(ray, refs, n, n - len(todo), "diffusers (ray)", cluster)
        for a in actors:
            ray.kill(a)
        records = [record for result in run.results for record in result.records]
        images, _ = on_cluster(ray, finish, store, records)
    return ClusterDiffusionReport(str(store), images, run.images, n - len(todo), str(model), run)
