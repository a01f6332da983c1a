"""Segmentation scores from one confusion matrix accumulated over a whole dataset.

Scores are derived once from the summed pixel counts, never averaged per batch or per image: a per-batch
mean would weight a batch of 10 foreground pixels like a batch of 10,000. Counting (`ConfusionMatrix`) and
scoring (`scores`) are separate so matrices from several datasets or processes can be added first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from unetkit.config import IGNORE_INDEX
from unetkit.distributed import all_sum
from unetkit.errors import UnetkitError


def _outside(values: Tensor, num_classes: int) -> bool:
    """Whether any value lies outside [0, num_classes): one pass for the smallest and largest."""
    low, high = torch.aminmax(values)
    return bool(low < 0) or bool(high >= num_classes)


class ConfusionMatrix:
    """Pixel counts `matrix[truth, prediction]` over everything passed to `update`.

    Counting stays on the device of the first update (no host sync per batch beyond the label check);
    `matrix` hands back a CPU copy.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counts: Tensor = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count one batch of class maps.

        pred, target: integer class maps of the same shape, `(N, H, W)` or `(H, W)`. Pixels whose target is
        `ignore_index` are skipped; any other target value outside `[0, num_classes)` means the masks do not
        match the configured classes, which is the user's to fix.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).to(pred.device).long()
        keep = target != self.ignore_index
        if not bool(keep.all()):  # boolean indexing copies (~4 ms for a 530x622 map): only where void pixels are
            pred, target = pred[keep], target[keep]
        c = self.num_classes
        if target.numel() and _outside(target, c):
            bad = sorted({int(v) for v in target[(target < 0) | (target >= c)].unique()[:5]})
            raise UnetkitError(
                f"mask labels {bad} are outside the {c} configured classes (0..{c - 1}) and are not the ignore "
                f"label {self.ignore_index}; check data.classes and data.mask"
            )
        if pred.numel() and _outside(pred, c):
            raise ValueError(f"predicted classes must lie in [0, {c}), got {pred.min().item()}..{pred.max().item()}")
        # Each (truth, prediction) pair becomes one cell index, so a single bincount fills the whole matrix.
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        if self._counts.device != counts.device:
            self._counts = self._counts.to(counts.device)
        self._counts += counts

    def reset(self) -> None:
        """Forget all counts, e.g. before the next validation epoch."""
        self._counts.zero_()

    @property
    def matrix(self) -> Tensor:
        """`(C, C)` int64 on the CPU; rows are the true class, columns the predicted class."""
        return self._counts.detach().cpu().clone()

    def add_counts(self, counts: Tensor) -> ConfusionMatrix:
        """Add a raw `(C, C)` count matrix (a saved or received one) and return self."""
        if tuple(counts.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"counts of shape {tuple(counts.shape)} do not fit {self.num_classes} classes")
        self._counts += counts.to(self._counts.device, torch.int64)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts of every process (exact integers) so each rank holds the whole dataset's matrix."""
        self._counts = all_sum(self._counts.clone())
        return self


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den with NaN where den is 0 (a score that is undefined, not zero)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _opt(value: float) -> float | None:
    """NaN -> None so the result is valid JSON and 'undefined' reads as such."""
    return None if math.isnan(value) else float(value)


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def scores(matrix: Tensor | np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, IoU, Dice, precision and recall from a `(C, C)` confusion matrix (rows truth, cols prediction).

    A class absent from both truth and prediction has no defined IoU or Dice: it is reported as None and left
    out of `miou` / `mean_dice` instead of counting as 0 or 1. The background class is included in `miou`.
    With two classes the top-level `precision`, `recall` and `f1` are those of class 1 (the foreground).
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, Tensor) else np.asarray(matrix)
    m = m.astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"matrix of shape {m.shape} does not fit {len(class_names)} class names")
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp  # predicted as the class, truly another
    fn = m.sum(axis=1) - tp  # truly the class, predicted as another
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    total = m.sum()
    result: dict = {
        "pixel_accuracy": _opt(tp.sum() / total if total else math.nan),
        "miou": _opt(_nanmean(iou)),
        "mean_dice": _opt(_nanmean(dice)),
        "per_class": {
            name: {
                "iou": _opt(iou[i]),
                "dice": _opt(dice[i]),
                "precision": _opt(precision[i]),
                "recall": _opt(recall[i]),
                "support": int(tp[i] + fn[i]),
            }
            for i, name in enumerate(class_names)
        },
        "num_pixels": int(total),
        "miou_includes_background": True,
        "ignored": "pixels labelled ignore_index are excluded from every score",
    }
    if len(class_names) == 2:
        result["precision"] = _opt(precision[1])
        result["recall"] = _opt(recall[1])
        result["f1"] = _opt(dice[1])  # F1 and Dice are the same quantity on pixel counts
    return result


def format_table(result: dict) -> str:
    """Plain-text per-class table of a `scores` result, for the terminal; undefined scores print as '-'."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    names = list(result["per_class"])
    width = max(len("class"), *(len(n) for n in names))
    total = result["num_pixels"]
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'precision':>9}  {'recall':>7}  {'pixels':>7}"]
    for name in names:
        row = result["per_class"][name]
        share = f"{100 * row['support'] / total:.1f}%" if total else "-"
        lines.append(
            f"{name:<{width}}  {num(row['iou']):>7}  {num(row['dice']):>7}  {num(row['precision']):>9}  "
            f"{num(row['recall']):>7}  {share:>7}"
        )
    counted = sum(result["per_class"][n]["iou"] is not None for n in names)
    lines.append(f"mIoU {num(result['miou'])} over {counted} of {len(names)} classes (every class present in truth or "
                 f"prediction, background included), mean Dice {num(result['mean_dice'])}")
    lines.append(f"pixel accuracy {num(result['pixel_accuracy'])} over {total} pixels (ignore label excluded)")
    return "\n".join(lines)


def headline(result: dict, prefix: str = "") -> str:
    """The scores a user reads first, on one line: mIoU, then for two classes the foreground's IoU and Dice
    (F1), for more classes the worst class. `prefix` goes before each name ("val ")."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    names = list(result["per_class"])
    parts = [f"{prefix}mIoU {num(result['miou'])}"]
    if len(names) == 2:
        fg = result["per_class"][names[1]]
        parts.append(f"{prefix}{names[1]} IoU {num(fg['iou'])} Dice {num(fg['dice'])}")
    else:
        scored = [(row["iou"], name) for name, row in result["per_class"].items() if row["iou"] is not None]
        if scored:
            worst, name = min(scored)
            parts.append(f"worst class {name} IoU {num(worst)}")
    return "  ".join(parts)
