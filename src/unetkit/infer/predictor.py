"""Logits for an image of any size from a network that accepts only some sizes.

The paper's valid network needs `margin` pixels of context around every output pixel and an input whose
size passes its pooling rule; the padded network needs a multiple of 2**depth. `Predictor` mirror-pads
the image to the smallest input whose output covers it (mirroring, as the paper does, so border pixels see
plausible context), runs the model once and crops the output back to the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad (N, C, H, W) by any amount; reflection is repeated when a pad exceeds the image."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        t, b = min(top, h - 1), min(bottom, h - 1)
        lf, r = min(left, w - 1), min(right, w - 1)
        if h == 1 or w == 1:  # nothing to reflect: repeat the edge instead
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, (lf, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - lf, right - r
    return x


def padding_for(model: nn.Module, size: int) -> tuple[int, int, int]:
    """(pad_before, pad_after, crop_start) along one axis so the model's output covers `size` pixels."""
    padded = model.input_size_for(size)
    extra = model.output_size(padded) - size  # output pixels beyond the image, split over both sides
    before = model.margin + extra // 2
    return before, padded - size - before, extra // 2


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) logits -> (N, K, H, W) class probabilities; a 1-channel binary model gives K = 2."""
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        return torch.cat([1 - fg, fg], dim=1)
    return torch.softmax(logits, dim=1)


class Predictor:
    """Callable `(N, C, H, W)` normalized images -> `(N, C_out, H, W)` logits, for any H and W."""

    def __init__(self, model: nn.Module, device: torch.device, amp: bool = False) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.amp = amp and device.type == "cuda"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        top, bottom, crop_y = padding_for(self.model, h)
        left, right, crop_x = padding_for(self.model, w)
        x = mirror_pad(images.to(self.device), top, bottom, left, right)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.model(x)
        return logits[..., crop_y : crop_y + h, crop_x : crop_x + w].float()
