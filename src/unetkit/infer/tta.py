"""Test-time augmentation: average class probabilities over flips and 90-degree rotations.

The paper averaged seven rotated versions of each ISBI 2012 slice. Here `d4` uses all eight symmetries of the
square (4 rotations, each with and without a flip), `flips` the four flip combinations. Each view's output
is mapped back before averaging, so the wrapper is again a callable of the same shape contract; since a
network's margin is the same on every side, it also works for the valid network's cropped outputs.
"""

from __future__ import annotations

from typing import Literal

import torch

from unetkit.infer.geometry import HoldsGeometry, geometry_of
from unetkit.infer.predictor import Fn

TTAMode = Literal["none", "flips", "d4"]


def _views(mode: TTAMode) -> list[tuple[int, bool]]:
    """(quarter turns, horizontal flip) of each view."""
    if mode == "flips":
        return [(0, False), (0, True), (2, False), (2, True)]  # rot180 = both flips; with a flip = vertical flip
    if mode == "d4":
        return [(k, flip) for k in range(4) for flip in (False, True)]
    return [(0, False)]


class TTA(HoldsGeometry):
    """Wrap a predictor callable `(N, C, h, w) -> (N, K, h', w')` so it averages over symmetric views."""

    def __init__(self, fn: Fn, mode: TTAMode = "d4") -> None:
        self.fn = fn
        self.views = _views(mode)
        self.geometry = geometry_of(fn)  # the views change no sizes

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for turns, flip in self.views:
            view = torch.rot90(x, turns, dims=(-2, -1))
            view = view.flip(-1) if flip else view
            out = self.fn(view)
            out = out.flip(-1) if flip else out
            out = torch.rot90(out, -turns, dims=(-2, -1))
            total = out if total is None else total + out
        return total / len(self.views)
