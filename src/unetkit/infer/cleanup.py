"""Removing small foreground objects from a binary class map (`infer.min_object_px`).

A network trained for a few minutes often leaves specks: a handful of foreground pixels in texture that only
resembles an object. Dropping 8-connected foreground regions below a size is the classic remedy; whether it
helps, and at which size, is measured on the validation images (`train.choose: [min_object]`), never assumed.
It needs the whole class map (a region may cross a tile or band border), so it runs on images up to
`CLEAN_PIXELS`; larger images are left as predicted.
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import remove_small_objects as _remove

CLEAN_PIXELS = 64 * 1024 * 1024


def cleans(height: int, width: int, min_px: int) -> bool:
    """Whether an image of this size is cleaned of objects under `min_px` (the one rule of every path)."""
    return min_px > 0 and height * width <= CLEAN_PIXELS


def remove_small_objects(index: np.ndarray, min_px: int) -> np.ndarray:
    """(H, W) uint8 class map with classes 0/1 -> the same with foreground regions under `min_px` pixels set
    to 0 (background)."""
    if min_px <= 0:
        return index
    kept = _remove(index == 1, max_size=min_px - 1, connectivity=2)
    return kept.astype(np.uint8)
