"""One progress bar over the whole cluster, and what each node did."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pomona.errors import PomonaError, first_line


@dataclass
class ShardResult:
    """What one shard (a task or an actor call) did, returned to the driver."""

    node: str  # "IP (node id prefix)": two nodes on one host share the IP
    images: int  # made (or labelled) by this call
    skipped: int  # already done when the call started (a retried shard skips what its first try finished)
    seconds: float
    records: list = field(default_factory=list)


def node_name() -> str:
    import ray

    context = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()} ({context.get_node_id()[:8]})"


@dataclass
class ClusterRun:
    """Results of a job's shards, gathered by :func:`gather`."""

    results: list[ShardResult]
    seconds: float
    nodes: int
    cpus: float
    gpus: float

    @property
    def images(self) -> int:
        return sum(r.images for r in self.results)

    def per_node(self) -> dict[str, int]:
        counts: Counter = Counter()
        for r in self.results:
            counts[r.node] += r.images
        return dict(sorted(counts.items()))

    def rate(self, done: int) -> float:
        """Images per second for ``done`` images made in this run (0 when it took no time)."""
        return done / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        shards = Counter(r.node for r in self.results)
        return [f"  node {node}: {count} images in {shards[node]} shard(s)" for node, count in self.per_node().items()]


def _task_error(error: Exception, what: str) -> PomonaError:
    """A failed task -> one line: a PomonaError raised on a worker keeps its own text."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, PomonaError):
        return PomonaError(str(cause))
    if cause is not None:
        return PomonaError(f"{what} failed on the cluster: {type(cause).__name__}: {first_line(cause)}")
    return PomonaError(f"{what} failed on the cluster: {type(error).__name__}: {first_line(error)}")


def gather(ray, refs: list, total: int, initial: int, desc: str, cluster: tuple[int, float, float]) -> ClusterRun:
    """Wait for every shard with one tqdm bar over all images; the first failure cancels the rest and becomes
    a PomonaError (what finished stays published, so a re-run continues from there)."""
    from tqdm import tqdm

    start, results, pending = time.perf_counter(), [], list(refs)
    with tqdm(total=total, initial=initial, desc=desc, unit="img") as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(ready[0])
            except Exception as e:
                for ref in pending:
                    try:
                        ray.cancel(ref, force=True)
                    except (TypeError, ValueError):  # actor calls cannot be force-cancelled
                        ray.cancel(ref)
                raise _task_error(e, desc) from None
            results.append(result)
            bar.update(result.images + result.skipped)
    return ClusterRun(results, time.perf_counter() - start, *cluster)
