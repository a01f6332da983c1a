"""One epoch of training and one pass of validation, as plain functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetkit.data.dataset import FolderDataset
from unetkit.infer.predictor import Predictor, predict_whole, to_probabilities
from unetkit.metrics import ConfusionMatrix


def center_crop(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop (..., H, W) to its central (height, width): a valid U-Net's output sees only the middle of its input."""
    top = (mask.shape[-2] - height) // 2
    left = (mask.shape[-1] - width) // 2
    return mask[..., top : top + height, left : left + width]


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    num_classes: int,
    *,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    desc: str = "train",
    progress: bool = True,
) -> tuple[float, ConfusionMatrix]:
    """Train over `loader` once; returns the mean loss and the confusion matrix of the training crops.

    The running loss is kept on the device and read back only every few steps for the progress bar, so the
    loop does not stall on a host sync each step.
    """
    model.train()
    confusion = ConfusionMatrix(num_classes)
    total = torch.zeros((), device=device)
    steps = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
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
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach()
        steps += 1
        confusion.update(to_probabilities(logits.detach().float()).argmax(1), target)
        if steps % 10 == 1:
            bar.set_postfix(loss=f"{total.item() / steps:.4f}")
    return (total.item() / max(steps, 1)), confusion


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
) -> Validation:
    """Predict every whole validation image (any size) and accumulate one confusion matrix over all of them."""
    confusion = ConfusionMatrix(num_classes)
    total, samples = 0.0, []
    for i in tqdm(range(len(dataset)), desc="validate", leave=False, disable=not progress, dynamic_ncols=True):
        item = dataset[i]
        image, mask = item["image"], item["mask"]  # (C, H, W), (H, W)
        logits = predict_whole(predictor.logits, image[None], predictor)  # (1, C_out, H, W)
        target = mask[None].to(logits.device)
        weight = item["weight"][None].to(logits.device) if "weight" in item else None
        total += float(loss_fn(logits, target, weight))
        pred = to_probabilities(logits).argmax(1)  # (1, H, W)
        confusion.update(pred, target)
        if i < keep_samples:
            samples.append((image.numpy(), mask.numpy(), pred[0].cpu().numpy()))
    return Validation(total / max(len(dataset), 1), confusion, samples)

