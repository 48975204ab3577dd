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
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pomona.errors import PomonaError
from pomona.pipeline.cluster.connect import cluster_summary, on_cluster, ray_session
from pomona.pipeline.cluster.progress import ClusterRun, ShardResult, gather, node_name
from pomona.pipeline.cluster.store import STAGING, Store

JOB = f"{STAGING}/job.json"  # the job's settings: kept, so a re-run can tell whether it is the same job
RECORDS = f"{STAGING}/records"
MANIFEST = "manifest.jsonl"
MAX_RETRIES = 5  # per task, for workers or nodes that die; a Python error is not retried (it would fail again)
PROBE_TIMEOUT_S = 60.0


@dataclass
class ClusterGenerateReport:
    out: str
    images: int  # in the finished dataset
    rendered: int  # by this run
    done_before: int
    instances: int
    run: ClusterRun

    def __str__(self) -> str:
        rate = self.rendered / self.run.seconds if self.run.seconds else 0.0
        head = (f"procedural on Ray ({self.run.nodes} node(s), {self.run.cpus:g} CPUs): {self.images} images with "
                f"{self.instances} apples in {self.out}; rendered {self.rendered} in {self.run.seconds:.1f} s "
                f"({rate:.1f} images/s), {self.done_before} were already done")
        return "\n".join([head, *self.run.lines()])


def _record_rel(index: int) -> str:
    return f"{RECORDS}/{index:06d}.json"


def _index(record: dict) -> int:
    return int(re.search(r"(\d+)\.\w+$", record["file"]).group(1))


def render_shard(store: Store, jobs: list[tuple]) -> ShardResult:
    """Task: render and publish a shard of ``_render_one`` jobs (their folder is replaced by scratch)."""
    from pomona.pipeline.generate import _render_one

    start, records, skipped = time.perf_counter(), [], 0
    with tempfile.TemporaryDirectory(prefix="pomona-render-") as scratch:
        for job in jobs:
            if store.exists(_record_rel(job[1])):  # a retried shard: the first try got this far
                skipped += 1
                continue
            folder = Path(scratch) / str(job[1])
            record = _render_one((str(folder), *job[1:]))
            store.put_tree(folder)
            store.put_json(_record_rel(job[1]), record)  # last: the image is done
            records.append(record)
    return ShardResult(node_name(), len(records), skipped, time.perf_counter() - start, records)


def check_node_writes(store: Store) -> None:
    """Task pinned to one node: can this node's workers publish into the output?"""
    store.check_writable(f"the workers on node {node_name()}")


def prepare(store: Store, signature: dict) -> list[int]:
    """Task: a new job (empty output) or the same job again; returns the indices already done."""
    if store.exists(JOB):
        if store.read_json(JOB) != signature:
            raise PomonaError(f"{store} holds a job with other settings (seed, size, prompts or render options); "
                              f"use a new output or delete it")
    elif not store.is_empty():
        raise PomonaError(f"{store} already exists and is not empty; choose a new output or delete it")
    else:
        store.put_json(JOB, signature)
    done = {int(Path(name).stem) for name in store.names(RECORDS)}
    if store.exists(MANIFEST):
        done |= {_index(json.loads(line)) for line in store.read_text(MANIFEST).splitlines() if line.strip()}
    return sorted(done)


def finish(store: Store, new_records: list[dict]) -> tuple[int, int]:
    """Task: write manifest.jsonl from every record (index order), then drop the staged records.
    Returns (images, apples) of the finished dataset."""
    by_index = {_index(r): r for r in new_records}
    if store.exists(MANIFEST):
        for line in store.read_text(MANIFEST).splitlines():
            if line.strip():
                record = json.loads(line)
                by_index.setdefault(_index(record), record)
    for name in store.names(RECORDS):
        if int(Path(name).stem) not in by_index:
            record = store.read_json(f"{RECORDS}/{name}")
            by_index[_index(record)] = record
    records = [by_index[i] for i in sorted(by_index)]
    store.put_text(MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    store.remove(RECORDS)
    store.remove_stale_temps(sorted({str(Path(r["file"]).parent) for r in records}) + ["labels", RECORDS])
    return len(records), sum(int(r.get("apples", 0)) for r in records)


def _signature(prompts: list[str], sample_jobs: list[tuple]) -> dict:
    """What makes image i what it is, apart from i: any render option added to the jobs is in here too."""
    return {"backend": "procedural", "prompts_sha1": hashlib.sha1("\n".join(prompts).encode()).hexdigest(),
            "jobs": json.loads(json.dumps([list(job[1:]) for job in sample_jobs]))}


def _probe_every_node(ray, store: Store) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(check_node_writes)
    refs = [task.options(num_cpus=0, max_retries=0,
                         scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(store)
            for node in ray.nodes() if node.get("Alive")]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    if len(ready) < len(refs):
        raise PomonaError(f"{len(refs) - len(ready)} node(s) did not answer a write check within "
                          f"{PROBE_TIMEOUT_S:.0f} s")
    for ref in refs:
        try:
            ray.get(ref)
        except Exception as e:
            cause = getattr(e, "cause", e)
            raise cause if isinstance(cause, PomonaError) else PomonaError(f"write check failed: {cause}") from None


def default_shard(images: int, cpus: float) -> int:
    """Images per task: about four tasks per CPU for balance, at most 32 to keep a retry cheap."""
    return max(1, min(32, images // max(1, int(cpus) * 4)))


def generate_procedural_ray(out: str | Path, n: int, size: tuple[int, int], seed: int, prompts: list[str],
                            disable: frozenset[str], address: str, shard: int | None = None,
                            depth_noise=None) -> ClusterGenerateReport:
    """Render ``n`` scenes on the Ray cluster at ``address`` into ``out`` (a shared folder or an fsspec URL);
    ``depth_noise`` as for :func:`pomona.pipeline.generate.generate_procedural`."""
    from pomona.pipeline.generate import render_jobs

    store = Store(out)
    options = {} if depth_noise is None else {"depth_noise": depth_noise.params()}
    jobs = render_jobs("", range(n), prompts, seed, size, disable, **options)
    signature = _signature(prompts, jobs[:2])
    with ray_session(address) as ray:
        cluster = cluster_summary(ray)
        created = not store.exists()
        try:
            _probe_every_node(ray, store)
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
