"""The inference chain: a model-level predictor, wrapped by TTA and tiling, each a callable.

Every link is a callable `(N, C, h, w) normalized input -> (N, K, h - 2*margin, w - 2*margin) probabilities`
holding the geometry of the network it wraps (`unetkit.infer.geometry`), so test-time augmentation, ensembles
and exported models plug into the same tiling.
`predict_whole` turns such a callable into one that takes an image of any size: it mirror-pads the image to
the smallest input whose output covers it (mirroring, as the paper does, so border pixels see plausible
context), calls once and crops back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.infer.geometry import Geometry, HoldsGeometry, geometry_of, padding_for


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad (N, C, H, W) by any amount; reflection is repeated when a pad exceeds the image."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        if h == 1 or w == 1:  # nothing to reflect: repeat the edge instead
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        t, b = min(top, h - 1), min(bottom, h - 1)
        lf, r = min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (lf, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - lf, right - r
    return x


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) logits -> (N, K, H, W) class probabilities; a 1-channel binary model gives K = 2."""
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        return torch.cat([1 - fg, fg], dim=1)
    return torch.softmax(logits, dim=1)


def classes_of(probs: torch.Tensor, threshold: float = 0.5, dim: int = -3) -> torch.Tensor:
    """Class probabilities -> int64 class indices, the one rule every path (validation, evaluate, predict,
    ensemble search) uses; `dim` is the class axis ((K, H, W) and (N, K, H, W): -3; (K, P): 0).

    With 2 classes and a threshold other than 0.5 a pixel is foreground when p(class 1) > threshold; at 0.5
    this is the arg-max itself (ties go to class 0), so the default reproduces an arg-max bit for bit.
    The arg-max is taken along a contiguous axis: over the strided class axis of a (2, 530, 622) map PyTorch's
    argmax took 50 ms on a 2-core CPU, the comparison of two classes 1.3 ms and a contiguous arg-max 3.6 ms,
    and the choices after training take it for every image and candidate.
    """
    if probs.shape[dim] == 2:
        if threshold != 0.5:
            return (probs.select(dim, 1) > threshold).long()
        return (probs.select(dim, 1) > probs.select(dim, 0)).long()  # the arg-max of two: ties go to class 0
    return probs.movedim(dim, -1).contiguous().argmax(-1)


Precision = Literal["fp32", "bf16", "fp16"]


class Predictor(HoldsGeometry):
    """A network ready for inference: eval mode, device, optional autocast; returns probabilities on the CPU.

    `precision` bf16 (CPUs with AVX-512 bf16 or AMX, and GPUs) or fp16 (GPUs) runs the convolutions under
    autocast; `channels_last` stores activations NHWC, which oneDNN and cuDNN convolve faster. `compile` runs
    the network through `torch.compile` (static shapes: tiles all have one size). Compiling takes a while on
    the first call and again for every new input shape, so a batch smaller than the largest one seen for its
    tile size (the last tiles of a row) is padded with zeros to that size and the compiled graph is reused.
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision = "fp32",
                 channels_last: bool = False, compile: bool = False) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.dtype: torch.dtype | None = None
        self.channels_last = False
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._batches: dict[tuple[int, ...], int] = {}  # (C, h, w) -> largest batch the compiled graph has run
        self.configure(precision, channels_last, compile)
        self.geometry: Geometry = model  # a network is its own size rule

    def configure(self, precision: Precision = "fp32", channels_last: bool = False, compile: bool = False) -> None:
        """Choose the speed options (see the class docstring); fp16 needs a GPU."""
        if precision == "fp16" and self.device.type != "cuda":
            raise UnetkitError("precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.channels_last = channels_last
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.compiled = torch.compile(self.model, dynamic=False) if compile else None  # compiles on first call
        self._batches = {}

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) valid input -> (N, C_out, h', w') float32 logits, on the model's device."""
        if self.model.training:  # batch statistics of a tile and dropout would make every score a different one
            raise RuntimeError("Predictor: the model was switched to training mode; predict with an eval-mode copy")
        x = x.to(self.device, non_blocking=True)
        n = x.shape[0]
        if self.compiled is not None:
            batch = self._batches.setdefault(tuple(x.shape[1:]), n)
            if n < batch:
                x = torch.cat([x, x.new_zeros(batch - n, *x.shape[1:])])  # eval mode: samples do not interact
            self._batches[tuple(x.shape[1:])] = max(batch, n)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.model if self.compiled is None else self.compiled
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return net(x)[:n].float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_probabilities(self.logits(x)).cpu()


Fn = Callable[[torch.Tensor], torch.Tensor]


def configure_speed(fn: object, precision: Precision, channels_last: bool, compile: bool = False) -> None:
    """Apply the speed options to every Predictor inside a chain (TTA, normalization and ensemble wrappers)."""
    if isinstance(fn, Predictor):
        fn.configure(precision, channels_last, compile)
    for inner in [getattr(fn, "fn", None), *getattr(fn, "members", [])]:
        if inner is not None:
            configure_speed(inner, precision, channels_last, compile)


@torch.inference_mode()
def predict_whole(fn: Fn, images: torch.Tensor, geometry: Geometry | None = None) -> torch.Tensor:
    """Run `fn` once over (N, C, H, W) images of any size; returns its output cropped to (N, K, H, W).

    `geometry` defaults to the one `fn` holds (a Predictor or a wrapper); pass it when `fn` is a bare function
    such as `predictor.logits`.
    """
    geometry = geometry or geometry_of(fn)
    h, w = images.shape[-2:]
    top, bottom = padding_for(geometry, h)
    left, right = padding_for(geometry, w)
    out = fn(mirror_pad(images, top, bottom, left, right))
    return out[..., :h, :w]
