"""Optimiser and learning-rate schedule from the config."""

from __future__ import annotations

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
