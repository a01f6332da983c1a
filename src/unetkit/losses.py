"""Segmentation losses as a weighted sum of terms chosen in the config (`loss.terms`).

Every term takes logits `(N, C, H, W)` and a target `(N, H, W)` of class indices where `ignore_index` marks
pixels that must not count (padding, "void"). Every term returns 0 rather than NaN on a batch where all pixels
are ignored, and stays connected to the logits so `backward()` still works. Terms compute in float32 so they
behave the same under mixed precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unetkit.config import IGNORE_INDEX, LossConfig
from unetkit.errors import UnetkitError


def _valid_and_safe(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(valid mask, target with ignored pixels set to class 0) so indexing never sees the ignore label."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of `values` over valid pixels; exactly 0 (with a gradient path) when no pixel is valid."""
    return (values * valid).sum() / valid.sum().clamp(min=1)


class BinaryCrossEntropy(nn.Module):
    """BCE on a single foreground channel: logits `(N, 1, H, W)`, class 1 is the foreground.

    With class weights `[w0, w1]` each pixel's loss is multiplied by the weight of its true class; the mean is
    over valid pixels (as torch's BCE `weight=` does), not over the sum of weights.
    """

    def __init__(self, class_weights: list[float] | None, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[1] != 1:
            raise ValueError(f"bce needs a 1-channel model, got logits with {logits.shape[1]} channels")
        valid, safe = _valid_and_safe(target, self.ignore_index)
        fg = (safe == 1).float()
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0].float(), fg, reduction="none")  # (N, H, W)
        if self.weight is not None:
            per_pixel = per_pixel * self.weight[(safe == 1).long()]
        return _masked_mean(per_pixel, valid)


class CrossEntropy(nn.Module):
    """Multi-class cross-entropy; with class weights it is the weighted mean torch uses (divide by sum of w_t)."""

    def __init__(self, class_weights: list[float] | None, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        # reduction="none" + our own division: torch's "mean" returns NaN (0/0) on a fully ignored batch.
        per_pixel = F.cross_entropy(
            logits.float(), target, weight=self.weight, ignore_index=self.ignore_index, reduction="none"
        )  # (N, H, W), 0 where ignored
        if self.weight is None:
            return _masked_mean(per_pixel, valid)
        denom = (self.weight[safe] * valid).sum()
        return per_pixel.sum() / denom.clamp(min=torch.finfo(denom.dtype).tiny)


class SoftDice(nn.Module):
    """1 - mean over classes of (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth), sums over the whole batch.

    p is the softmax over C channels, or the sigmoid of a 1-channel binary model, in which case only the
    foreground is scored (class weights then do not apply). Summing over the batch rather than per image keeps
    a class that is absent from one image from dominating the loss. A class with nothing to compare
    (sum(p) + sum(t) + smooth == 0, only possible with smooth = 0) counts as a perfect match.
    """

    def __init__(self, class_weights: list[float] | None, smooth: float, ignore_index: int) -> None:
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        mask = valid.unsqueeze(1).float()  # (N, 1, H, W)
        weight = self.weight
        if logits.shape[1] == 1:
            prob = torch.sigmoid(logits.float()) * mask  # (N, 1, H, W): foreground only
            truth = (safe == 1).unsqueeze(1).float() * mask
            weight = None
        else:
            prob = torch.softmax(logits.float(), dim=1) * mask  # (N, C, H, W)
            truth = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).float() * mask
        inter = (prob * truth).sum(dim=(0, 2, 3))  # (C,)
        denom = prob.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3)) + self.smooth
        score = (2 * inter + self.smooth) / denom.clamp(min=torch.finfo(denom.dtype).tiny)
        score = torch.where(denom > 0, score, torch.ones_like(score))
        mean = score.mean() if weight is None else (weight * score).sum() / weight.sum()
        return 1 - mean


