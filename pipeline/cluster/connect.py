"""Joining a Ray cluster: one address rule, short timeouts, and one line for every way it can fail."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator

from pomona.errors import PomonaError, first_line

# A cluster that does not answer a TCP connect within this is down or firewalled: say so instead of letting
# ray.init retry for a minute.
CONNECT_TIMEOUT_S = 5.0
ADDRESS_FORMS = "local, auto, HOST:PORT or ray://HOST:PORT"


def import_ray():
    try:
        import ray
    except ImportError:
        raise PomonaError("--ray needs Ray: pip install 'pomona[cluster]'") from None
    return ray


def parse_address(address: str) -> tuple[str, tuple[str, int] | None]:
    """``--ray`` value -> (what ``ray.init`` takes, (host, port) to probe first or None)."""
    text = address.strip()
    if text in ("local", "auto"):
        return text, None
    scheme, rest = ("ray://", text[len("ray://"):]) if text.startswith("ray://") else ("", text)
    host, sep, port = rest.rpartition(":")
    if "://" in rest or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PomonaError(f"--ray {address!r} is not a Ray address; use {ADDRESS_FORMS}")
    return f"{scheme}{host}:{port}", (host.strip("[]"), int(port))


def _probe(host: str, port: int, address: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise PomonaError(f"cannot reach the Ray cluster at {address} ({why} within {CONNECT_TIMEOUT_S:.0f} s); "
                          f"is `ray start --head` running there and the port open?") from None


def _version_mismatch(error: Exception, address: str) -> PomonaError:
    """Ray's multi-line mismatch report -> one line with both versions and the fix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith(("Ray:", "Python:"))]
    found = dict(line.split(":", 1) for line in lines[:2]) if len(lines) >= 2 else {}
    ours = dict(line.split(":", 1) for line in lines[2:4]) if len(lines) >= 4 else {}
    cluster_ray, cluster_py = found.get("Ray", "?").strip(), found.get("Python", "?").strip()
    return PomonaError(f"Ray version mismatch with the cluster at {address}: it runs Ray {cluster_ray} on Python "
                       f"{cluster_py}, this machine Ray {ours.get('Ray', '?').strip()} on Python "
                       f"{ours.get('Python', '?').strip()}; install the cluster's versions (pip install "
                       f"'ray[client]=={cluster_ray}')")


def _init(ray, target: str, address: str) -> None:
    quiet = dict(log_to_driver=False, logging_level="warning")
    if target != "local":
        # Something that accepts TCP but is no Ray head (a proxy, another service) would hold ray.init for
        # 20 tries of up to 5 s each; a few seconds in all is enough for a live cluster. The user's own values win.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(CONNECT_TIMEOUT_S)))
        os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", str(int(CONNECT_TIMEOUT_S)))
    try:
        if target == "local":
            _start_or_join(ray, target, quiet)
        else:
            with _native_stderr_silenced():
                _start_or_join(ray, target, quiet)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, AuthenticationError, ...
        ray.shutdown()
        text = str(e)
        if "Version mismatch" in text:
            raise _version_mismatch(e, address) from None
        if type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in text:
            raise PomonaError(f"the Ray cluster at {address} uses token authentication: set RAY_AUTH_MODE=token and "
                              f"put the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)") from None
        if "grpc" in text.lower() and target.startswith("ray://"):
            raise PomonaError("ray:// addresses need Ray's client: pip install 'pomona[cluster]'") from None
        # Ray's client puts the server's reason on the lines after its headline: keep it, on one line
        reason = " ".join(line.strip() for line in text.splitlines() if line.strip())[:400] or type(e).__name__
        raise PomonaError(f"could not connect to the Ray cluster at {address}: {reason}") from None


def _start_or_join(ray, target: str, quiet: dict) -> None:
    if target == "local":
        # address="local" always starts a new runtime: a bare ray.init() would join any cluster that
        # `ray start` left running on this machine
        ray.init(address="local", include_dashboard=False, **quiet)
        return
    try:
        ray.init(address=target, **quiet)
    except ConnectionAbortedError as e:
        # ray://: the head's client server starts a process per client that joins the cluster on our behalf; on
        # a busy head that join can fail once (seen in tests under load). One more try, then the error stands.
        if "Initialization failure from server" not in str(e):
            raise
        ray.shutdown()
        ray.init(address=target, **quiet)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Ray's C++ client logs every failed try to file descriptor 2, which Python's logging cannot reach; while
    connecting, those go to a scratch file, so a failure is the one line we print."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def ray_session(address: str) -> Iterator:
    """Connect (or start a local runtime) for the block and disconnect after it.

    A process that is already connected (a notebook, the tests) keeps its connection: the block uses it
    and leaves it open.
    """
    # Ray's client reads these when it is imported: 5 s a try, not up to 30 (the user's own values win)
    os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", str(int(CONNECT_TIMEOUT_S)))
    os.environ.setdefault("RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S", str(int(CONNECT_TIMEOUT_S)))
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    target, probe = parse_address(address)
    if probe is not None:
        _probe(*probe, address)
    _init(ray, target, address)
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_summary(ray) -> tuple[int, float, float]:
    """(alive nodes, CPUs, GPUs) of the cluster."""
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return nodes, float(resources.get("CPU", 0)), float(resources.get("GPU", 0))


def on_cluster(ray, fn, *args, cpus: float = 0, retries: int = 3):
    """Run ``fn(*args)`` as one task on the cluster (where the output is reachable, even when this driver
    is a ray:// client) and return its result; a PomonaError raised there is raised here, as itself."""
    ref = ray.remote(fn).options(num_cpus=cpus, max_retries=retries, retry_exceptions=False).remote(*args)
    try:
        return ray.get(ref)
    except Exception as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, PomonaError):
            raise PomonaError(str(cause)) from None
        if cause is not None:
            raise PomonaError(f"{fn.__name__} failed on the cluster: {type(cause).__name__}: {first_line(cause)}") \
                from None
        raise PomonaError(f"{fn.__name__} failed on the cluster: {type(e).__name__}: {first_line(e)}") from None
