"""What a run needs before its first step: the resolved config, its folder, the checkpoint to resume from.

Kept apart from the training loop so that everything here can fail (bad folder, missing checkpoint) before
any work starts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config
from unetkit.data.transforms import default_augment
from unetkit.errors import UnetkitError
from unetkit.models.encoders import encoder_normalization


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
