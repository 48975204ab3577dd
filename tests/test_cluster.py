"""Scale-out on Ray (pomona.pipeline.cluster): a local runtime with 2 CPUs, and a real two-node cluster on this
machine (`ray start --head` + a second `ray start --address`, each with its own temp dir) with a worker killed
mid-run. Every Ray process a test starts is stopped by killing the process groups it started (never `ray stop`,
which would stop every Ray on the machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the cluster extra (pomona[cluster]) is not installed")

from pomona.errors import PomonaError  # noqa: E402
from pomona.pipeline.cluster import render  # noqa: E402
from pomona.pipeline.cluster.store import STAGING, Store  # noqa: E402
from pomona.pipeline.generate import generate_procedural, render_jobs  # noqa: E402
from pomona.pipeline.prompts import load_prompts  # noqa: E402

SIZE = (128, 96)
# Ray's token authentication is on whenever ~/.ray/auth_token exists: the test cluster and its drivers agree
# on "off" whatever this machine holds.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)
RAY_BIN = str(Path(sys.executable).with_name("ray"))
POMONA = [sys.executable, "-m", "pomona.cli"]


def _dataset_files(root: Path) -> dict[str, bytes]:
    """images/, labels/ and the manifest's lines sorted ("order aside"); nothing else is compared."""
    files = {f"{sub}/{p.name}": p.read_bytes() for sub in ("images", "labels") for p in sorted((root / sub).iterdir())}
    files["manifest"] = b"".join(sorted((root / "manifest.jsonl").read_bytes().splitlines(keepends=True)))
    return files


def _no_temporaries(root: Path) -> None:
    leftovers = [p for p in root.rglob(".*") if p.is_file() and ".tmp" in p.name]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, dict[str, bytes]]:
    """Single-machine datasets (one process) to compare the Ray runs with, by number of images."""
    cache: dict[int, dict[str, bytes]] = {}

    def make(n: int) -> dict[str, bytes]:
        if n not in cache:
            out = tmp_path_factory.mktemp("single") / f"n{n}"
            generate_procedural(out, n, SIZE, seed=7, prompts=load_prompts(None), workers=1)
            cache[n] = _dataset_files(out)
        return cache[n]

    return make


# --- a local runtime (2 CPUs) in this process -----------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()
    for key, value in saved.items():  # ray.init may export RAY_ADDRESS: later tests must not inherit it
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_local_runtime_writes_what_one_machine_writes(local_ray, tmp_path, reference):
    out = tmp_path / "ray"
    report = render.generate_procedural_ray(out, 8, SIZE, 7, load_prompts(None), frozenset(), "local", shard=3)
    assert _dataset_files(out) == reference(8)
    assert (report.images, report.rendered, report.done_before) == (8, 8, 0)
    assert sum(report.run.per_node().values()) == 8 and "images/s" in str(report)
    assert sorted(p.name for p in (out / STAGING).iterdir()) == ["job.json"]  # the records are gone
    _no_temporaries(out)
    again = render.generate_procedural_ray(out, 8, SIZE, 7, load_prompts(None), frozenset(), "local")
    assert (again.rendered, again.done_before) == (0, 8)
    with pytest.raises(PomonaError, match="other settings"):
        render.generate_procedural_ray(out, 8, SIZE, 8, load_prompts(None), frozenset(), "local")


def test_half_finished_job_renders_only_what_is_missing(local_ray, tmp_path, reference):
    out, prompts = tmp_path / "half", load_prompts(None)
    jobs = render_jobs("", range(8), prompts, 7, SIZE)
    store = Store(out)
    # what a driver killed mid-run leaves: the job file, some images published with their records, no manifest
    render.prepare(store, render._signature(prompts, jobs[:2]))
    render.render_shard(store, jobs[2:5])
    assert not (out / "manifest.jsonl").exists()
    report = render.generate_procedural_ray(out, 8, SIZE, 7, prompts, frozenset(), "local")
    assert (report.rendered, report.done_before) == (5, 3)
    assert _dataset_files(out) == reference(8)


