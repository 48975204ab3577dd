"""Stage: train YOLO11-seg with Ultralytics, offline, from a model yaml (scratch) or a .pt."""

from __future__ import annotations

import sys
from pathlib import Path

from pomona.dataset import read_data_yaml
from pomona.errors import PomonaError
from pomona.offline import online


def _skip_amp_download() -> None:
    """On CUDA, Ultralytics' AMP check downloads yolo26n.pt; offline we trust AMP instead of hanging on it."""
    import ultralytics.engine.trainer as trainer
    from ultralytics.utils import LOGGER, WEIGHTS_DIR

    if online() or (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return
    original = trainer.check_amp

    def check_amp(model):
        if next(model.parameters()).device.type != "cuda":
            return original(model)  # returns False without downloading on CPU/MPS
        LOGGER.info("AMP: offline, skipping the download-based check; training with AMP")
        return True

    trainer.check_amp = check_amp


def short_run_ema(decay: float, tau: float):
    """An Ultralytics callback that gives the trainer an EMA sized for this run instead of for COCO.

    Ultralytics' EMA ramps its decay as ``0.9999 * (1 - exp(-updates / 2000))``; there is one update per optimizer
    step, which with batch 16 (gradients accumulated to 64 images) is one per 64 images. A 20-epoch run over 1440
    images makes about 450 updates, where that decay is still 0.20: the saved weights are the last step's, not an
    average, and single epochs swing on real photos. ``decay`` / ``tau`` set the plateau and the ramp instead.
    """
    from ultralytics.utils import LOGGER
    from ultralytics.utils.torch_utils import ModelEMA

    def install(trainer) -> None:
        old = trainer.ema
        ema = ModelEMA(trainer.model, decay=decay, tau=tau, updates=old.updates if old else 0)
        if old is not None:  # a resumed run has already loaded its EMA weights
            ema.ema.load_state_dict(old.ema.state_dict())
        trainer.ema = ema
        LOGGER.info(f"EMA: decay {decay}, ramp tau {tau} updates (sized for a short run)")

    return install


def load_recipe_section(recipe: str | None, section: str) -> dict:
    if not recipe:
        return {}
    from pomona.pipeline.recipe import load_recipe

    return dict(load_recipe(recipe).get(section) or {})


def resolve_training_data(data: list[Path], out: Path) -> Path:
    """One data.yaml as is; dataset folders are split by source group (seed 0, val 0.1) into ``out/data.yaml``."""
    if len(data) == 1 and Path(data[0]).suffix in (".yaml", ".yml"):
        return Path(data[0])
    for d in data:
        if Path(d).is_file():
            raise PomonaError(f"{d}: give one data.yaml, or dataset folders only")
    from pomona.pipeline.split import split

    report = split([Path(d) for d in data], val=0.1, seed=0, out=Path(out))
    print(report, file=sys.stderr)
    return report.data_yaml


def train(data_yaml: Path, model: str = "yolo11n-seg.yaml", epochs: int = 30, imgsz: int = 320, batch: int = 16,
          out: Path = Path("runs/train"), workers: int | None = None, device: str | None = None,
          recipe: str | None = None, resume: bool = False, **overrides) -> Path:
    """Train and return ``OUT/weights/best.pt``. ``overrides`` are passed to Ultralytics (augmentation, lr, ...).

    ``model`` is a model yaml (from scratch), a .pt or a shipped model's name (fine-tune from it). ``resume``
    continues the interrupted run whose ``last.pt`` is ``model``, with the settings it was started with.
    """
    from pomona.pipeline.weights import load_yolo

    if epochs < 1 or imgsz < 32 or batch < 1:
        raise PomonaError(f"epochs, imgsz and batch must be positive (got {epochs}, {imgsz}, {batch})")
    spec = read_data_yaml(data_yaml)  # one-line errors for a data.yaml pointing nowhere
    spec.images("train")
    yolo = load_yolo(model, "model", task="segment")
    _skip_amp_download()
    from pomona.pipeline.devices import normalize_device
    from pomona.machine import cpu_cores

    out = Path(out).resolve()
    if resume:
        return _resume(yolo, out, device, overrides.get("ema_decay"), overrides.get("ema_tau"))
    # Periodic checkpoints left by an earlier run in this folder would pass for this run's epochs
    # (weight averaging takes the newest ones); Ultralytics itself overwrites best.pt and last.pt.
    for stale in (out / "weights").glob("epoch*.pt"):
        stale.unlink()
    args = dict(
        data=str(spec.yaml_path), epochs=epochs, imgsz=imgsz, batch=batch, project=str(out.parent), name=out.name,
        exist_ok=True, workers=workers if workers is not None else cpu_cores(),
        device=normalize_device(device), plots=True, verbose=False,
        pretrained=not str(model).endswith((".yaml", ".yml")),
    )
    args.update(load_recipe_section(recipe, "train"))
    args.update(overrides)
    ema_decay, ema_tau = args.pop("ema_decay", None), args.pop("ema_tau", None)  # pomona's keys, not Ultralytics'
    if ema_decay is not None:
        yolo.add_callback("on_pretrain_routine_end", short_run_ema(float(ema_decay), float(ema_tau or 2000)))
    yolo.train(**args)
    return _best(out)


def seconds_trained(out: Path) -> float:
    """Wall seconds of the epochs recorded in ``out/results.csv``, over every training session. Ultralytics'
    ``time`` column counts from the start of each session (a resumed run starts it again), so the last value
    of each session is added. 0 without a record; the unfinished epoch of an interrupted session is not in it."""
    import csv

    try:
        with open(Path(out) / "results.csv", newline="") as f:
            times = [float(row["time"]) for row in csv.DictReader(f, skipinitialspace=True) if row.get("time")]
    except (OSError, KeyError, ValueError):
        return 0.0
    ends = [t for t, after in zip(times, times[1:] + [0.0]) if after < t]  # each session's last epoch
    return float(sum(ends))


def _best(out: Path) -> Path:
    best = out / "weights" / "best.pt"
    if not best.is_file():
        raise PomonaError(f"training finished but {best} was not written")
    return best


def _resume(yolo, out: Path, device: str | None, ema_decay, ema_tau) -> Path:
    """Ultralytics' resume: epochs, data and augmentation come from the checkpoint; its epoch checkpoints stay."""
    from pomona.pipeline.devices import normalize_device

    if ema_decay is not None:  # the run's own EMA is in the checkpoint; the callback keeps it sized for the run
        yolo.add_callback("on_pretrain_routine_end", short_run_ema(float(ema_decay), float(ema_tau or 2000)))
    yolo.train(resume=True, device=normalize_device(device))
    return _best(out)
