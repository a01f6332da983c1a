"""A whole training run: from a config to a run folder with checkpoints, metrics and pictures.

Run folder layout::

    config.yaml      the resolved config (every default and the augmentation pipeline written out)
    metrics.csv      one row per epoch: losses, mIoU, pixel accuracy, per-class IoU, learning rate
    curves.png       loss and mIoU per epoch, train against validation
    samples/         epoch_NNN.png: image | truth | prediction for a few validation images
    report.html      one page with the last validation's scores, best and worst images, curves, data, config
    tensorboard/, mlruns/, mlflow_run.json   with train.loggers tensorboard / mlflow (see train/trackers.py)
    last.pt, best.pt checkpoints (best by the monitored validation score); last.pt also every
                     train.checkpoint_every steps and on SIGINT/SIGTERM, so a run resumes mid-epoch
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetkit.checkpoint import make_checkpoint, save_checkpoint
from unetkit.config import Config, save_config
from unetkit.data.sampler import EpochSampler, closing_workers, sample_seed
from unetkit.distributed import World, any_rank, broadcast_buffers, init_distributed, shutdown
from unetkit.errors import TrainingStopped, UnetkitError
from unetkit.infer.choices import choose_inference
from unetkit.infer.scoring import Scored
from unetkit.losses import build_loss
from unetkit.metrics import headline, scores
from unetkit.models.encoders import set_encoder_frozen
from unetkit.runtime import resolve_device, seed_everything
from unetkit.train.budget import TimeBudget, follow
from unetkit.train.loop import NonFiniteLoss, StepOptions, shown_loss, train_one_epoch, validate
from unetkit.train.optim import build_optimizer, build_scheduler, restore_scheduler, step_scheduler
from unetkit.train.outputs import best_summary, epoch_row, write_epoch_outputs, write_final_outputs, writing
from unetkit.train.setup import (
    RunData,
    build_network,
    make_loader,
    open_run_dir,
    parallel,
    prepare_data,
    resolve_config,
    resume_checkpoint,
    training_autocast,
)
from unetkit.train.signals import graceful_stop
from unetkit.train.state import EpochProgress, rng_state, set_deterministic, set_rng_state
from unetkit.train.trackers import Trackers, open_trackers


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]
    chosen_scores: dict[str, Any] | None = None  # validation scores of best.pt after `train.choose`


@dataclass
class RunState:
    """What the epochs carry forward and every checkpoint saves; restored from `last.pt` on resume."""

    best: float
    start: int = 1
    best_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_scores: dict[str, Any] | None = None
    partial: dict[str, Any] | None = None  # the saved progress of an epoch stopped mid-way
    budget: dict[str, Any] | None = None  # the time budget's clock (`TimeBudget.state_dict`) at the last save


@dataclass
class Run:
    """Everything a run's epochs use, built once by `_train`; the functions below read it, only `RunState`
    changes."""

    cfg: Config
    world: World
    device: torch.device
    run_dir: Path
    data: RunData
    model: nn.Module
    net: nn.Module  # what the loop calls: `model`, compiled or wrapped for DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    steps: StepOptions  # autocast, channels-last, what a non-finite step does
    say: Callable[[str], None]
    show: bool
    budget: TimeBudget | None = None  # the clock of `train.max_minutes`, set when the epochs start
    trackers: Trackers = field(default_factory=lambda: Trackers([]))  # TensorBoard, MLflow (rank 0)

    @property
    def maximize(self) -> bool:
        return self.cfg.train.monitor == "miou"


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
    """The run in named steps: check the data, build the network, open the run folder, build the optimiser,
    restore a checkpoint, fit, and write the summary."""
    cfg = resolve_config(cfg)
    trackers = open_trackers(cfg.train.loggers, world.main)  # a missing extra fails here, before any work
    seed_everything(cfg.train.seed)
    device = resolve_device(device_name)
    if world.distributed and cfg.train.sync_batchnorm and device.type != "cuda":
        raise UnetkitError("train.sync_batchnorm needs CUDA GPUs (PyTorch has no CPU version); set it to false")
    say = tqdm.write if world.main else (lambda _: None)
    data = prepare_data(cfg, say)
    model = build_network(cfg, pretrained=checkpoint is None)
    run_dir = open_run_dir(cfg, resume, name, world)
    model.to(device)
    optimizer = build_optimizer(cfg.optim, model)
    timed = cfg.train.max_minutes is not None and cfg.optim.schedule == "cosine"  # the cosine follows the clock
    scheduler = None if timed else build_scheduler(cfg.optim, optimizer, cfg.train.epochs, cfg.train.monitor == "miou")
    steps = StepOptions(training_autocast(cfg.train.precision, device), cfg.train.channels_last,
                        cfg.train.on_nonfinite)
    scaler = torch.amp.GradScaler("cuda", enabled=steps.autocast is torch.float16)  # bf16 needs no loss scaling
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    run = Run(cfg, world, device, run_dir, data, model, model, optimizer, scheduler, scaler, steps, say, show,
              trackers=trackers)
    state = restore(run, checkpoint, resume)
    if world.distributed:  # each rank its own dropout draws; rank 0's saved states would make them all equal
        seed_everything(sample_seed(cfg.train.seed, world.rank, state.global_step))
    elif checkpoint is not None and "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])
    run.net = parallel(model, cfg, world, device)
    with trackers.running(run_dir, cfg, state.start):  # ends them with the run's status, artifacts when finished
        val, val_scores = fit(run, state)
        chosen = (make_choices(run, data) if world.main and cfg.train.choose and (run_dir / "best.pt").is_file()
                  else None)
        if world.main:
            summary = {"best_epoch": state.best_epoch, "best_score": state.best, "monitor": cfg.train.monitor,
                       "epochs": len(state.history), "seconds": round(sum(r["seconds"] for r in state.history), 2),
                       "best": state.best_scores, "threshold": cfg.infer.threshold,
                       "min_object_px": cfg.infer.min_object_px, "tta": cfg.infer.tta,
                       "after_choices": None if chosen is None else best_summary(chosen, None)}
            write_final_outputs(run_dir, val, val_scores, data.codec.colors(), cfg.data.classes, summary,
                                data.summary, final_facts(state, cfg, chosen))
    return RunResult(run_dir, state.best_epoch, state.best, state.history, chosen)


def final_facts(state: RunState, cfg: Config, chosen: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The lines at the top of the finished run's page: the last validation, the best epoch, and what the
    choices after training set, with best.pt's validation scores at those settings."""
    facts = [("validation after epoch", f"{len(state.history)} of {cfg.train.epochs}"),
             ("best epoch", f"{state.best_epoch} ({cfg.train.monitor} {state.best:.4f})")]
    if cfg.train.choose:
        infer = cfg.infer
        cut = (f"seed threshold {infer.seed_threshold}" if cfg.model.task == "instances"
               else f"threshold {infer.threshold}")
        facts.append(("chosen on validation", f"{cut}, objects under {infer.min_object_px} px removed, "
                      f"TTA {infer.tta}"))
    if chosen is not None:
        facts.append(("best.pt with these settings", f"{headline(chosen, 'val ')} (evaluate --split val)"))
    return facts


