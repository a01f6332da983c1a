"""A time budget that the learning-rate schedule follows, so a run of `train.max_minutes` ends on time, annealed.

A cosine over a fixed number of epochs, cut off when the minutes run out, stops in the middle of the curve at a
high learning rate: the weights of that moment are a poor model. Here the cosine runs over the budget itself.
After every optimizer step the learning rate is set from the fraction of the budget used, measured by the
clock (a busy machine gets fewer steps, each at the right point of the curve); the time the last validation
took is held back for the final one, and training stops when what is left would not cover it. When the
configured epochs end first, the fraction of steps done drives the curve instead: whichever ends first ends
annealed.

    fraction  = max(elapsed / (budget - last validation), steps done / all steps)
    lr        = warm-up from lr / 10 over the first 2% of the budget, then min_lr + (lr - min_lr) * (1 + cos(pi t)) / 2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from unetkit.config import TrainConfig
from unetkit.distributed import rank_max

WARMUP = 0.02  # share of the budget spent warming up: Adam's first steps at the full rate can overshoot
clock: Callable[[], float] = time.monotonic  # seconds; replaced by a fake clock in tests


def budget_lr(base: float, min_lr: float, fraction: float) -> float:
    """The learning rate at `fraction` (0..1) of the budget: linear warm-up from base / 10, then cosine to min_lr."""
    if fraction < WARMUP:
        return base * (0.1 + 0.9 * fraction / WARMUP)
    t = min(1.0, (fraction - WARMUP) / (1 - WARMUP))
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * t)) / 2


class TimeBudget:
    """The clock of a budgeted run: `seconds` in all, of which `spent` were used before a resume.

    `validation` is how long the last validation took; it is held back so the final validation still fits.
    Every rank reads the slowest rank's clock (`rank_max`), so all take the same learning rate and stop together.
    """

    def __init__(self, seconds: float, total_steps: int, spent: float = 0.0, validation: float = 0.0) -> None:
        self.seconds, self.total_steps = seconds, max(total_steps, 1)
        self.spent, self.validation = spent, validation
        self.started = clock()

    @classmethod
    def of_run(cls, train: TrainConfig, saved: dict[str, Any] | None, steps_per_epoch: int) -> TimeBudget | None:
        """The budget of `train.max_minutes` (None without one), continuing the clock `saved` by a resumed run."""
        if train.max_minutes is None:
            return None
        saved = saved or {}
        return cls(60 * train.max_minutes, train.epochs * steps_per_epoch, saved.get("spent", 0.0),
                   saved.get("validation", 0.0))

    def now(self) -> float:
        """The budget's clock, for timing what the budget must hold back (validation)."""
        return clock()

    def elapsed(self) -> float:
        """Seconds used so far, on the slowest rank (a collective under torchrun: every rank must call it)."""
        return rank_max(self.spent + clock() - self.started)

    def reading(self, steps_done: int) -> tuple[float, bool]:
        """(share of the run done, whether the budget is spent) from one reading of the clock. The share is of
        the training time left after the validation reserve, or of the steps, whichever is further; the budget
        is spent when the time left would not cover the final validation."""
        elapsed = self.elapsed()
        fraction = min(1.0, max(elapsed / max(self.seconds - self.validation, 1e-9), steps_done / self.total_steps))
        return fraction, elapsed + self.validation >= self.seconds

    def validated(self, seconds: float) -> None:
        """Hold back the slowest rank's last validation time, so every rank decides alike (a collective)."""
        self.validation = rank_max(seconds)

    def state_dict(self) -> dict[str, Any]:
        """The clock for a checkpoint; this rank's own reading (only rank 0 saves, so no collective here)."""
        return {"spent": self.spent + clock() - self.started, "validation": self.validation}


def follow(optimizer: torch.optim.Optimizer, base_lrs: list[float], min_lr: float, fraction: float) -> None:
    """Set every parameter group's learning rate to where the budget's curve stands at `fraction`."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = budget_lr(base, min_lr, fraction)
