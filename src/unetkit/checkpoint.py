"""Checkpoints: everything needed to resume a run or apply its model, in one file.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with `torch.load(weights_only=True)`
(no pickled code runs). It carries the resolved config, and with it the class names and the mask encoding,
so `predict` writes masks the way the training data was encoded. Files are written to a temporary name and
renamed, so a crash mid-write never leaves a truncated `last.pt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.atomic import atomic_write
from unetkit.config import Config, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.models.build import build_model
from unetkit.safe_load import load_torch_file

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
    try:
        with atomic_write(path) as f:  # `.NAME.tmp`: a resumed run removes what a killed one left
            torch.save(checkpoint, f)
    except OSError as err:
        reason = err.strerror or err
        raise UnetkitError(f"cannot write checkpoint {path}: {reason}; free space or fix permissions") from None


def check_checkpoint(checkpoint: Any, source: str) -> dict[str, Any]:
    """Check what was loaded is a unetkit checkpoint with the entries `model_from_checkpoint` reads."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UnetkitError(f"{source} is not a unetkit checkpoint (no '{FORMAT}' marker); "
                           "give a last.pt or best.pt from a unetkit run folder")
    version = checkpoint.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UnetkitError(f"{source}: its format version {version!r} is not a number; the file is damaged")
    if version > VERSION:
        raise UnetkitError(f"{source} was written by a newer unetkit (format {version}); upgrade unetkit")
    channels = checkpoint.get("out_channels")
    if not isinstance(checkpoint.get("config"), dict):
        problem = "no config"
    elif not isinstance(checkpoint.get("model"), dict) or not all(
            isinstance(v, torch.Tensor) for v in checkpoint["model"].values()):
        problem = "no model weights"
    elif not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        problem = f"out_channels {channels!r} is not a positive number"
    else:
        return checkpoint
    raise UnetkitError(f"{source}: damaged unetkit checkpoint ({problem}); use another last.pt or best.pt")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a unetkit checkpoint; anything else is refused with one line.

    Loading runs no code from the file: `torch.load(weights_only=True)` inside
    `torch.serialization.safe_globals(SAFE_GLOBALS)`, an allow-list that adds nothing to the weights-only
    defaults, because a checkpoint is only tensors, numbers, strings and containers of them. A file asking to
    import anything else, such as a pickle crafted to run a command, is refused before any of it runs.
    """
    return check_checkpoint(load_torch_file(path), str(path))


def model_from_checkpoint(checkpoint: dict[str, Any], source: str = "checkpoint") -> tuple[nn.Module, Config]:
    """Rebuild the network a checkpoint describes and load its weights."""
    cfg = config_from_dict(checkpoint["config"], source)
    if checkpoint["out_channels"] != out_channels(cfg):
        raise UnetkitError(f"{source}: {checkpoint['out_channels']} output channels, but its config asks for "
                           f"{out_channels(cfg)} ({cfg.data.num_classes} classes); the file is damaged")
    # the checkpoint holds every weight: never fetch pretrained encoder weights again
    model = build_model(cfg.model, cfg.data.channels, checkpoint["out_channels"], pretrained=False)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        # torch lists every mismatch on its own line after a heading; the first one says enough
        detail = " ".join(str(err).split()).split(": ", 1)[-1]
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise UnetkitError(f"{source}: weights do not fit the model its config describes ({detail})") from None
    return model, cfg
