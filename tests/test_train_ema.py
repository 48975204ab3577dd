"""The recipe's short-run EMA: Ultralytics' default is sized for COCO-length runs and barely averages a short one."""

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
