"""Weighted ensembles of trained U-Nets, and the single file that stores one.

Members may differ in architecture and in input normalization, so an ensemble takes the image scaled to
[0, 1] without normalization and each member normalizes it with its own `data.mean` / `data.std`
(`Normalized`). The ensemble returns `sum_i w_i * p_i` over the members' class probabilities, weights summing
to 1. It is again a callable of the inference chain, `(N, C, h, w) -> (N, K, h', w')`, with one geometry for
all members, so TTA, whole-image and tiled prediction work on it unchanged.

An ensemble file holds the member checkpoints themselves (without their training state), so it stays valid
when run folders are moved or deleted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unetkit.checkpoint import (
    check_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from unetkit.config import Config, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.infer.geometry import HoldsGeometry, SharedGeometry, geometry_of
from unetkit.infer.predictor import Fn, Predictor
from unetkit.models.fold import fold_batch_norm
from unetkit.safe_load import load_torch_file

FORMAT = "unetkit-ensemble"
VERSION = 1
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "history")  # only needed to resume training


class Normalized(HoldsGeometry):
    """Wrap a predictor so it takes [0, 1] input: `(x - mean) / std` per channel, then the predictor."""

    def __init__(self, fn: Fn, mean: Sequence[float], std: Sequence[float]) -> None:
        self.fn = fn
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)  # (1, C or 1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.geometry = geometry_of(fn)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn((x - self.mean) / self.std)


def normalize_weights(weights: Sequence[float], count: int, source: str = "ensemble weights") -> list[float]:
    """One non-negative weight per member, scaled to sum 1; anything else is the user's to fix."""
    values = [float(w) for w in weights]
    if len(values) != count:
        raise UnetkitError(f"{source}: {len(values)} weight(s) for {count} member(s); give one weight per member")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise UnetkitError(f"{source}: weights must be finite, non-negative numbers, got {values}")
    total = sum(values)
    if total <= 0:
        raise UnetkitError(f"{source}: all weights are 0; give at least one positive weight")
    return [w / total for w in values]


class Ensemble(HoldsGeometry):
    """Weighted average of member predictors, each taking the same [0, 1] input `(N, C, h, w)`.

    Padded members (margin 0) may pool to different depths: the ensemble accepts the sizes every member
    accepts (multiples of the lcm of their strides). Unpadded members must share margin and stride.
    """

    def __init__(self, members: Sequence[Fn], weights: Sequence[float], sources: Sequence[str] | None = None) -> None:
        if not members:
            raise UnetkitError("an ensemble needs at least one member checkpoint")
        sources = list(sources) if sources is not None else [f"member {i + 1}" for i in range(len(members))]
        self.members = list(members)
        self.sources = sources
        self.weights = normalize_weights(weights, len(members))
        self.geometry = SharedGeometry([geometry_of(m) for m in self.members], sources)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member, weight in zip(self.members, self.weights, strict=True):
            if weight == 0:  # a member the weight search switched off costs nothing
                continue
            out = member(x).float() * weight
            total = out if total is None else total + out
        assert total is not None  # normalize_weights guarantees a positive weight
        return total


