"""Training and predicting at a reduced resolution (`data.scale`), the same way in every path.

When the objects are far larger than a training crop (a polyp filling half a 600 px frame, crops of 256 px), a
crop often lies wholly inside or outside an object and the network never sees an edge with its context; at a
lower resolution one crop holds whole objects, and each step costs less. Images are shrunk with area
averaging, masks with nearest neighbours (classes never blend); predictions are made at the reduced size and
their probabilities resized back bilinearly, so masks and scores are always at the original size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def reduced_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of an image of (height, width) at `scale` (at least 1 pixel each)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_image(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) float32 -> (h, w, C) by area averaging; scale 1 returns the image itself."""
    if scale == 1.0:
        return image
    height, width = reduced_size(*image.shape[:2], scale)
    small = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)
    return small.reshape(height, width, -1)


def shrink_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) class indices (or weights) -> (h, w) by nearest neighbour."""
    if scale == 1.0:
        return mask
    height, width = reduced_size(*mask.shape[:2], scale)
    return cv2.resize(np.ascontiguousarray(mask), (width, height), interpolation=cv2.INTER_NEAREST)


def grow_probabilities(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, h, w) class probabilities -> (K, height, width), bilinear (still summing to 1 per pixel)."""
    if probs.shape[-2:] == (height, width):
        return probs
    return F.interpolate(probs[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
