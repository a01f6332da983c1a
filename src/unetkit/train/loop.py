"""One epoch of training and one pass of validation, as plain functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetkit.data.dataset import FolderDataset
from unetkit.distributed import all_sum, any_rank
from unetkit.infer.predictor import Predictor, predict_whole, to_probabilities
from unetkit.metrics import ConfusionMatrix
from unetkit.train.state import EpochProgress


def center_crop(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop (..., H, W) to its central (height, width): a valid U-Net's output sees only the middle of its input."""
    top = (mask.shape[-2] - height) // 2
    left = (mask.shape[-1] - width) // 2
    return mask[..., top : top + height, left : left + width]


class NonFiniteLoss(Exception):
    """The loss or the gradients of one step are NaN or infinite (the weights were not updated)."""

    def __init__(self, value: float, step: int) -> None:
        super().__init__(f"loss {value} at step {step}")
        self.value, self.step = value, step


def _finite(loss: torch.Tensor, model: nn.Module, check_grads: bool) -> bool:
    """Whether this step may update the weights: a finite loss and (unless a GradScaler handles overflow
    itself) finite gradients. One host sync per step; on a CPU that costs nothing, the step already waited."""
    ok = torch.isfinite(loss)
    if check_grads:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            ok = ok & torch.isfinite(torch.nn.utils.get_total_norm(grads))
    return not any_rank(not bool(ok))  # every rank must take the same branch


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    progress: EpochProgress,
    *,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    on_nonfinite: str = "stop",
    after_step: Callable[[EpochProgress], None] | None = None,
    total_steps: int | None = None,
    desc: str = "train",
    show: bool = True,
) -> EpochProgress:
    """Train over `loader` once, adding to `progress` (fresh, or restored from a mid-epoch checkpoint).

    `after_step` runs after every step (checkpointing, stop requests). A step whose loss or gradients are not
    finite raises NonFiniteLoss before the optimizer touches the weights, or with `on_nonfinite="skip"` is
    dropped and counted in `progress.skipped`. The running loss stays on the device and is read back only
    every few steps for the progress bar.
    """
    model.train()
    bar = tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True, total=total_steps,
               initial=progress.steps)
    for batch in bar:
        images = batch["image"].to(device, non_blocking=True)  # (N, C, H, W)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = batch["mask"].to(device, non_blocking=True)  # (N, H, W)
        weight = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(images)  # (N, C_out, h, w); h < H for a valid network
            target = center_crop(masks, *logits.shape[-2:])  # (N, h, w): the pixels the output sees
            weight = center_crop(weight, *logits.shape[-2:]) if weight is not None else None
            loss = loss_fn(logits.float(), target, weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        progress.steps += 1
        if not _finite(loss, model, check_grads=not scaler.is_enabled()):
            if on_nonfinite == "stop":
                raise NonFiniteLoss(float(loss.detach()), progress.steps)
            optimizer.zero_grad(set_to_none=True)
            progress.skipped += 1
        else:
            scaler.step(optimizer)
            scaler.update()
            progress.loss_sum = progress.loss_sum.to(device) + loss.detach()
            progress.confusion.update(to_probabilities(logits.detach().float()).argmax(1), target)
        if progress.steps % 10 == 1:
            bar.set_postfix(loss=f"{progress.mean_loss():.4f}")
        if after_step is not None:
            after_step(progress)
    return progress


@dataclass
class Validation:
    loss: float
    confusion: ConfusionMatrix
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (image, truth, pred)


@torch.inference_mode()
def validate(
    predictor: Predictor,
    dataset: FolderDataset,
    loss_fn: nn.Module,
    num_classes: int,
    *,
    keep_samples: int = 0,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Validation:
    """Predict every whole validation image (any size) and accumulate one confusion matrix over all of them.

    Under torchrun rank r predicts images r, r + world_size, ...; the confusion matrices and loss sums are then
    summed over ranks, so every image counts exactly once whatever the world size.
    """
    confusion = ConfusionMatrix(num_classes)
    total, samples = 0.0, []
    shard = range(rank, len(dataset), world_size)
    for i in tqdm(shard, desc="validate", leave=False, disable=not progress, dynamic_ncols=True):
        item = dataset[i]
        image, mask = item["image"], item["mask"]  # (C, H, W), (H, W)
        logits = predict_whole(predictor.logits, image[None], predictor)  # (1, C_out, H, W)
        target = mask[None].to(logits.device)
        weight = item["weight"][None].to(logits.device) if "weight" in item else None
        total += float(loss_fn(logits, target, weight))
        pred = to_probabilities(logits).argmax(1)  # (1, H, W)
        confusion.update(pred, target)
        if len(samples) < keep_samples:
            samples.append((image.numpy(), mask.numpy(), pred[0].cpu().numpy()))
    loss_sum = all_sum(torch.tensor([total], dtype=torch.float64))
    return Validation(float(loss_sum) / max(len(dataset), 1), confusion.all_reduce(), samples)