def ensemble_config(cfg: Config) -> Config:
    """A member's config for the whole ensemble: its classes, channels and mask encoding, but no
    normalization (mean 0, std 1), since every member normalizes its own input."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"mean": [0.0], "std": [1.0]})})


def load_members(checkpoints: Sequence[dict[str, Any]], sources: Sequence[str], device: torch.device
                 ) -> tuple[list[Normalized], Config]:
    """Member predictors taking [0, 1] input, and the ensemble's config; members must agree on classes
    (names and order) and input channels."""
    members: list[Normalized] = []
    configs: list[Config] = []
    for checkpoint, source in zip(checkpoints, sources, strict=True):
        model, cfg = model_from_checkpoint(checkpoint, source)
        configs.append(cfg)
        check_compatible(configs, sources)
        members.append(Normalized(Predictor(fold_batch_norm(model), device), cfg.data.mean, cfg.data.std))
    if not configs:
        raise UnetkitError("an ensemble needs at least one member checkpoint")
    return members, ensemble_config(configs[0])


def check_compatible(configs: Sequence[Config], sources: Sequence[str]) -> None:
    """Members must predict the same classes in the same order from images of the same channel count."""
    first = configs[0]
    for cfg, source in zip(configs[1:], sources[1:], strict=False):
        if cfg.data.classes != first.data.classes:
            raise UnetkitError(f"{source}: classes {cfg.data.classes} differ from {first.data.classes} of "
                               f"{sources[0]}; ensemble members must predict the same classes in the same order")
        if cfg.data.normalize != first.data.normalize:
            raise UnetkitError(f"{source}: data.normalize {cfg.data.normalize!r} differs from "
                               f"{first.data.normalize!r} of {sources[0]}; ensemble members must stretch their "
                               "input alike")
        if cfg.data.channels != first.data.channels:
            raise UnetkitError(f"{source}: reads images with {cfg.data.channels} channel(s) but {sources[0]} with "
                               f"{first.data.channels}; ensemble members must take the same input channels")


def write_ensemble(path: str | Path, checkpoints: Sequence[dict[str, Any]], sources: Sequence[str],
                   weights: Sequence[float], scores: dict[str, Any] | None = None) -> None:
    """Write already loaded and checked member checkpoints as one ensemble file (atomically)."""
    members = [{k: v for k, v in c.items() if k not in _TRAINING_STATE} for c in checkpoints]
    save_checkpoint({"format": FORMAT, "version": VERSION, "members": members, "sources": [str(s) for s in sources],
                     "weights": normalize_weights(weights, len(members)), "scores": scores or {}}, path)


def save_ensemble(path: str | Path, checkpoints: Sequence[str | Path], weights: Sequence[float],
                  scores: dict[str, Any] | None = None) -> None:
    """Bundle member checkpoints and their weights into one file; incompatible members are refused first."""
    loaded = [load_checkpoint(p) for p in checkpoints]
    sources = [str(p) for p in checkpoints]
    members, _ = load_members(loaded, sources, torch.device("cpu"))
    Ensemble(members, weights, sources)  # checks weights and geometry before anything is written
    write_ensemble(path, loaded, sources, weights, scores)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_ensemble(path: str | Path) -> dict[str, Any]:
    """Load and check an ensemble file before anything is built from it: format marker, members that are
    complete unetkit checkpoints with valid configs agreeing on classes and channels, and one finite,
    non-negative weight per member (not all 0). Like a checkpoint, the file is loaded without running any
    code from it (`load_torch_file`)."""
    path = Path(path)
    contents = load_torch_file(path, "unetkit ensemble")
    if not isinstance(contents, dict) or contents.get("format") != FORMAT:
        raise UnetkitError(f"{path} is not a unetkit ensemble (no '{FORMAT}' marker); "
                           "write one with `unetkit ensemble` or save_ensemble")
    if not _is_number(contents.get("version")) or contents["version"] > VERSION:
        raise UnetkitError(f"{path} was written by a newer unetkit (format {contents.get('version')}); upgrade")
    members = contents.get("members")
    if not isinstance(members, list) or not members:
        raise UnetkitError(f"{path}: it holds no member checkpoints; write the ensemble again")
    labels = [f"{path} (member {i + 1})" for i in range(len(members))]
    configs = [config_from_dict(check_checkpoint(m, label)["config"], label) for m, label in zip(members, labels,
                                                                                              strict=True)]
    check_compatible(configs, labels)
    weights = contents.get("weights")
    if not isinstance(weights, list) or not all(_is_number(w) for w in weights):
        raise UnetkitError(f"{path}: 'weights' must be a list of numbers, got {weights!r}; write the ensemble again")
    normalize_weights(weights, len(members), str(path))
    return contents


def file_format(path: str | Path) -> str | None:
    """The format marker of a torch file, read without loading its tensors (None if there is none).

    Used to tell ensembles from checkpoints; unreadable files answer None and get their error from the
    loader that is then tried.
    """
    try:
        contents = load_torch_file(path, mmap=True)
    except UnetkitError:  # not a (zip) torch file, or one that asks to run code: the real loader reports it
        return None
    return contents.get("format") if isinstance(contents, dict) else None


def ensemble_from_file(path: str | Path, device: torch.device) -> tuple[Ensemble, Config]:
    """The ensemble stored in `path`, ready to predict on `device`, and its config (mean 0, std 1)."""
    contents = load_ensemble(path)
    count = len(contents["members"])
    sources = contents.get("sources")
    if not isinstance(sources, list) or len(sources) != count:
        sources = [f"member {i + 1}" for i in range(count)]
    labels = [f"{path} (member {i + 1}: {s})" for i, s in enumerate(sources)]
    members, cfg = load_members(contents["members"], labels, device)
    return Ensemble(members, contents["weights"], labels), cfg