def make_choices(run: Run, data: RunData) -> dict[str, Any] | None:
    """`train.choose` on the validation images with best.pt, stored in best.pt and config.yaml; returns best.pt's
    validation scores at the chosen settings (None when they were judged on part of the images only)."""
    cfg, run_dir = run.cfg, run.run_dir
    chosen, reasons, final = choose_inference(str(run_dir / "best.pt"), data.val_pairs, data.codec, cfg.train.choose,
                                              run.show)
    cfg.infer = cfg.infer.model_copy(update=chosen)
    for reason in reasons:
        run.say(reason)
    if final is not None:
        run.say(f"best.pt after these choices: {headline(final, 'val ')} (what evaluate --split val reports)")
    run.say(f"stored in {run_dir / 'best.pt'} and config.yaml")
    with writing(run_dir / "config.yaml"):
        save_config(cfg, run_dir / "config.yaml")
    return final


def restore(run: Run, checkpoint: dict[str, Any] | None, resume: str | Path | None) -> RunState:
    """A fresh `RunState`, or the one of `checkpoint` with the weights, optimiser, schedule and loss scaler
    loaded into `run`; a mid-epoch save made by another number of processes restarts its epoch."""
    state = RunState(best=-math.inf if run.maximize else math.inf)
    if checkpoint is None:
        return state
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    restore_scheduler(run.scheduler, checkpoint.get("scheduler"), run.cfg.train.epochs)
    run.scaler.load_state_dict(checkpoint["scaler"])
    state = RunState(best=checkpoint["best_score"], start=checkpoint["epoch"] + 1,
                     best_epoch=checkpoint["best_epoch"], global_step=checkpoint.get("global_step", 0),
                     history=checkpoint["history"], best_scores=checkpoint.get("best_scores"),
                     partial=checkpoint.get("progress"), budget=checkpoint.get("budget"))
    saved_by, partial = checkpoint.get("world_size", 1), state.partial
    if partial is not None and saved_by != run.world.size:
        run.say(f"the run was saved mid-epoch by {saved_by} process(es), now there are {run.world.size}: "
                f"epoch {partial['epoch']} starts again from its beginning")
        state.global_step -= partial["steps"]
        state.partial = partial = None
    where = f"epoch {partial['epoch']}, step {partial['steps']}" if partial else f"the start of epoch {state.start}"
    run.say(f"resuming {run.run_dir if resume is None else resume} at {where} (global step {state.global_step})")
    return state