class Focal(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): mean over valid pixels of -alpha_t (1 - p_t)^gamma log p_t.

    It down-weights pixels the model already gets right, so rare, hard pixels drive training. alpha_t is the
    class weight of the true class (1 without class weights); gamma = 0 without weights is plain cross-entropy.
    """

    def __init__(self, class_weights: list[float] | None, gamma: float, ignore_index: int) -> None:
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        log_pt = torch.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (N, H, W)
        # 1 - p_t via expm1 stays accurate near p_t = 1; the clamp keeps pow's gradient finite at exactly 0.
        miss = (-torch.expm1(log_pt)).clamp(min=torch.finfo(log_pt.dtype).tiny)
        per_pixel = -miss.pow(self.gamma) * log_pt
        if self.weight is not None:
            per_pixel = per_pixel * self.weight[safe]
        return _masked_mean(per_pixel, valid)


class WeightedCrossEntropy(nn.Module):
    """The paper's energy (eq. 1): cross-entropy of each pixel times its weight-map value w(x), averaged over
    valid pixels. The weight map already holds the class balance w_c, so class weights are not applied again."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, pixel_weight: Tensor | None) -> Tensor:
        if pixel_weight is None:
            raise ValueError("weighted_ce needs a weight map: set data.weight_map so batches carry `weight`")
        valid, safe = _valid_and_safe(target, self.ignore_index)
        per_pixel = F.cross_entropy(logits.float(), safe, reduction="none")  # (N, H, W)
        return _masked_mean(per_pixel * pixel_weight.float(), valid)


class SegmentationLoss(nn.Module):
    """Weighted sum of loss terms; `parts` gives each weighted term separately for logging."""

    def __init__(self, names: list[str], weights: list[float], terms: list[nn.Module], num_classes: int) -> None:
        super().__init__()
        self.names = names
        self.weights = weights
        self.terms = nn.ModuleList(terms)
        self.num_classes = num_classes

    def parts(self, logits: Tensor, target: Tensor, pixel_weight: Tensor | None = None) -> dict[str, Tensor]:
        """{term name: weight * term(logits, target)}; logits `(N, C, H, W)`, target `(N, H, W)` int64,
        pixel_weight `(N, H, W)` (the border weight map, for `weighted_ce` only)."""
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match as (N, C, H, W) and "
                "(N, H, W); a valid-padding U-Net needs its target cropped to the output size"
            )
        expected = 1 if any(isinstance(t, BinaryCrossEntropy) for t in self.terms) else self.num_classes
        if logits.shape[1] != expected:
            raise ValueError(f"loss expects logits with {expected} channels, got {logits.shape[1]}")
        target = target.long()
        out: dict[str, Tensor] = {}
        for name, weight, term in zip(self.names, self.weights, self.terms, strict=True):
            if isinstance(term, WeightedCrossEntropy):
                value = weight * term(logits, target, pixel_weight)
            else:
                value = weight * term(logits, target)
            out[name] = out[name] + value if name in out else value
        return out

    def forward(self, logits: Tensor, target: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
        return torch.stack(list(self.parts(logits, target, pixel_weight).values())).sum()


def build_loss(cfg: LossConfig, num_classes: int, ignore_index: int = IGNORE_INDEX) -> SegmentationLoss:
    """The one place a `LossConfig` becomes loss modules; see the module docstring for the call convention."""
    weights = cfg.class_weights
    if weights is not None and len(weights) != num_classes:
        raise UnetkitError(f"loss.class_weights has {len(weights)} values for {num_classes} classes; give one each")
    if cfg.binary and num_classes != 2:
        raise UnetkitError(f"loss `bce` needs exactly 2 classes, got {num_classes}; use `ce` for more classes")
    terms: list[nn.Module] = []
    for term in cfg.terms:
        if term.name == "bce":
            terms.append(BinaryCrossEntropy(weights, ignore_index))
        elif term.name == "ce":
            terms.append(CrossEntropy(weights, ignore_index))
        elif term.name == "weighted_ce":
            terms.append(WeightedCrossEntropy(ignore_index))
        elif term.name == "dice":
            terms.append(SoftDice(weights, cfg.dice_smooth, ignore_index))
        else:
            terms.append(Focal(weights, cfg.focal_gamma, ignore_index))
    return SegmentationLoss([t.name for t in cfg.terms], [t.weight for t in cfg.terms], terms, num_classes)


def loss_of_probabilities(loss_fn: SegmentationLoss, probs: Tensor, target: Tensor,
                          pixel_weight: Tensor | None = None) -> Tensor:
    """The configured loss of predicted class probabilities `(N, K, H, W)` (after TTA, tiling and blending),
    so validation and `evaluate` score the very output a user gets.

    Probabilities are turned back into logits the loss terms accept: log p for softmax terms (their softmax
    gives p back) and log(p1 / p0) for `bce`'s single channel (its sigmoid gives p1 back). Probabilities are
    clamped at float32's smallest normal number, so a confidently wrong pixel costs about 87, not infinity.
    """
    log_p = probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    binary = any(isinstance(t, BinaryCrossEntropy) for t in loss_fn.terms)
    logits = (log_p[:, 1:2] - log_p[:, 0:1]) if binary else log_p
    return loss_fn(logits, target, pixel_weight)
