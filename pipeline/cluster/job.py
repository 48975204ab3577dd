"""A cluster job's bookkeeping in its output, shared by the render tasks and the diffusion actors.

``OUT/.pomona-ray/job.json`` holds the job's settings (kept, so a re-run can tell whether it is the same job);
``OUT/.pomona-ray/records/NNNNNN.json`` is an image's manifest record, published after its files, so it marks
the image done; ``manifest.jsonl`` is written from the records when every image is there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pomona.errors import PomonaError
from pomona.pipeline.cluster.progress import node_name
from pomona.pipeline.cluster.store import STAGING, Store

JOB = f"{STAGING}/job.json"
RECORDS = f"{STAGING}/records"
MANIFEST = "manifest.jsonl"
PROBE_TIMEOUT_S = 60.0


def record_rel(index: int) -> str:
    return f"{RECORDS}/{index:06d}.json"


def _index(record: dict) -> int:
    return int(re.search(r"(\d+)\.\w+$", record["file"]).group(1))


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
    store.remove_stale_temps()
    return len(records), sum(int(r.get("apples", 0)) for r in records)


def probe_every_node(ray, store: Store) -> None:
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


