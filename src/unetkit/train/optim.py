"""Optimiser and learning-rate schedule from the config."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from unetkit.config import OptimConfig

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, epochs: int, maximize: bool) -> Scheduler:
    """Cosine decays over all epochs (stepped once per epoch); plateau watches the monitored validation score."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if maximize else "min", factor=cfg.plateau_factor,
            patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    return None


def step_scheduler(scheduler: Scheduler, score: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(score)
    elif scheduler is not None:
        scheduler.step()


def restore_scheduler(scheduler: Scheduler, state: dict[str, Any] | None, epochs: int) -> None:
    """Load a saved schedule; a cosine schedule is stretched to `epochs` (a run resumed with more epochs).

    The saved state holds the old length, which would make the learning rate climb again after the old last
    epoch. The learning rate is set to where the cosine over `epochs` stands at the saved epoch, and the
    scheduler's own steps continue along that curve from there.
    """
    if scheduler is None or not state:
        return
    scheduler.load_state_dict(state)
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max != epochs:
        scheduler.T_max = epochs
        t = min(scheduler.last_epoch, epochs)
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * t / epochs)) / 2
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