def snapshot(run: Run, state: RunState, epoch: int, current: EpochProgress | None,
             val_scores: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint of the run after `epoch` whole epochs (and `current`'s steps of the next one)."""
    return make_checkpoint(
        run.model, run.cfg, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict() if run.scheduler else None, scaler=run.scaler.state_dict(),
        epoch=epoch, progress=current.state_dict() if current else None, global_step=state.global_step,
        world_size=run.world.size, best_epoch=state.best_epoch, best_score=state.best, history=state.history,
        rng=rng_state(), val_scores=val_scores, best_scores=state.best_scores,
        budget=run.budget.state_dict() if run.budget else None)


def stopped(signal_name: str | None, where: str, run_dir: Path) -> TrainingStopped:
    """The exit of a run stopped by SIGINT/SIGTERM (here or on another rank), saying how to go on."""
    return TrainingStopped(f"stopped by {signal_name or 'a signal on another rank'} {where}; saved "
                           f"{run_dir / 'last.pt'}; continue with: unetkit train --resume {run_dir}",
                           signal_name or "SIGTERM")


def fit(run: Run, state: RunState) -> tuple[Scored | None, dict[str, Any] | None]:
    """The epochs from `state.start` on, until `train.epochs`, the time budget or a signal; returns the last
    validation and its scores (None when there was no epoch left to train)."""
    cfg = run.cfg
    loader, sampler = make_loader(cfg, run.data, run.model.margin, run.world, run.device)
    loss_fn = build_loss(cfg.loss, cfg.data.num_classes).to(run.device)
    if state.start > cfg.train.epochs:
        run.say(f"{run.run_dir}: already trained {cfg.train.epochs} epochs; raise train.epochs with --set to go on")
    every = cfg.train.checkpoint_every
    budget = run.budget = TimeBudget.of_run(cfg.train, state.budget, sampler.batches_per_epoch())
    base_lrs = [cfg.optim.lr for _ in run.optimizer.param_groups]  # a resumed optimiser holds the current lr
    timed = budget is not None and cfg.optim.schedule == "cosine"  # the learning rate follows the clock
    if timed:
        follow(run.optimizer, base_lrs, cfg.optim.min_lr, budget.reading(state.global_step)[0])  # warm-up's start
    val, val_scores = None, None
    with graceful_stop() as stop, closing_workers(loader):

        def after_step(current: EpochProgress) -> bool:
            state.global_step += 1
            fraction, spent = budget.reading(state.global_step) if budget is not None else (0.0, False)
            if timed:
                follow(run.optimizer, base_lrs, cfg.optim.min_lr, fraction)
            stopping = any_rank(stop.requested)
            if stopping or (every is not None and state.global_step % every == 0):
                whole = current.reduced() if run.world.distributed else current  # all ranks' share of the epoch
                if run.world.main:
                    save_checkpoint(snapshot(run, state, current.epoch - 1, whole, None), run.run_dir / "last.pt")
            if stopping:
                raise stopped(stop.signal_name, f"in epoch {current.epoch} after step {current.steps}", run.run_dir)
            return spent  # True ends the epoch here: then the final validation

        for epoch in range(state.start, cfg.train.epochs + 1):
            epoch_began = time.perf_counter()
            current = train_epoch(run, state, epoch, loader, sampler, loss_fn, after_step)
            val, val_scores = close_epoch(run, state, current, epoch_began)
            if any_rank(stop.requested) and epoch < cfg.train.epochs:
                raise stopped(stop.signal_name, f"after epoch {epoch}", run.run_dir)
            if budget is not None and budget.reading(state.global_step)[1] and epoch < cfg.train.epochs:
                run.say(f"time budget of {cfg.train.max_minutes} minutes used up in epoch {epoch} (step "
                        f"{current.steps} of {sampler.batches_per_epoch()}); the learning rate ended at "
                        f"{run.optimizer.param_groups[0]['lr']:.3g}")
                break
    return val, val_scores


def train_epoch(run: Run, state: RunState, epoch: int, loader: DataLoader, sampler: EpochSampler,
                loss_fn: nn.Module, after_step: Callable[[EpochProgress], None]) -> EpochProgress:
    """One epoch of optimisation (continuing a saved partial epoch); a non-finite step ends the run with one
    line unless `train.on_nonfinite: skip`."""
    cfg, world = run.cfg, run.world
    current = EpochProgress(epoch, cfg.data.num_classes, loss_sum=torch.zeros((), device=run.device))
    if state.partial is not None and state.partial["epoch"] == epoch:
        current = EpochProgress.from_state(state.partial, cfg.data.num_classes, run.device)
        if not world.main:  # the saved sums already cover every rank: count them once, on rank 0
            current.loss_sum.zero_()
            current.confusion.reset()
    state.partial = None
    sampler.set_epoch(epoch, current.steps)
    set_encoder_frozen(run.model, epoch <= cfg.model.freeze_encoder_epochs)
    try:
        train_one_epoch(run.net, loader, loss_fn, run.optimizer, run.scaler, run.device, current, run.steps,
                        after_step=after_step, total_steps=sampler.batches_per_epoch(),
                        desc=f"epoch {epoch}/{cfg.train.epochs}", show=run.show)
    except NonFiniteLoss as err:
        last = run.run_dir / "last.pt"
        kept = f"{last} is kept" if last.is_file() else "no checkpoint was written yet"
        what = (f"loss became {err.value}" if not math.isfinite(err.value)  # else the gradients overflowed
                else f"gradients became non-finite (loss {err.value:.4f})")
        raise UnetkitError(
            f"{what} in epoch {epoch} at step {err.step} (global step {state.global_step + 1}); the weights were "
            f"not updated and {kept}; lower optim.lr, check the data, or set train.on_nonfinite: skip") from None
    return current


def close_epoch(run: Run, state: RunState, current: EpochProgress, began: float) -> tuple[Scored, dict[str, Any]]:
    """Validate (through `evaluate`'s own path), step the schedule, record the epoch, save last.pt (and
    best.pt when the monitored score improved), draw the pictures and print the epoch's line."""
    cfg, world, data, epoch = run.cfg, run.world, run.data, current.epoch
    broadcast_buffers(run.model)  # every rank validates the weights and statistics rank 0 saves
    validation_began = run.budget.now() if run.budget else 0.0
    val = validate(run.model, cfg, data.val_pairs, data.codec, run.device, weights=data.weights, masks=data.masks,
                   keep_samples=cfg.train.sample_images, progress=run.show, rank=world.rank, world_size=world.size)
    if run.budget is not None:  # held back from the budget for the final validation
        run.budget.validated(run.budget.now() - validation_began)
    val_scores = scores(val.confusion.matrix, cfg.data.classes)
    score = val_scores["miou"] if run.maximize else val.loss
    lr = run.optimizer.param_groups[0]["lr"]
    step_scheduler(run.scheduler, score)
    whole = current.reduced() if world.distributed else current
    state.history.append(epoch_row(whole, val, val_scores, cfg.data.classes, lr, time.perf_counter() - began))
    improved = score > state.best if run.maximize else score < state.best
    if improved:
        state.best, state.best_epoch, state.best_scores = score, epoch, best_summary(val_scores, val.loss)
    if world.main:
        saved = snapshot(run, state, epoch, None, val_scores)
        saved["val_confusion"] = val.confusion.matrix  # (C, C) over every validation image, all ranks
        save_checkpoint(saved, run.run_dir / "last.pt")
        if improved:
            save_checkpoint(saved, run.run_dir / "best.pt")
        facts = [("validation after epoch", f"{epoch} of {cfg.train.epochs}"),
                 ("best epoch", f"{state.best_epoch} ({cfg.train.monitor} {state.best:.4f})")]
        write_epoch_outputs(run.run_dir, state.history, val, val_scores, data.codec.colors(), cfg.data.classes,
                            data.summary, facts, metrics_csv="csv" in cfg.train.loggers)
        run.trackers.log_epoch(state.history[-1], run.run_dir / "samples" / f"epoch_{epoch:03d}.png")
    skipped = f"  ({current.skipped} non-finite steps skipped)" if current.skipped else ""
    run.say(f"epoch {epoch}/{cfg.train.epochs}  train loss {shown_loss(whole.mean_loss())}  val loss {val.loss:.4f}  "
            f"{headline(val_scores, 'val ')}{'  (best)' if improved else ''}  "
            f"{state.history[-1]['seconds']:.0f}s{skipped}")
    return val, val_scores
