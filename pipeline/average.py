"""Average the weights of a run's last epoch checkpoints into one model.

Trained on synthetic images only, the real-photo accuracy of single epochs jumps by several
hundredths from one epoch to the next (benchmarks/sim2real: learning curve), so "the last epoch"
is a lottery ticket. Averaging the weights of the last epochs (stochastic weight averaging; SWAD,
Cha et al. 2021, uses it for domain generalisation) gives one model from the flat middle of those
epochs instead. Needs ``save_period: 1`` in training, which writes ``weights/epochN.pt``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from pomona import atomic
from pomona.errors import PomonaError

_EPOCH = re.compile(r"epoch(\d+)\.pt$")


def epoch_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epochs completed, path) of every ``weights/epochN.pt``, oldest first (Ultralytics' N is 0-based)."""
    found = [(int(m.group(1)) + 1, p) for p in Path(run).glob("weights/epoch*.pt") if (m := _EPOCH.search(p.name))]
    return sorted(found)


def average_checkpoints(checkpoints: list[Path], out: Path) -> Path:
    """One Ultralytics checkpoint whose floating-point weights (and BatchNorm statistics) are the mean of ``checkpoints``."""
    import torch

    if len(checkpoints) < 2:
        raise PomonaError(f"weight averaging needs at least 2 checkpoints, got {len(checkpoints)}")
    states = [torch.load(c, map_location="cpu", weights_only=False) for c in checkpoints]
    models = [(s.get("ema") or s["model"]).float() for s in states]  # EMA weights where training kept them
    averaged = copy.deepcopy(models[-1])
    dicts = [m.state_dict() for m in models]
    mean = {k: (sum(d[k] for d in dicts) / len(dicts) if v.dtype.is_floating_point else v)
            for k, v in dicts[-1].items()}
    averaged.load_state_dict(mean)
    ckpt = dict(states[-1])
    # the layout Ultralytics writes for a finished best.pt: half-precision model, no optimizer state
    ckpt.update(model=averaged.half(), ema=None, optimizer=None, updates=None, epoch=-1,
                averaged_from=[Path(c).name for c in checkpoints])
    with atomic.atomic_path(Path(out)) as tmp:
        torch.save(ckpt, tmp)
    return Path(out)


def average_last_epochs(run: Path, count: int) -> tuple[Path, list[int]]:
    """Replace ``run/weights/best.pt`` by the average of the last ``count`` epochs; Ultralytics' own
    pick stays as ``best_epoch.pt``. Returns the new best.pt and the epochs averaged."""
    found = epoch_checkpoints(run)
    if len(found) < 2:
        raise PomonaError(f"no epoch checkpoints to average in {Path(run) / 'weights'} (train with save_period: 1)")
    chosen = found[-int(count):]
    weights = Path(run) / "weights"
    averaged = average_checkpoints([p for _, p in chosen], weights / "averaged.pt")
    if (weights / "best.pt").exists():
        (weights / "best.pt").replace(weights / "best_epoch.pt")
    averaged.replace(weights / "best.pt")
    return weights / "best.pt", [e for e, _ in chosen]
