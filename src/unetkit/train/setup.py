"""What a run needs before its first step: the resolved config, the checked data and class weights, the
network, its folder, the checkpoint to resume from, the training loader.

Kept apart from the training loop so that everything here can fail (bad folder, missing checkpoint) before
any work starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from unetkit.checkpoint import load_checkpoint, out_channels
from unetkit.config import Config, save_config
from unetkit.data.class_weights import class_weights
from unetkit.data.dataset import FolderDataset, Pair, dataset_pairs, scan_pairs
from unetkit.data.io import set_pixel_limit
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec
from unetkit.data.sampler import EpochSampler, worker_init
from unetkit.data.transforms import default_augment, train_transform
from unetkit.data.weightmap import WeightMapCache, weight_cache
from unetkit.distributed import World, broadcast_object
from unetkit.errors import UnetkitError
from unetkit.infer.report_data import class_entries, data_summary, split_entry
from unetkit.models.build import build_model
from unetkit.models.encoders import encoder_normalization
from unetkit.train.outputs import writing


def new_run_dir(cfg: Config, name: str) -> Path:
    """A fresh, empty run folder: `output_dir/run_name`, or `NAME-YYYYmmdd-HHMMSS`, suffixed `-2`, `-3` if taken."""
    base = Path(cfg.train.output_dir)
    stem = cfg.train.run_name or f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = base / stem, 1
    while run_dir.exists() and any(run_dir.iterdir()):  # never mix two runs in one folder
        n += 1
        run_dir = base / f"{stem}-{n}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnetkitError(f"cannot create run folder {run_dir}: {err.strerror}; set train.output_dir") from None
    return run_dir


def resolve_config(cfg: Config) -> Config:
    """Fill in what the config leaves to defaults, so config.yaml records exactly what ran."""
    cfg = cfg.model_copy(deep=True)
    if cfg.data.augment is None:
        cfg.data.augment = default_augment()
    if cfg.model.name == "encoder_unet" and not {"mean", "std"} & cfg.data.model_fields_set:
        # a pretrained encoder expects its own input normalization, unless the config sets one explicitly
        norm = encoder_normalization(cfg.model.encoder, cfg.model.encoder_weights, cfg.data.channels)
        if norm is not None:
            cfg.data.mean, cfg.data.std = norm
    channels = cfg.data.channels
    for key in ("mean", "std"):  # one value means every channel: config.yaml says so with one value each
        values = getattr(cfg.data, key)
        if len(values) == 1 and channels > 1:
            setattr(cfg.data, key, values * channels)
    return cfg


def resume_checkpoint(resume: str | Path) -> dict[str, Any]:
    """Load a run's last.pt, with a message saying what to do when there is none."""
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise UnetkitError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "last.pt").is_file():
        raise UnetkitError(f"--resume {run_dir}: it has no last.pt (the run stopped before its first checkpoint); "
                           "start the run again without --resume")
    return load_checkpoint(run_dir / "last.pt")


@dataclass
class RunData:
    """The checked data of a run: every pair was read once (`scan_pairs`) before anything was written."""

    codec: MaskCodec
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    weights: WeightMapCache | None  # the paper's border weight maps, when the loss uses them
    masks: DecodedMasks  # the training and validation masks, decoded once by the scan
    summary: dict[str, Any] | None = None  # splits, sizes and class pixels (`infer/report_data.py`) for report.html


