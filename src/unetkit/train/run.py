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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from unetkit.config import Config, save_config
from unetkit.data.sampler import sample_seed
from unetkit.distributed import World, init_distributed, shutdown
from unetkit.errors import UnetkitError
from unetkit.infer.choices import choose_inference
from unetkit.metrics import headline
from unetkit.runtime import resolve_device, seed_everything
from unetkit.train.fit import Run, RunState, fit, restore
from unetkit.train.loop import StepOptions
from unetkit.train.optim import build_optimizer, build_scheduler
from unetkit.train.outputs import best_summary, write_final_outputs, writing
from unetkit.train.setup import (
    RunData,
    build_network,
    open_run_dir,
    parallel,
    prepare_data,
    resolve_config,
    resume_checkpoint,
    training_autocast,
)
from unetkit.train.state import set_deterministic, set_rng_state
from unetkit.train.trackers import open_trackers


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]
    chosen_scores: dict[str, Any] | None = None  # validation scores of best.pt after `train.choose`


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
                       "boundary_seeds": cfg.infer.boundary_seeds,
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
        gaps = "" if infer.boundary_seeds is None else f", gaps closed from seeds at p < {infer.boundary_seeds}"
        facts.append(("chosen on validation", f"{cut}, objects under {infer.min_object_px} px removed, "
                      f"TTA {infer.tta}{gaps}"))
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
