"""A time budget ends on time, annealed: the learning rate follows the clock (a fake one here, advanced by each
training step), slow steps shorten the run instead of cutting the curve, and the rate reaches its end value
exactly when the budget is spent."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config
from unetkit.train import budget as budget_module
from unetkit.train.budget import WARMUP, budget_lr
from unetkit.train.run import train

fit_module = importlib.import_module("unetkit.train.fit")  # the epochs: where the training loss is built
# 8 images x 2 crops, batch 4: 4 steps per epoch; far more epochs than the budget allows
BUDGETED = ["train.epochs=100", "train.max_minutes=0.5", "optim.lr=0.01", "optim.min_lr=0.0001",
            "train.sample_images=0"]


def test_the_curve_warms_up_then_anneals_to_its_end_value() -> None:
    assert budget_lr(1.0, 0.01, 0.0) == pytest.approx(0.1)
    assert budget_lr(1.0, 0.01, WARMUP) == pytest.approx(1.0)
    assert budget_lr(1.0, 0.01, 1.0) == pytest.approx(0.01)
    rates = [budget_lr(1.0, 0.01, f / 100) for f in range(2, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # never climbs after the warm-up


def _fake_clock(monkeypatch: pytest.MonkeyPatch, seconds_per_step: float) -> None:
    """Time passes only when a training step computes its loss: `seconds_per_step` per step, validation free."""
    now = {"t": 1000.0}
    monkeypatch.setattr(budget_module, "clock", lambda: now["t"])
    build = fit_module.build_loss

    def build_and_tick(*args: object, **kwargs: object) -> torch.nn.Module:
        loss = build(*args, **kwargs)
        forward = loss.forward

        def ticking(*a: object, **k: object) -> torch.Tensor:
            if torch.is_grad_enabled():
                now["t"] += seconds_per_step
            return forward(*a, **k)

        loss.forward = ticking
        return loss

    monkeypatch.setattr(fit_module, "build_loss", build_and_tick)


@pytest.mark.parametrize(("seconds_per_step", "steps", "epochs"), [(1.0, 30, 8), (2.0, 15, 4)])
def test_the_budget_follows_the_clock_and_ends_annealed(
        seconds_per_step: float, steps: int, epochs: int, synthetic_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_clock(monkeypatch, seconds_per_step)
    result = train(synthetic_config(*BUDGETED), progress=False)
    last = load_checkpoint(result.run_dir / "last.pt")
    # 30 budget seconds: 30 one-second steps, or 15 two-second steps (the slow machine trains fewer, not worse)
    assert last["global_step"] == steps and len(result.history) == epochs
    assert result.history[-1]["lr"] == pytest.approx(0.0001)  # the end of the curve exactly at the budget
    rates = [row["lr"] for row in result.history]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))  # annealed along the way, not cut off
    assert last["budget"]["spent"] == pytest.approx(30.0)
    assert f"time budget of 0.5 minutes used up in epoch {epochs}" in capsys.readouterr().out
    # the epochs of the curve at the same fraction of the budget have the same rate whatever the step time
    assert rates[0] == pytest.approx(budget_lr(0.01, 0.0001, 4 * seconds_per_step / 30))


def test_the_configured_epochs_end_the_curve_when_they_come_first(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, 0.01)  # fast steps: 3 epochs (12 steps) take 0.12 of the 30 seconds
    result = train(synthetic_config(*BUDGETED, "train.epochs=3"), progress=False)
    assert len(result.history) == 3 and result.history[-1]["lr"] == pytest.approx(0.0001)
