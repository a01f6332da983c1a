"""Training state that is not weights: where in the epoch a run is, and the random number generators.

Both go into every checkpoint, so a run interrupted anywhere resumes at the next step with the same random
draws (dropout, and anything else using the global generators) it would have made without the interruption.
Everything is stored as tensors, numbers and tuples, so checkpoints still load with `weights_only=True`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unetkit.distributed import all_sum
from unetkit.metrics import ConfusionMatrix


@dataclass
class EpochProgress:
    """What the current epoch has done so far.

    `steps` counts batches taken from the loader (trained or skipped), which is also where a resumed epoch
    picks up; `loss_sum` (a 0-d tensor on the training device) and `confusion` cover the trained steps only.
    """

    epoch: int
    num_classes: int
    steps: int = 0
    skipped: int = 0
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    confusion: ConfusionMatrix = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = ConfusionMatrix(self.num_classes)

    @property
    def trained(self) -> int:
        return self.steps - self.skipped

    def mean_loss(self) -> float | None:
        """Mean loss over the trained steps; None when every step was skipped (there is no loss to show)."""
        return float(self.loss_sum) / self.trained if self.trained else None

    def reduced(self) -> EpochProgress:
        """The whole epoch over all ranks: confusion counts summed, loss averaged over ranks (each rank's loss is
        a mean over its share of the batch, and the shares are equal). A collective: every rank must call it."""
        total = EpochProgress(self.epoch, self.num_classes, self.steps, self.skipped)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        total.loss_sum = all_sum(self.loss_sum.detach().clone().double().cpu()) / world
        total.confusion.add_counts(all_sum(self.confusion.matrix))
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "steps": self.steps, "skipped": self.skipped,
                "loss_sum": self.loss_sum.detach().cpu(), "confusion": self.confusion.matrix}

    @classmethod
    def from_state(cls, state: dict[str, Any], num_classes: int, device: torch.device) -> EpochProgress:
        progress = cls(state["epoch"], num_classes, state["steps"], state["skipped"], state["loss_sum"].to(device))
        progress.confusion.add_counts(state["confusion"])
        return progress


def rng_state() -> dict[str, Any]:
    """The global generators of torch (CPU and CUDA), numpy and python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put the generators back where `rng_state` found them."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_deterministic(enabled: bool) -> bool:
    """Ask torch for deterministic kernels (and cuDNN without autotuning); returns the previous setting.

    On CUDA this also needs `CUBLAS_WORKSPACE_CONFIG`, which must be set before CUDA starts, so the
    training entry point sets it when the config asks for determinism.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    return previous
