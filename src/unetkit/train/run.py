"""A whole training run: from a config to a run folder with checkpoints, metrics and pictures.

Run folder layout::

    config.yaml      the resolved config (every default and the augmentation pipeline written out)
    metrics.csv      one row per epoch: losses, mIoU, pixel accuracy, per-class IoU, learning rate
    curves.png       loss and mIoU per epoch, train against validation
    samples/         epoch_NNN.png: image | truth | prediction for a few validation images
    last.pt, best.pt checkpoints (best by the monitored validation score)
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetkit.config import Config, DataConfig, save_config
from unetkit.data.class_weights import class_pixel_counts, class_weights
from unetkit.data.dataset import FolderDataset, dataset_pairs, scan_pairs
from unetkit.data.masks import MaskCodec
from unetkit.data.transforms import default_augment, eval_transform, train_transform
from unetkit.data.weightmap import WeightMapCache
from unetkit.errors import UnetkitError
from unetkit.infer.pictures import write_evaluation_pictures
from unetkit.infer.predictor import Predictor
from unetkit.losses import build_loss
from unetkit.metrics import scores
from unetkit.models.build import build_model
from unetkit.models.encoders import encoder_normalization, set_encoder_frozen
from unetkit.runtime import resolve_device, seed_everything
from unetkit.train.checkpoint import load_checkpoint, make_checkpoint, out_channels, save_checkpoint
from unetkit.train.loop import train_one_epoch, validate
from unetkit.train.optim import build_optimizer, build_scheduler, step_scheduler
from unetkit.train.plots import plot_curves, plot_samples


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]


def _new_run_dir(cfg: Config, name: str) -> Path:
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


def _write_metrics(history: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def weight_cache(data: DataConfig, num_classes: int) -> WeightMapCache | None:
    """The border weight maps of the paper, computed once per mask, when the config asks for them."""
    wm = data.weight_map
    if wm is None:
        return None
    return WeightMapCache(object_classes=wm.object_classes, num_classes=num_classes, w0=wm.w0, sigma=wm.sigma,
                          class_balance=wm.class_balance, cache_dir=wm.cache_dir)


def _resolve(cfg: Config) -> Config:
    """Fill in what the config leaves to defaults, so config.yaml records exactly what ran."""
    cfg = cfg.model_copy(deep=True)
    if cfg.data.augment is None:
        cfg.data.augment = default_augment()
    if cfg.model.name == "encoder_unet" and not {"mean", "std"} & cfg.data.model_fields_set:
        # a pretrained encoder expects its own input normalization, unless the config sets one explicitly
        norm = encoder_normalization(cfg.model.encoder, cfg.model.encoder_weights, cfg.data.channels)
        if norm is not None:
            cfg.data.mean, cfg.data.std = norm
    return cfg


def train(cfg: Config | None = None, *, resume: str | Path | None = None, name: str = "run",
          progress: bool = True) -> RunResult:
    """Train a U-Net as `cfg` describes, or continue the run in folder `resume` from its `last.pt`.

    Every image and mask is read once before the run folder is created, so bad data fails fast and
    leaves nothing behind.
    """
    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(Path(resume) / "last.pt")
        if cfg is None:
            cfg = Config.model_validate(checkpoint["config"])
    if cfg is None:
        raise UnetkitError("train needs a config, or --resume RUN_DIR")
    cfg = _resolve(cfg)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    data, num_classes = cfg.data, cfg.data.num_classes
    codec = MaskCodec(data.mask, num_classes)

    train_pairs, val_pairs = dataset_pairs(data)
    for pairs in (train_pairs, val_pairs):
        scan_pairs(pairs, data.channels, codec)
    if isinstance(cfg.loss.class_weights, str):  # computed from the training masks, recorded in config.yaml
        method = cfg.loss.class_weights
        computed = class_weights(class_pixel_counts(train_pairs, codec), method)
        cfg.loss.class_weights = [round(float(w), 6) for w in computed]
        tqdm.write(f"class weights ({method} frequency, from the training masks): {cfg.loss.class_weights}")
    model = build_model(cfg.model, data.channels, out_channels(cfg), pretrained=checkpoint is None)
    if not model.is_valid_input(data.crop_size):
        low, high = model.nearest_valid_sizes(data.crop_size)
        fits = f"{low} or {high}" if low is not None else f"{high} or more"
        raise UnetkitError(f"data.crop_size {data.crop_size} does not fit this network; use {fits}")

    run_dir = Path(resume) if resume is not None else _new_run_dir(cfg, name)
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "samples").mkdir(exist_ok=True)

    model.to(device)
    optimizer = build_optimizer(cfg.optim, model)
    maximize = cfg.train.monitor == "miou"
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.train.epochs, maximize)
    use_amp = cfg.train.amp and device.type == "cuda" and not cfg.train.bf16
    autocast = torch.bfloat16 if cfg.train.bf16 else (torch.float16 if use_amp else None)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)  # bf16 needs no loss scaling
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    start, best_epoch, best = 1, 0, -math.inf if maximize else math.inf
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None and checkpoint.get("scheduler"):
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        start = checkpoint["epoch"] + 1
        best_epoch, best, history = checkpoint["best_epoch"], checkpoint["best_score"], checkpoint["history"]
        torch.set_rng_state(checkpoint["rng_torch"])

    weights = weight_cache(data, num_classes)
    train_set = FolderDataset(pairs=train_pairs, channels=data.channels, codec=codec, weights=weights,
                              transform=train_transform(data, model.margin), repeats=data.crops_per_image)
    val_set = FolderDataset(pairs=val_pairs, channels=data.channels, codec=codec, weights=weights,
                            transform=eval_transform(data))
    loader = DataLoader(train_set, batch_size=data.batch_size, shuffle=True, num_workers=data.num_workers,
                        persistent_workers=data.num_workers > 0, pin_memory=device.type == "cuda")
    loss_fn = build_loss(cfg.loss, num_classes).to(device)
    colors = codec.colors()

    if start > cfg.train.epochs:
        tqdm.write(f"{run_dir}: already trained {cfg.train.epochs} epochs; raise train.epochs with --set to go on")
    run_began = time.perf_counter()
    for epoch in range(start, cfg.train.epochs + 1):
        began = time.perf_counter()
        set_encoder_frozen(model, epoch <= cfg.model.freeze_encoder_epochs)
        train_loss, train_cm = train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, num_classes,
                                               autocast=autocast, channels_last=cfg.train.channels_last,
                                               desc=f"epoch {epoch}/{cfg.train.epochs}",
                                               progress=progress)
        val = validate(Predictor(model, device, amp=use_amp, precision="bf16" if cfg.train.bf16 else "fp32",
                                 channels_last=cfg.train.channels_last), val_set, loss_fn, num_classes,
                       keep_samples=cfg.train.sample_images, progress=progress)
        val_scores = scores(val.confusion.matrix, data.classes)
        score = val_scores["miou"] if maximize else val.loss
        lr = optimizer.param_groups[0]["lr"]
        step_scheduler(scheduler, score)
        row: dict[str, Any] = {
            "epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val.loss, 6),
            "train_miou": round(scores(train_cm.matrix, data.classes)["miou"], 6),
            "val_miou": round(val_scores["miou"], 6), "val_pixel_accuracy": round(val_scores["pixel_accuracy"], 6),
            **{f"val_iou_{c}": _round(val_scores["per_class"][c]["iou"]) for c in data.classes},
            "lr": lr, "seconds": round(time.perf_counter() - began, 2),
        }
        history.append(row)
        improved = score > best if maximize else score < best
        if improved:
            best, best_epoch = score, epoch
        _write_metrics(history, run_dir / "metrics.csv")
        plot_curves(history, run_dir / "curves.png")
        plot_samples(val.samples, colors, data.classes, run_dir / "samples" / f"epoch_{epoch:03d}.png",
                     title=f"epoch {epoch}: val mIoU {val_scores['miou']:.3f}")
        state = make_checkpoint(
            model, cfg, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler else None,
            scaler=scaler.state_dict(), epoch=epoch, best_epoch=best_epoch, best_score=best, history=history,
            rng_torch=torch.get_rng_state(), val_scores=val_scores)
        save_checkpoint(state, run_dir / "last.pt")
        if improved:
            save_checkpoint(state, run_dir / "best.pt")
        tqdm.write(f"epoch {epoch}/{cfg.train.epochs}  train loss {train_loss:.4f}  val loss {val.loss:.4f}  "
                   f"val mIoU {val_scores['miou']:.4f}{'  (best)' if improved else ''}  {row['seconds']:.0f}s")
        budget = cfg.train.max_minutes
        if budget is not None and time.perf_counter() - run_began > 60 * budget and epoch < cfg.train.epochs:
            tqdm.write(f"time budget of {budget} minutes used up after epoch {epoch}")
            break
    if history and start <= cfg.train.epochs:  # pictures of the last validation: IoU bars, confusion, samples
        write_evaluation_pictures(val_scores, val.confusion.matrix.numpy(), data.classes, val.samples, colors,
                                  run_dir, prefix="val_")
    (run_dir / "summary.json").write_text(json.dumps(
        {"best_epoch": best_epoch, "best_score": best, "monitor": cfg.train.monitor, "epochs": len(history)},
        indent=2))
    return RunResult(run_dir, best_epoch, best, history)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
