"""The epochs of a run: what they share (`Run`), what they carry forward (`RunState`), and the steps of each.

`fit` trains epoch after epoch until `train.epochs`, the time budget or a signal; `train_epoch` optimises,
`close_epoch` validates through `evaluate`'s own path, saves the checkpoints and draws the pictures. `restore`
and `snapshot` are the two ends of a checkpoint. `run.py` builds the `Run` and calls `fit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from unetkit.checkpoint import make_checkpoint, save_checkpoint
from unetkit.config import Config
from unetkit.data.sampler import EpochSampler, closing_workers
from unetkit.distributed import World, any_rank, broadcast_buffers
from unetkit.errors import TrainingStopped, UnetkitError
from unetkit.infer.scoring import Scored
from unetkit.losses import build_loss
from unetkit.metrics import headline, scores
from unetkit.models.encoders import set_encoder_frozen
from unetkit.train.budget import TimeBudget, follow
from unetkit.train.loop import NonFiniteLoss, StepOptions, shown_loss, train_one_epoch, validate
from unetkit.train.optim import restore_scheduler, step_scheduler
from unetkit.train.outputs import best_summary, epoch_row, write_epoch_outputs
from unetkit.train.setup import RunData, make_loader
from unetkit.train.signals import graceful_stop
from unetkit.train.state import EpochProgress, rng_state
from unetkit.train.trackers import Trackers


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
