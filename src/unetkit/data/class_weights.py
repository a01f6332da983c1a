"""Class weights for the loss, computed from how often each class occurs in the training masks.

Rare classes (poles, pedestrians) are swamped by common ones (road, sky) in a plain cross-entropy; weighting
each class's loss by a factor that grows as the class gets rarer is the usual fix. Two definitions:

- inverse frequency: `w_c = total / (C_present * count_c)`, so that the weights, averaged over pixels, are 1.
- median frequency (Eigen & Fergus 2015, used by SegNet): `freq_c = count_c / P_c`, where `P_c` is the number
  of labelled pixels in the masks where class c occurs at all, and `w_c = median(freq) / freq_c`. Normalising
  by `P_c` rather than by all pixels keeps a class that is small but present in few images from getting an
  extreme weight.

A class that never occurs gets weight 0: there is nothing to weight, and 0 keeps the loss finite whatever
the model predicts for it. Ignored pixels (`IGNORE_INDEX`) count nowhere, not even in `P_c`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.pairs import crop_rows, rows_of
from unetkit.errors import UnetkitError


@dataclass(frozen=True)
class ClassPixelCounts:
    """Per-class pixel statistics over a set of masks; every array is `(C,)` int64."""

    counts: np.ndarray  # pixels of class c over all masks
    present_pixels: np.ndarray  # labelled pixels of the masks that contain class c
    present_masks: np.ndarray  # number of masks that contain class c

    @classmethod
    def of_mask(cls, mask: np.ndarray, num_classes: int) -> ClassPixelCounts:
        """The statistics of one decoded (H, W) mask; ignored pixels (IGNORE_INDEX > C) count nowhere."""
        per_class = np.bincount(mask.ravel(), minlength=256)[:num_classes].astype(np.int64)
        present = per_class > 0
        return cls(per_class, np.where(present, per_class.sum(), 0), present.astype(np.int64))

    @classmethod
    def zeros(cls, num_classes: int) -> ClassPixelCounts:
        return cls(*(np.zeros(num_classes, dtype=np.int64) for _ in range(3)))

    def __add__(self, other: ClassPixelCounts) -> ClassPixelCounts:
        return ClassPixelCounts(self.counts + other.counts, self.present_pixels + other.present_pixels,
                                self.present_masks + other.present_masks)


def class_pixel_counts(pairs: Sequence[Sequence[Path]], codec: MaskCodec) -> ClassPixelCounts:
    """Read every mask of `pairs` once (images are not read) and count its classes' pixels. (A training run
    takes the same statistics from the scan that checks every pair, `unetkit.data.dataset.scan_pairs`.)"""
    total = ClassPixelCounts.zeros(codec.num_classes)
    for pair in pairs:
        mask = crop_rows(codec.decode(read_raw(pair[1]), str(pair[1])), rows_of(pair))
        total = total + ClassPixelCounts.of_mask(mask, codec.num_classes)
    return total


def class_weights(counts: ClassPixelCounts, method: Literal["inverse", "median"]) -> np.ndarray:
    """`(C,)` float64 loss weights by inverse or median frequency; absent classes get 0 (see the module doc)."""
    present = counts.counts > 0
    if not present.any():
        raise UnetkitError("the masks hold no labelled pixels (all ignored?); check data.mask.ignore_value")
    weights = np.zeros(counts.counts.shape, dtype=np.float64)
    if method == "inverse":
        total = float(counts.counts.sum())
        weights[present] = total / (present.sum() * counts.counts[present])
    elif method == "median":
        freq = counts.counts[present] / counts.present_pixels[present]
        weights[present] = np.median(freq) / freq
    else:
        raise ValueError(f"method must be 'inverse' or 'median', got {method!r}")
    return weights
