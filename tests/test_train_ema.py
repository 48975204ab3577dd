"""Training helpers: the recipe's short-run EMA (Ultralytics' default is sized for COCO-length runs and barely
averages a short one) and the time a run has trained, across resumed sessions."""

import math
from types import SimpleNamespace

import torch

from pomona.pipeline.train import short_run_ema


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_default_ultralytics_ema_barely_averages_a_short_run():
    from ultralytics.utils.torch_utils import ModelEMA

    assert ModelEMA(_model()).decay(450) < 0.25  # ~450 optimizer steps = the sim2real recipe's 20 epochs


def test_short_run_ema_replaces_the_trainers_ema_with_the_given_decay():
    trainer = SimpleNamespace(model=_model(), ema=None)
    short_run_ema(0.98, 20)(trainer)
    assert math.isclose(trainer.ema.decay(450), 0.98, rel_tol=1e-6)
    assert trainer.ema.decay(1) < 0.05  # the ramp still lets the first steps through


def test_short_run_ema_keeps_a_resumed_runs_averaged_weights():
    from ultralytics.utils.torch_utils import ModelEMA

    model = _model()
    old = ModelEMA(model, updates=300)
    with torch.no_grad():
        for p in old.ema.parameters():
            p.fill_(0.5)
    trainer = SimpleNamespace(model=model, ema=old)
    short_run_ema(0.98, 20)(trainer)
    assert trainer.ema.updates == 300
    assert all(torch.all(p == 0.5) for p in trainer.ema.ema.parameters())


def test_seconds_trained_adds_every_training_sessions_time(tmp_path):
    """Ultralytics' time column starts again with each resumed session: the sessions' last values add up."""
    from pomona.pipeline.train import seconds_trained

    assert seconds_trained(tmp_path) == 0.0  # no record
    rows = [(1, 100.0), (2, 210.0), (3, 50.0), (4, 120.0), (5, 30.0)]  # sessions of epochs 1-2, 3-4 and 5
    (tmp_path / "results.csv").write_text("epoch, time, train/box_loss\n" + "".join(f"{e}, {t}, 1.0\n" for e, t in rows))
    assert seconds_trained(tmp_path) == 210.0 + 120.0 + 30.0
