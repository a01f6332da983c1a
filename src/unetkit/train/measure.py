"""Timing this machine: how long a training step, an image read and a validation pass take here.

A plan for N minutes must know how many steps fit, and that depends on the CPU or GPU, the network, the
precision and the memory format, which no table can predict (bf16 is twice as fast as fp32 on a CPU with
AVX-512 bf16, slower on one without). So the planner times a few real steps (the training loop's own step:
forward, loss, backward, Adam) of each candidate on random input of the planned shape, after one warm-up step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from skimage.filters import gaussian

from unetkit.config import Config
from unetkit.data.dataset import FolderDataset, Pair
from unetkit.data.io import read_raw
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec
from unetkit.data.pairs import crop_rows, rows_of
from unetkit.data.transforms import train_transform
from unetkit.infer.gaps import SEED_LEVELS, gap_lines
from unetkit.infer.instances import grow_objects, true_objects
from unetkit.instance_metrics import InstanceScores
from unetkit.losses import build_loss
from unetkit.models.build import build_model
from unetkit.train.loop import StepOptions, train_one_epoch, validate
from unetkit.train.optim import build_optimizer
from unetkit.train.setup import training_autocast
from unetkit.train.state import EpochProgress


def _batches(cfg: Config, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` random batches of the planned shape: (B, C, crop, crop) images, (B, crop, crop) masks."""
    data = cfg.data
    generator = torch.Generator().manual_seed(0)
    shape = (data.batch_size, data.channels, data.crop_size, data.crop_size)
    return [{"image": torch.randn(shape, generator=generator),
             "mask": torch.randint(0, data.num_classes, (shape[0], *shape[2:]), generator=generator)}
            for _ in range(count)]


def time_training_step(cfg: Config, device: torch.device, steps: int = 3, give_up: float | None = None) -> float:
    """Median seconds of one training step of `cfg`'s network, loss, optimizer, batch, crop and precision.
    With `give_up`, a candidate whose first step (the warm-up, which can only be slower) already takes longer
    is not timed further and returns `inf`: bf16 on a CPU without bf16 units takes ~15x the fp32 step, and four
    such steps would cost a short budget a fifth of its minutes."""
    torch.manual_seed(0)
    out = 1 if cfg.loss.binary else cfg.data.num_classes
    model = build_model(cfg.model, cfg.data.channels, out, pretrained=False).to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, cfg.data.num_classes).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    options = StepOptions(training_autocast(cfg.train.precision, device), cfg.train.channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=options.autocast is torch.float16)
    batches = _batches(cfg, steps + 1)
    stamps: list[float] = [time.perf_counter()]

    def stamp(_: EpochProgress) -> bool:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        return give_up is not None and len(stamps) == 2 and stamps[1] - stamps[0] > give_up

    progress = EpochProgress(0, cfg.data.num_classes, loss_sum=torch.zeros((), device=device))
    train_one_epoch(model, batches, loss_fn, optimizer, scaler, device, progress, options, after_step=stamp,
                    show=False)
    if len(stamps) == 2:  # stopped after the warm-up
        return float("inf")
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))


def time_loading(cfg: Config, pairs: Sequence[Pair], codec: MaskCodec, samples: int = 6) -> float:
    """Median seconds to read, crop and augment one training sample in this process (what a step waits for
    with `data.num_workers: 0`), with the masks already decoded, as training has them after its scan."""
    dataset = FolderDataset(pairs=list(pairs), channels=cfg.data.channels, codec=codec,
                            transform=train_transform(cfg.data), per_image=cfg.data.normalize == "image",
                            scale=cfg.data.scale, masks=DecodedMasks())
    for i in range(min(samples, len(dataset))):
        dataset[(i, i)]  # decodes and keeps the mask, as the scan before training does
    times = []
    for i in range(samples):
        began = time.perf_counter()
        dataset[(i % len(dataset), i)]
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _spread(pairs: Sequence[Pair], samples: int) -> list[Pair]:
    """Up to `samples` of `pairs`, spread evenly over them (what each timing below runs on)."""
    return [pairs[i * len(pairs) // samples] for i in range(min(samples, len(pairs)))]


def _target(pair: Pair, codec: MaskCodec) -> np.ndarray:
    """The (H, W) class indices of a pair's mask, cut to its band of rows."""
    return crop_rows(codec.decode(read_raw(pair[1]), str(pair[1])), rows_of(pair))


def time_objects(pairs: Sequence[Pair], codec: MaskCodec, samples: int = 2) -> float:
    """Seconds per image to grow an instance model's objects and score them (DSB), which the choices after
    training repeat for every seed threshold and object size. Timed on probabilities made from the true
    background / interior / boundary of up to `samples` validation images, so the objects are as many and as
    large as a trained model's (an untrained network's noise would grow other objects)."""
    chosen = _spread(pairs, samples)
    began = time.perf_counter()
    for pair in chosen:
        target = _target(pair, codec)  # (H, W) classes 0, 1, 2
        probs = np.eye(3, dtype=np.float32)[target].transpose(2, 0, 1)  # (3, H, W)
        InstanceScores().update(true_objects(pair[1], target, codec.encoding, rows=rows_of(pair)),
                                grow_objects(probs))
    return (time.perf_counter() - began) / max(len(chosen), 1)


def time_gap_lines(pairs: Sequence[Pair], codec: MaskCodec, samples: int = 2) -> float:
    """Seconds per image to close a boundary map's gaps (`gaps.gap_lines`, a watershed), which the choices
    after training do once per seed level. Timed on a smoothed copy of up to `samples` validation images' true
    boundaries, so the regions are as many as a trained model's (its probabilities are smooth where the truth
    is sharp)."""
    chosen = _spread(pairs, samples)
    began = time.perf_counter()
    for pair in chosen:
        target = _target(pair, codec)  # (H, W) classes 0, 1
        gap_lines(gaussian((target == 1).astype(np.float32), sigma=2), SEED_LEVELS[len(SEED_LEVELS) // 2])
    return (time.perf_counter() - began) / max(len(chosen), 1)


def time_validation(cfg: Config, device: torch.device, pairs: Sequence[Pair], codec: MaskCodec,
                    samples: int = 6) -> float:
    """Seconds per image of a validation pass: the training loop's own `validate` (read, predict at the
    planned scale, grow back, score) on up to `samples` of the validation images, spread over them, with an
    untrained network of the planned shape, after one image of warm-up. Small images are dominated by what
    surrounds the network (reading, resampling, scoring), so a network-only timing would undercount them."""
    model = build_model(cfg.model, cfg.data.channels, 1 if cfg.loss.binary else cfg.data.num_classes,
                        pretrained=False).to(device)
    chosen = _spread(pairs, samples)
    validate(model, cfg, chosen[:1], codec, device, progress=False)
    began = time.perf_counter()
    validate(model, cfg, chosen, codec, device, progress=False)
    return (time.perf_counter() - began) / max(len(chosen), 1)
