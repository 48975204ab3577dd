"""CLI commands of the edge runtime (`pomona run`, `pomona bench`). Owned by the edge work; placeholder."""

from pomona.errors import PomonaError


def run() -> None:
    """Run a model on a camera feed (not implemented yet)."""
    raise PomonaError("pomona run is not implemented yet")


def bench() -> None:
    """Benchmark latency (not implemented yet)."""
    raise PomonaError("pomona bench is not implemented yet")