def prepare_data(cfg: Config, say: Callable[[str], None]) -> RunData:
    """List and read every pair once (bad files fail here, before a run folder exists); the scan's class
    statistics give `loss.class_weights: median | inverse` without reading the masks again."""
    data = cfg.data
    codec = MaskCodec(data.mask, data.num_classes)
    set_pixel_limit(data.max_image_pixels)
    train_pairs, val_pairs = dataset_pairs(data)
    masks = DecodedMasks()
    train_sizes: list[tuple[int, int]] = []
    val_sizes: list[tuple[int, int]] = []
    train_counts = scan_pairs(train_pairs, data.channels, codec, masks, train_sizes)
    scan_pairs(val_pairs, data.channels, codec, masks, val_sizes)
    if isinstance(cfg.loss.class_weights, str):  # computed from the training masks, recorded in config.yaml
        method = cfg.loss.class_weights
        cfg.loss.class_weights = [round(float(w), 6) for w in class_weights(train_counts, method)]
        say(f"class weights ({method} frequency, from the training masks): {cfg.loss.class_weights}")
    summary = data_summary([split_entry("train", train_sizes), split_entry("validation", val_sizes)],
                           class_entries(data.classes, train_counts.counts, train_counts.present_masks, "train"),
                           data.channels, data.mask.encoding)
    return RunData(codec, train_pairs, val_pairs, weight_cache(data), masks, summary)


def build_network(cfg: Config, pretrained: bool) -> nn.Module:
    """The configured network, refused when the crop size cannot pass through it."""
    model = build_model(cfg.model, cfg.data.channels, out_channels(cfg), pretrained=pretrained)
    if not model.is_valid_input(cfg.data.crop_size):
        low, high = model.nearest_valid_sizes(cfg.data.crop_size)
        fits = f"{low} or {high}" if low is not None else f"{high} or more"
        raise UnetkitError(f"data.crop_size {cfg.data.crop_size} does not fit this network; use {fits}")
    return model


def open_run_dir(cfg: Config, resume: str | Path | None, name: str, world: World) -> Path:
    """The run folder (new, or the resumed one) with the resolved config written; stale temporary files of a
    process killed mid-write are removed. Every rank gets rank 0's path."""
    run_dir = Path(resume) if resume is not None else (new_run_dir(cfg, name) if world.main else None)
    run_dir = Path(str(broadcast_object(str(run_dir))))
    if world.main:
        with writing(run_dir / "config.yaml"):
            save_config(cfg, run_dir / "config.yaml")
            (run_dir / "samples").mkdir(exist_ok=True)
            for stale in run_dir.glob(".*.tmp"):
                stale.unlink()
    return run_dir


def make_loader(cfg: Config, run_data: RunData, margin: int, world: World, device: torch.device
                ) -> tuple[DataLoader, EpochSampler]:
    """The training loader: augmented crops drawn by (seed, epoch, index), the same for any worker count;
    `margin` is the network's border loss per side (crops of a valid network keep their context)."""
    data = cfg.data
    train_set = FolderDataset(pairs=run_data.train_pairs, channels=data.channels, codec=run_data.codec,
                              weights=run_data.weights, masks=run_data.masks, transform=train_transform(data, margin),
                              repeats=data.crops_per_image, per_image=data.normalize == "image", scale=data.scale)
    sampler = EpochSampler(len(train_set), cfg.train.seed, batch_size=data.batch_size, rank=world.rank,
                           world_size=world.size)
    loader = DataLoader(train_set, batch_size=data.batch_size, sampler=sampler, num_workers=data.num_workers,
                        persistent_workers=data.num_workers > 0, pin_memory=device.type == "cuda",
                        worker_init_fn=worker_init, generator=torch.Generator().manual_seed(cfg.train.seed))
    return loader, sampler


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.precision` on `device` (None: plain fp32); fp16 is refused off CUDA."""
    if precision == "fp16" and device.type != "cuda":
        raise UnetkitError("train.precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def parallel(model: nn.Module, cfg: Config, world: World, device: torch.device) -> nn.Module:
    """The module the training loop calls: the model itself, or under torchrun its DistributedDataParallel wrap
    (which broadcasts rank 0's weights at construction, so every rank starts equal)."""
    if cfg.train.compile:
        model = torch.compile(model)  # shares the parameters: checkpoints still save the plain module's weights
    if not world.distributed:
        return model
    if cfg.train.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
