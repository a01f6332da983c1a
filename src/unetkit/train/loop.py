"""One epoch of training and one pass of validation, as plain functions (validation is `evaluate`'s own loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from unetkit.config import Config
from unetkit.data.dataset import Pair
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec
from unetkit.data.weightmap import WeightMapCache
from unetkit.distributed import any_rank
from unetkit.infer.inference import model_predictor, open_inference, validation_settings
from unetkit.infer.predictor import to_probabilities
from unetkit.infer.scoring import Scored, score_pairs
from unetkit.losses import build_loss
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


@dataclass(frozen=True)
class StepOptions:
    """How every training step runs: the autocast dtype chosen for the device (`training_autocast`; None =
    fp32), channels-last inputs, and what a non-finite loss or gradient does (`train.on_nonfinite`)."""

    autocast: torch.dtype | None = None
    channels_last: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    progress: EpochProgress,
    steps: StepOptions | None = None,
    *,
    after_step: Callable[[EpochProgress], bool] | None = None,
    total_steps: int | None = None,
    desc: str = "train",
    show: bool = True,
) -> EpochProgress:
    """Train over `loader` once, adding to `progress` (fresh, or restored from a mid-epoch checkpoint).

    `after_step` runs after every step (checkpointing, stop requests, the time budget); when it returns True
    the epoch ends there. A step whose loss or gradients are not
    finite raises NonFiniteLoss before the optimizer touches the weights, or with `on_nonfinite="skip"` is
    dropped and counted in `progress.skipped`. The running loss stays on the device and is read back only
    every few steps for the progress bar.
    """
    steps = steps or StepOptions()
    model.train()
    bar = tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True, total=total_steps,
               initial=progress.steps)
    for batch in bar:
        images = batch["image"].to(device, non_blocking=True)  # (N, C, H, W)
        if steps.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = batch["mask"].to(device, non_blocking=True)  # (N, H, W)
        weight = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        with torch.autocast(device.type, dtype=steps.autocast, enabled=steps.autocast is not None):
            logits = model(images)  # (N, C_out, h, w); h < H for a valid network
            target = center_crop(masks, *logits.shape[-2:])  # (N, h, w): the pixels the output sees
            weight = center_crop(weight, *logits.shape[-2:]) if weight is not None else None
            loss = loss_fn(logits.float(), target, weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        progress.steps += 1
        if not _finite(loss, model, check_grads=not scaler.is_enabled()):
            if steps.on_nonfinite == "stop":
                raise NonFiniteLoss(float(loss.detach()), progress.steps)
            optimizer.zero_grad(set_to_none=True)
            progress.skipped += 1
        else:
            scaler.step(optimizer)
            scaler.update()
            progress.loss_sum = progress.loss_sum.to(device) + loss.detach()
            progress.confusion.update(to_probabilities(logits.detach().float()).argmax(1), target)
        if progress.steps % 10 == 1:
            bar.set_postfix(loss=shown_loss(progress.mean_loss()))
        if after_step is not None and after_step(progress):
            break
    return progress


def validate(
    model: nn.Module,
    cfg: Config,
    pairs: Sequence[Pair],
    codec: MaskCodec,
    device: torch.device,
    *,
    weights: WeightMapCache | None = None,
    masks: DecodedMasks | None = None,
    keep_samples: int = 0,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Scored:
    """Score the validation images exactly as `unetkit evaluate CKPT --split val` will score the checkpoint.

    The network is copied into eval mode with batch norm folded (`model_predictor`), so `model` itself keeps
    its training mode, parameters and running statistics; the copy runs through the same inference and the
    same scoring loop as `evaluate`, with the run's `infer` settings (`validation_settings`). `masks` holds
    the masks decoded once for the run, so an epoch's validation does not decode them again.
    """
    inference = open_inference(model_predictor(model, device), cfg, validation_settings(cfg))
    return score_pairs(inference, pairs, codec, cfg.data.channels, loss_fn=build_loss(cfg.loss, cfg.data.num_classes),
                       weights=weights, keep_samples=keep_samples, ranked=cfg.infer.report_images,
                       classes=cfg.data.classes, rank=rank, world_size=world_size,
                       progress=progress, desc="validate", masks=masks)


def shown_loss(loss: float | None) -> str:
    """A mean loss for the progress bar and the epoch line: "-" while no step has been trained."""
    return "-" if loss is None else f"{loss:.4f}"
