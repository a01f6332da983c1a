"""Device choice and seeding: the only process-wide state unetkit touches."""

from __future__ import annotations

import random

import numpy as np
import torch

from unetkit.errors import UnetkitError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit CUDA request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UnetkitError(f"device {name!r} (train.device or --device) is not a device; use auto, cpu, cuda or cuda:N"
                           ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnetkitError(f"device {name!r} asked for, but no CUDA GPU is visible; use auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run with the same config draws the same crops and weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