def test_render_options_reach_the_ray_jobs(local_ray, tmp_path):
    """--depth goes through render_jobs like any render option: the Ray run writes the same depth files."""
    from pomona.pipeline.procedural.depth_noise import depth_noise

    prompts = load_prompts(None)
    generate_procedural(tmp_path / "one", 3, SIZE, seed=7, prompts=prompts, workers=1, depth_noise=depth_noise(None))
    render.generate_procedural_ray(tmp_path / "ray", 3, SIZE, 7, prompts, frozenset(), "local",
                                   depth_noise=depth_noise(None))

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and STAGING not in p.parts and p.name != "manifest.jsonl"}

    one, on_ray = files(tmp_path / "one"), files(tmp_path / "ray")
    assert any(name.startswith("depth/") for name in one) and one == on_ray
    assert _dataset_files(tmp_path / "one")["manifest"] == _dataset_files(tmp_path / "ray")["manifest"]


def test_output_the_workers_cannot_write_is_one_error_and_leaves_nothing(local_ray, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PomonaError, match="cannot write the output") as error:
        render.generate_procedural_ray(blocker / "out", 4, SIZE, 7, load_prompts(None), frozenset(), "local")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_not_empty_output_is_refused(local_ray, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(PomonaError, match="not empty"):
        render.generate_procedural_ray(tmp_path / "out", 4, SIZE, 7, load_prompts(None), frozenset(), "local")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


def test_workers_write_to_an_s3_bucket(local_ray, tmp_path, reference):
    """An fsspec URL: moto's S3 server in this process stands in for the bucket, the workers write to it."""
    s3fs = pytest.importorskip("s3fs", reason="s3:// outputs need s3fs")
    moto_server = pytest.importorskip("moto.server", reason="the S3 stand-in is moto's server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        options = {"key": "test", "secret": "test",
                   "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket="orchards")
        fs = s3fs.S3FileSystem(**options)
        report = render.generate_procedural_ray("s3://orchards/run1", 8, SIZE, 7, load_prompts(None), frozenset(),
                                                "local", storage_options=options)
        assert report.images == 8 and report.out == "s3://orchards/run1"
        assert not fs.exists(f"orchards/run1/{STAGING}/records")
        fs.get("orchards/run1/", str(tmp_path / "copy"), recursive=True)
        assert _dataset_files(tmp_path / "copy") == reference(8)
    finally:
        server.stop()


def test_annotate_actors_label_as_one_machine_does(local_ray, tmp_path):
    pytest.importorskip("ultralytics", reason="the model labeller needs the pipeline extras")
    from pomona.pipeline.annotate import annotate
    from tests.conftest import make_dataset
    from tests.test_annotate import CLASSES, _random_yolo

    teacher = _random_yolo("yolo11n-seg.yaml", tmp_path, CLASSES)
    specs = [[(30, 30, 12), (80, 50, 15)], [(60, 40, 20)], [], [(20, 70, 8), (100, 30, 10)]]
    one, on_ray = make_dataset(tmp_path / "one", specs), make_dataset(tmp_path / "ray", specs)
    kwargs = dict(labeler="model", detector=str(teacher), conf=0.01, imgsz=64, min_area=1, device="cpu")
    annotate(one, **kwargs)
    report = annotate(on_ray, **kwargs, ray="local")
    assert report.labelled == 4 and "annotated 4 images" in str(report)
    for sub in ("labels", "labels_gt"):
        assert {p.name: p.read_text() for p in (one / sub).iterdir()} == \
            {p.name: p.read_text() for p in (on_ray / sub).iterdir()}
    coco_one, coco_ray = (json.loads((d / "annotations.json").read_text()) for d in (one, on_ray))
    coco_one["info"].pop("date"), coco_ray["info"].pop("date")
    assert coco_one == coco_ray and coco_one["annotations"]  # the random teacher finds something at conf 0.01
    assert not (on_ray / ".pomona-ray-annotate").exists()


def test_diffusers_actors_make_what_one_machine_makes(local_ray, tmp_path):
    pytest.importorskip("diffusers", reason="the diffusers backend needs the diffusion extra")
    from pomona.pipeline.cluster.diffuse import generate_diffusers_ray
    from pomona.pipeline.diffusion import generate_diffusers
    from tests.test_diffusion import build_tiny_pipeline

    model = str(build_tiny_pipeline(tmp_path / "tiny-sd"))
    prompts = ["red apples on a branch", "green apples in the shade"]
    settings = dict(n=3, model=model, prompts=prompts, size=(64, 48), seed=5, steps=2, guidance=None, batch=3,
                    negative_prompt=None, device="cpu")
    generate_diffusers(tmp_path / "one", **settings)
    report = generate_diffusers_ray(tmp_path / "ray", **settings, address="local")
    assert (report.images, report.made) == (3, 3) and "images/s" in str(report)
    one, on_ray = (tmp_path / "one", tmp_path / "ray")
    assert sorted((one / "manifest.jsonl").read_text().splitlines()) == \
        sorted((on_ray / "manifest.jsonl").read_text().splitlines())
    assert {p.name: p.read_bytes() for p in (one / "images").iterdir()} == \
        {p.name: p.read_bytes() for p in (on_ray / "images").iterdir()}
    again = generate_diffusers_ray(tmp_path / "ray", **settings, address="local")
    assert (again.made, again.done_before) == (0, 3)


# --- a real two-node cluster on this machine --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_groups(groups: list[int]) -> None:
    """SIGTERM the process groups this module started, SIGKILL what is left after 3 s."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in groups):
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def two_nodes():
    """Head (1 CPU) + worker node (1 CPU), each `ray start` in its own session and temp dir; yields the head's
    address and its Ray client's (ray://)."""
    port, client_port, groups, dirs = _free_port(), _free_port(), [], []
    try:
        for head in (True, False):
            temp = tempfile.mkdtemp(prefix="pomona-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
            dirs.append(temp)
            where = ["--head", "--port", str(port), "--include-dashboard", "false",
                     "--ray-client-server-port", str(client_port)] if head else ["--address", f"127.0.0.1:{port}"]
            proc = subprocess.Popen([RAY_BIN, "start", *where, "--num-cpus", "1", "--temp-dir", temp,
                                     "--disable-usage-stats"], env=ENV, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            groups.append(proc.pid)
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output[-2000:]
        yield {"address": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{client_port}"}
    finally:
        _stop_groups(groups)
        for temp in dirs:
            shutil.rmtree(temp, ignore_errors=True)


def _render_workers() -> list[int]:
    """Ray worker processes running a render shard right now (Ray titles them after the task)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::render_shard"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _generate_cli(out: Path, n: int, address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*POMONA, "generate", str(out), "--n", str(n), "--size", "x".join(map(str, SIZE)),
                             "--seed", "7", "--ray", address, *extra], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_nodes_a_killed_worker_loses_and_duplicates_nothing(two_nodes, tmp_path, reference):
    out = tmp_path / "two"
    cli = _generate_cli(out, 24, two_nodes["address"])
    killed, deadline = None, time.monotonic() + 90
    while killed is None and cli.poll() is None and time.monotonic() < deadline:
        records = out / STAGING / "records"
        busy = _render_workers()
        if busy and records.is_dir() and any(records.iterdir()):  # mid-run: some images done, a shard in flight
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    stdout, stderr = cli.communicate(timeout=120)
    assert killed is not None, "the run ended before a worker could be killed"
    assert cli.returncode == 0, stderr[-2000:]
    assert _dataset_files(out) == reference(24)  # every image once, the same bytes as one machine
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 24
    _no_temporaries(out)
    # stdout also carries Ray's own note that a worker died; the summary is the report's lines
    assert "procedural on Ray (2 node(s)" in stdout
    assert len([line for line in stdout.splitlines() if line.startswith("  node ")]) == 2


def test_two_nodes_rerun_after_a_killed_driver_does_only_the_rest(two_nodes, tmp_path, reference):
    out = tmp_path / "driver"
    cli = _generate_cli(out, 24, two_nodes["address"])
    records, deadline = out / STAGING / "records", time.monotonic() + 90
    while cli.poll() is None and time.monotonic() < deadline:
        if records.is_dir() and len(list(records.iterdir())) >= 4:
            cli.kill()
            break
        time.sleep(0.02)
    cli.communicate(timeout=30)
    assert not (out / "manifest.jsonl").exists(), "the first run finished before it could be killed"
    rerun = _generate_cli(out, 24, two_nodes["client"])  # the rerun goes through Ray's client (ray://)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr[-2000:]
    done_before = int(stdout.split(" were already done")[0].rsplit(" ", 1)[-1])
    assert 4 <= done_before < 24
    assert _dataset_files(out) == reference(24)
    _no_temporaries(out)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_unreachable_address_is_one_line_and_quick(tmp_path):
    start, closed = time.monotonic(), f"127.0.0.1:{_free_port()}"
    for flag, env in ((["--ray", closed], ENV), (["--ray", "no-such-address"], ENV),
                      ([], {**ENV, "RAY_ADDRESS": closed})):  # RAY_ADDRESS stands for --ray
        proc = subprocess.run([*POMONA, "generate", str(tmp_path / "out"), "--n", "2", *flag], env=env,
                              capture_output=True, text=True, timeout=60)
        assert "Ray" in _one_line_error(proc)
    assert time.monotonic() - start < 45
    assert not (tmp_path / "out").exists()


def test_ray_version_mismatch_is_one_line(two_nodes, tmp_path):
    # this machine pretends to run another Ray: Ray's own check at connect time must refuse it
    script = ("import sys, ray; ray.__version__ = '2.0.0'; from pomona.cli import main; main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", script, "generate", str(tmp_path / "out"), "--n", "2", "--ray",
                           two_nodes["address"]], env=ENV, capture_output=True, text=True, timeout=60)
    line = _one_line_error(proc)
    assert "version mismatch" in line and "2.0.0" in line and ray.__version__ in line
    assert not (tmp_path / "out").exists()


# --- several GPUs of one machine: pomona train --device 0,1,2,3 (Ultralytics DDP) ----------------------------


def _tiny_split(root: Path) -> Path:
    from pomona.pipeline.split import split
    from tests.conftest import make_dataset

    specs = [[(30 + 5 * i, 40, 12)] for i in range(6)]
    make_dataset(root, specs, size=(64, 64))
    return split([root], val=0.34, seed=0).data_yaml


def test_train_passes_a_gpu_list_to_ultralytics(tmp_path, monkeypatch):
    """The flag reaches Ultralytics unchanged (it starts DDP for a list); the model is a stand-in, only the
    plumbing is under test here: the GPU test below trains for real."""
    import torch

    from pomona.pipeline import train as train_module
    from pomona.pipeline import weights

    seen = {}

    class Recorder:
        def train(self, **args):
            seen.update(args)
            (tmp_path / "run" / "weights").mkdir(parents=True)
            (tmp_path / "run" / "weights" / "best.pt").write_bytes(b"")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(weights, "load_yolo", lambda *a, **k: Recorder())
    train_module.train(_tiny_split(tmp_path / "ds"), epochs=1, imgsz=64, out=tmp_path / "run", device="0,1,2,3")
    assert seen["device"] == "0,1,2,3"
    with pytest.raises(PomonaError, match="has 4 GPU"):
        train_module.train(_tiny_split(tmp_path / "ds2"), epochs=1, imgsz=64, out=tmp_path / "run2", device="0,4")


def test_train_gpu_list_without_cuda_is_one_line(tmp_path, monkeypatch, capsys):
    import torch

    from pomona.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(_tiny_split(tmp_path / "ds")), "--epochs", "1", "--imgsz", "64", "--out",
              str(tmp_path / "run"), "--device", "0,1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_.value.code == 2 and len(err) == 1 and "CUDA is not available" in err[0]


@pytest.mark.gpu
@pytest.mark.slow
def test_train_on_every_gpu_of_this_machine(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from pomona.pipeline.train import train

    gpus = ",".join(str(i) for i in range(torch.cuda.device_count()))  # one GPU: "0", plain single-GPU training
    best = train(_tiny_split(tmp_path / "ds"), epochs=1, imgsz=64, batch=4 * torch.cuda.device_count(),
                 out=tmp_path / "run", workers=0, device=gpus)
    assert best.is_file() and best.stat().st_size > 0
