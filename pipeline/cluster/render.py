"""``pomona generate --ray``: procedural rendering as stateless Ray tasks.

A task renders a shard of images with generate.py's own per-image worker (``_render_one`` on the jobs of
``render_jobs``), so for the same seeds a cluster run writes the same images, labels and manifest as a
single-machine run. It renders into a scratch folder on its node and publishes each file whole (see
:mod:`.store`); an image's manifest record is published last, into ``OUT/.pomona-ray/records/``, and marks the
image done. A task killed mid-shard is retried by Ray, and the retry skips what the first try finished, so
nothing is lost or written twice; a re-run of a half-finished or finished job renders only what is missing.
The driver writes ``manifest.jsonl`` when every image is there: a dataset without one is not finished.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pomona.pipeline.cluster.connect import cluster_summary, on_cluster, ray_session
from pomona.pipeline.cluster.job import finish, prepare, probe_every_node, record_rel
from pomona.pipeline.cluster.progress import ClusterRun, ShardResult, gather, node_name
from pomona.pipeline.cluster.store import Store

MAX_RETRIES = 5  # per task, for workers or nodes that die; a Python error is not retried (it would fail again)


@dataclass
class ClusterGenerateReport:
    out: str
    images: int  # in the finished dataset
    rendered: int  # by this run
    done_before: int
    instances: int
    run: ClusterRun

    def __str__(self) -> str:
        rate = self.run.rate(self.rendered)
        head = (f"procedural on Ray ({self.run.nodes} node(s), {self.run.cpus:g} CPUs): {self.images} images with "
                f"{self.instances} apples in {self.out}; rendered {self.rendered} in {self.run.seconds:.1f} s "
                f"({rate:.1f} images/s), {self.done_before} were already done")
        return "\n".join([head, *self.run.lines()])


def render_shard(store: Store, jobs: list[tuple]) -> ShardResult:
    """Task: render and publish a shard of ``_render_one`` jobs (their folder is replaced by scratch)."""
    from pomona.pipeline.generate import _render_one

    start, records, skipped = time.perf_counter(), [], 0
    with tempfile.TemporaryDirectory(prefix="pomona-render-") as scratch:
        for job in jobs:
            if store.exists(record_rel(job[1])):  # a retried shard: the first try got this far
                skipped += 1
                continue
            folder = Path(scratch) / str(job[1])
            record = _render_one((str(folder), *job[1:]))
            store.put_tree(folder)
            store.put_json(record_rel(job[1]), record)  # last: the image is done
            records.append(record)
    return ShardResult(node_name(), len(records), skipped, time.perf_counter() - start, records)


def _signature(prompts: list[str], sample_jobs: list[tuple]) -> dict:
    """What makes image i what it is, apart from i: any render option added to the jobs is in here too."""
    return {"backend": "procedural", "prompts_sha1": hashlib.sha1("\n".join(prompts).encode()).hexdigest(),
            "jobs": json.loads(json.dumps([list(job[1:]) for job in sample_jobs]))}


def default_shard(images: int, cpus: float) -> int:
    """Images per task: about four tasks per CPU for balance, at most 32 to keep a retry cheap."""
    return max(1, min(32, images // max(1, int(cpus) * 4)))


def generate_procedural_ray(out: str | Path, n: int, size: tuple[int, int], seed: int, prompts: list[str],
                            disable: frozenset[str], address: str, shard: int | None = None,
                            depth_noise=None, storage_options: dict | None = None) -> ClusterGenerateReport:
    """Render ``n`` scenes on the Ray cluster at ``address`` into ``out`` (a shared folder or an fsspec URL with
    its ``storage_options``); ``depth_noise`` as for :func:`pomona.pipeline.generate.generate_procedural`."""
    from pomona.pipeline.generate import render_jobs

    store = Store(out, storage_options)
    options = {} if depth_noise is None else {"depth_noise": depth_noise.params()}
    jobs = render_jobs("", range(n), prompts, seed, size, disable, **options)
    signature = _signature(prompts, jobs[:2])
    with ray_session(address) as ray:
        cluster = cluster_summary(ray)
        created = not store.exists()
        try:
            probe_every_node(ray, store)
            done = set(on_cluster(ray, prepare, store, signature))
        except Exception:
            if created and store.is_empty():  # nothing half-written: not even an empty folder
                store.remove("")
            raise
        todo = [job for job in jobs if job[1] not in done]
        size_of_shard = shard or default_shard(len(todo), cluster[1])
        task = ray.remote(render_shard).options(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)
        refs = [task.remote(store, todo[i:i + size_of_shard]) for i in range(0, len(todo), size_of_shard)]
        run = gather(ray, refs, n, n - len(todo), "render (ray)", cluster)
        records = [record for result in run.results for record in result.records]
        images, apples = on_cluster(ray, finish, store, records)
    return ClusterGenerateReport(str(store), images, run.images, n - len(todo), apples, run)
