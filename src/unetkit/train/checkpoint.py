"""Checkpoints: everything needed to resume a run or apply its model, in one file.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with `torch.load(weights_only=True)`
(no pickled code runs). It carries the resolved config, and with it the class names and the mask encoding,
so `predict` writes masks the way the training data was encoded. Files are written to a temporary name and
renamed, so a crash mid-write never leaves a truncated `last.pt`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.config import Config, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.models.build import build_model

FORMAT = "unetkit-checkpoint"
VERSION = 1


def out_channels(cfg: Config) -> int:
    """One logit channel for a binary BCE model, else one per class."""
    return 1 if cfg.loss.binary else cfg.data.num_classes


def make_checkpoint(model: nn.Module, cfg: Config, **state: Any) -> dict[str, Any]:
    """The checkpoint dict: model weights and config, plus whatever training state is passed
    (optimizer, scheduler, scaler, epoch, best score, ...)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": cfg.model_dump(mode="json"),
        "classes": list(cfg.data.classes),
        "out_channels": out_channels(cfg),
        "model": model.state_dict(),
        **state,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write atomically: temporary file in the same folder, flush + fsync, rename over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = err.strerror or err
        raise UnetkitError(f"cannot write checkpoint {path}: {reason}; free space or fix permissions") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a unetkit checkpoint; anything else is refused with one line."""
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"checkpoint {path} does not exist")
    # A file that is not a torch archive fails inside the unpickler in many ways (UnpicklingError, EOFError,
    # IndexError on a stray opcode, UnicodeDecodeError, ...); each means the same thing: not a checkpoint.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UnetkitError(f"{path} is not a unetkit checkpoint (cannot load it: {reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UnetkitError(f"{path} is not a unetkit checkpoint (no '{FORMAT}' marker); "
                           "give a last.pt or best.pt from a unetkit run folder")
    if checkpoint.get("version", 0) > VERSION:
        raise UnetkitError(f"{path} was written by a newer unetkit (format {checkpoint['version']}); upgrade unetkit")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], source: str = "checkpoint") -> tuple[nn.Module, Config]:
    """Rebuild the network a checkpoint describes and load its weights."""
    cfg = config_from_dict(checkpoint["config"], source)
    # the checkpoint holds every weight: never fetch pretrained encoder weights again
    model = build_model(cfg.model, cfg.data.channels, checkpoint["out_channels"], pretrained=False)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise UnetkitError(f"{source}: weights do not fit the model its config describes ({str(err)[:120]})") from None
    return model, cfg
