"""A whole training run: from a config to a run folder with checkpoints, metrics and pictures.

Run folder layout::

    config.yaml      the resolved config (every default and the augmentation pipeline written out)
    metrics.csv      one row per epoch: losses, mIoU, pixel accuracy, per-class IoU, learning rate
    curves.png       loss and mIoU per epoch, train against validation
    samples/         epoch_NNN.png: image | truth | prediction for a few validation images
    last.pt, best.pt checkpoints (best by the monitored validation score); last.pt also every
                     train.checkpoint_every steps and on SIGINT/SIGTERM, so a run resumes mid-epoch
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import Config, save_config
from unetkit.data.class_weights import class_pixel_counts, class_weights
from unetkit.data.dataset import FolderDataset, dataset_pairs, scan_pairs
from unetkit.data.io import set_pixel_limit
from unetkit.data.masks import MaskCodec
from unetkit.data.sampler import EpochSampler, closing_workers, sample_seed, worker_init
from unetkit.data.transforms import train_transform
from unetkit.data.weightmap import weight_cache
from unetkit.distributed import World, any_rank, broadcast_buffers, broadcast_object, init_distributed, shutdown
from unetkit.errors import TrainingStopped, UnetkitError
from unetkit.losses import build_loss
from unetkit.metrics import headline, scores
from unetkit.models.build import build_model
from unetkit.models.encoders import set_encoder_frozen
from unetkit.runtime import resolve_device, seed_everything
from unetkit.train.loop import NonFiniteLoss, shown_loss, train_one_epoch, validate
from unetkit.train.optim import build_optimizer, build_scheduler, restore_scheduler, step_scheduler
from unetkit.train.outputs import best_summary, epoch_row, write_epoch_outputs, write_final_outputs, writing
from unetkit.train.setup import new_run_dir, resolve_config, resume_checkpoint
from unetkit.train.signals import graceful_stop
from unetkit.train.state import EpochProgress, rng_state, set_deterministic, set_rng_state


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]


def train(cfg: Config | None = None, *, resume: str | Path | None = None, name: str = "run",
          progress: bool = True) -> RunResult:
    """Train a U-Net as `cfg` describes, or continue the run in folder `resume` from its `last.pt`.

    Every image and mask is read once before the run folder is created, so bad data fails fast and
    leaves nothing behind. Under torchrun every rank calls this; rank 0 writes the run folder.
    """
    checkpoint = resume_checkpoint(resume) if resume is not None else None
    if cfg is None and checkpoint is not None:
        cfg = Config.model_validate(checkpoint["config"])
    if cfg is None:
        raise UnetkitError("train needs a config, or --resume RUN_DIR")
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
    world, device_name = init_distributed(cfg.train.device, cfg.train.dist_timeout_minutes)
    previous = set_deterministic(cfg.train.deterministic)
    try:
        return _train(cfg, checkpoint, resume, name, progress and world.main, world, device_name)
    finally:
        set_deterministic(previous)
        shutdown()


def _train(cfg: Config, checkpoint: dict[str, Any] | None, resume: str | Path | None, name: str, show: bool,
           world: World, device_name: str) -> RunResult:
    cfg = resolve_config(cfg)
    seed_everything(cfg.train.seed)
    device = resolve_device(device_name)
    if world.distributed and cfg.train.sync_batchnorm and device.type != "cuda":
        raise UnetkitError("train.sync_batchnorm needs CUDA GPUs (PyTorch has no CPU version); set it to false")
    data, num_classes = cfg.data, cfg.data.num_classes
    codec = MaskCodec(data.mask, num_classes)
    say = tqdm.write if world.main else (lambda _: None)

    set_pixel_limit(data.max_image_pixels)
    train_pairs, val_pairs = dataset_pairs(data)
    for pairs in (train_pairs, val_pairs):
        scan_pairs(pairs, data.channels, codec)
    if isinstance(cfg.loss.class_weights, str):  # computed from the training masks, recorded in config.yaml
        method = cfg.loss.class_weights
        computed = class_weights(class_pixel_counts(train_pairs, codec), method)
        cfg.loss.class_weights = [round(float(w), 6) for w in computed]
        say(f"class weights ({method} frequency, from the training masks): {cfg.loss.class_weights}")
    model = build_model(cfg.model, data.channels, out_channels(cfg), pretrained=checkpoint is None)
    if not model.is_valid_input(data.crop_size):
        low, high = model.nearest_valid_sizes(data.crop_size)
        fits = f"{low} or {high}" if low is not None else f"{high} or more"
        raise UnetkitError(f"data.crop_size {data.crop_size} does not fit this network; use {fits}")

    run_dir = Path(resume) if resume is not None else (new_run_dir(cfg, name) if world.main else None)
    run_dir = Path(str(broadcast_object(str(run_dir))))
    if world.main:
        with writing(run_dir / "config.yaml"):
            save_config(cfg, run_dir / "config.yaml")
            (run_dir / "samples").mkdir(exist_ok=True)
            for stale in run_dir.glob(".*.tmp"):  # left by a process killed mid-write
                stale.unlink()

    model.to(device)
    optimizer = build_optimizer(cfg.optim, model)
    maximize = cfg.train.monitor == "miou"
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.train.epochs, maximize)
    use_amp = cfg.train.amp and device.type == "cuda" and not cfg.train.bf16
    autocast = torch.bfloat16 if cfg.train.bf16 else (torch.float16 if use_amp else None)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)  # bf16 needs no loss scaling
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    start, best_epoch, best, global_step = 1, 0, -math.inf if maximize else math.inf, 0
    history: list[dict[str, Any]] = []
    best_scores: dict[str, Any] | None = None
    partial = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_scheduler(scheduler, checkpoint.get("scheduler"), cfg.train.epochs)
        scaler.load_state_dict(checkpoint["scaler"])
        start = checkpoint["epoch"] + 1
        best_epoch, best, history = checkpoint["best_epoch"], checkpoint["best_score"], checkpoint["history"]
        best_scores = checkpoint.get("best_scores")
        global_step, partial = checkpoint.get("global_step", 0), checkpoint.get("progress")
        if partial is not None and checkpoint.get("world_size", 1) != world.size:
            say(f"the run was saved mid-epoch by {checkpoint.get('world_size', 1)} process(es), now there are "
                f"{world.size}: epoch {partial['epoch']} starts again from its beginning")
            global_step -= partial["steps"]
            partial = None
        where = (f"epoch {partial['epoch']}, step {partial['steps']}" if partial is not None
                 else f"the start of epoch {start}")
        say(f"resuming {run_dir if resume is None else resume} at {where} (global step {global_step})")
    if world.distributed:  # each rank its own dropout draws; rank 0's saved states would make them all equal
        seed_everything(sample_seed(cfg.train.seed, world.rank, global_step))
    elif checkpoint is not None and "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])
    net = _parallel(model, cfg, world, device)

    weights = weight_cache(data)
    train_set = FolderDataset(pairs=train_pairs, channels=data.channels, codec=codec, weights=weights,
                              transform=train_transform(data, model.margin), repeats=data.crops_per_image)
    sampler = EpochSampler(len(train_set), cfg.train.seed, batch_size=data.batch_size, rank=world.rank,
                           world_size=world.size)
    loader = DataLoader(train_set, batch_size=data.batch_size, sampler=sampler, num_workers=data.num_workers,
                        persistent_workers=data.num_workers > 0, pin_memory=device.type == "cuda",
                        worker_init_fn=worker_init, generator=torch.Generator().manual_seed(cfg.train.seed))
    loss_fn = build_loss(cfg.loss, num_classes).to(device)
    colors = codec.colors()

    def snapshot(epoch: int, current: EpochProgress | None, val_scores: dict[str, Any] | None) -> dict[str, Any]:
        return make_checkpoint(
            model, cfg, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler else None,
            scaler=scaler.state_dict(), epoch=epoch, progress=current.state_dict() if current else None,
            global_step=global_step, world_size=world.size, best_epoch=best_epoch, best_score=best, history=history,
            rng=rng_state(), val_scores=val_scores, best_scores=best_scores)

    if start > cfg.train.epochs:
        say(f"{run_dir}: already trained {cfg.train.epochs} epochs; raise train.epochs with --set to go on")
    run_began = time.perf_counter()
    val, val_scores = None, None
    every = cfg.train.checkpoint_every
    with graceful_stop() as stop, closing_workers(loader):

        def after_step(current: EpochProgress) -> None:
            nonlocal global_step
            global_step += 1
            stopping = any_rank(stop.requested)
            if stopping or (every is not None and global_step % every == 0):
                whole = current.reduced() if world.distributed else current  # all ranks' share of the epoch
                if world.main:
                    save_checkpoint(snapshot(current.epoch - 1, whole, None), run_dir / "last.pt")
            if stopping:
                raise TrainingStopped(
                    f"stopped by {stop.signal_name or 'a signal on another rank'} in epoch {current.epoch} after "
                    f"step {current.steps}; saved {run_dir / 'last.pt'}; continue with: unetkit train --resume "
                    f"{run_dir}", stop.signal_name or "SIGTERM")

        for epoch in range(start, cfg.train.epochs + 1):
            began = time.perf_counter()
            current = EpochProgress(epoch, num_classes, loss_sum=torch.zeros((), device=device))
            if partial is not None and partial["epoch"] == epoch:
                current = EpochProgress.from_state(partial, num_classes, device)
                if not world.main:  # the saved sums already cover every rank: count them once, on rank 0
                    current.loss_sum.zero_()
                    current.confusion.reset()
            partial = None
            sampler.set_epoch(epoch, current.steps)
            set_encoder_frozen(model, epoch <= cfg.model.freeze_encoder_epochs)
            try:
                train_one_epoch(net, loader, loss_fn, optimizer, scaler, device, current, autocast=autocast,
                                channels_last=cfg.train.channels_last, on_nonfinite=cfg.train.on_nonfinite,
                                after_step=after_step, total_steps=sampler.batches_per_epoch(),
                                desc=f"epoch {epoch}/{cfg.train.epochs}", show=show)
            except NonFiniteLoss as err:
                kept = (f"{run_dir / 'last.pt'} is kept" if (run_dir / "last.pt").is_file()
                        else "no checkpoint was written yet")
                what = (f"loss became {err.value}" if not math.isfinite(err.value)  # else the gradients overflowed
                        else f"gradients became non-finite (loss {err.value:.4f})")
                raise UnetkitError(
                    f"{what} in epoch {epoch} at step {err.step} (global step {global_step + 1}); "
                    f"the weights were not updated and {kept}; lower optim.lr, check the data, or set "
                    "train.on_nonfinite: skip") from None
            broadcast_buffers(model)  # every rank validates the weights and statistics rank 0 saves
            val = validate(model, cfg, val_pairs, codec, device, weights=weights, keep_samples=cfg.train.sample_images,
                           progress=show, rank=world.rank, world_size=world.size)
            val_scores = scores(val.confusion.matrix, data.classes)
            score = val_scores["miou"] if maximize else val.loss
            lr = optimizer.param_groups[0]["lr"]
            step_scheduler(scheduler, score)
            whole = current.reduced() if world.distributed else current
            history.append(epoch_row(whole, val, val_scores, data.classes, lr, time.perf_counter() - began))
            improved = score > best if maximize else score < best
            if improved:
                best, best_epoch = score, epoch
                best_scores = best_summary(val_scores, val.loss)
            if world.main:
                state = snapshot(epoch, None, val_scores)
                state["val_confusion"] = val.confusion.matrix  # (C, C) over every validation image, all ranks
                save_checkpoint(state, run_dir / "last.pt")
                if improved:
                    save_checkpoint(state, run_dir / "best.pt")
                write_epoch_outputs(run_dir, history, val, val_scores, colors, data.classes)
            skipped = f"  ({current.skipped} non-finite steps skipped)" if current.skipped else ""
            say(f"epoch {epoch}/{cfg.train.epochs}  train loss {shown_loss(whole.mean_loss())}  "
                f"val loss {val.loss:.4f}  "
                f"{headline(val_scores, 'val ')}{'  (best)' if improved else ''}  "
                f"{history[-1]['seconds']:.0f}s{skipped}")
            if any_rank(stop.requested) and epoch < cfg.train.epochs:
                raise TrainingStopped(f"stopped by {stop.signal_name or 'a signal on another rank'} after epoch "
                                      f"{epoch}; saved {run_dir / 'last.pt'}; continue with: unetkit train --resume "
                                      f"{run_dir}", stop.signal_name or "SIGTERM")
            budget = cfg.train.max_minutes
            if budget is not None and time.perf_counter() - run_began > 60 * budget and epoch < cfg.train.epochs:
                say(f"time budget of {budget} minutes used up after epoch {epoch}")
                break
    if world.main:
        summary = {"best_epoch": best_epoch, "best_score": best, "monitor": cfg.train.monitor, "epochs": len(history),
                   "seconds": round(sum(row["seconds"] for row in history), 2), "best": best_scores,
                   "threshold": cfg.infer.threshold}
        write_final_outputs(run_dir, val, val_scores, colors, data.classes, summary)
    return RunResult(run_dir, best_epoch, best, history)


def _parallel(model: nn.Module, cfg: Config, world: World, device: torch.device) -> nn.Module:
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
