"""Closing the gaps of a boundary map with a seeded watershed (`infer.boundary_seeds`).

In a boundary map (binary, class 1 = the boundaries between objects, as EM membranes between cells) the
thresholded boundary has gaps wherever the network was unsure for a few pixels, and one gap merges the two
regions on either side: the Rand error counts every pixel pair of both. The network usually still knows
both regions: their centres lie far below the threshold. So regions are seeded where p(boundary) is below
`seeds` (the 4-connected components of those pixels), grown by watershed over p(boundary) until they meet,
and the one-pixel lines where they meet become boundary. A gap between two seeds is closed; where the
thresholded map already separates the regions nothing changes but a one-pixel line inside the thick
boundary; no boundary pixel is removed. This is the classic seeded watershed of EM segmentation (Beucher and
Meyer 1993; as used on membrane probabilities since the ISBI 2012 challenge). Whether it helps, and at which
seed level, is measured on the validation images (`train.choose: [gaps]`), never assumed.

Like the small-object cleanup it needs the whole image (a region crosses tiles), so it runs on images up to
`CLEAN_PIXELS` and larger images are left as thresholded.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from skimage.segmentation import watershed

from unetkit.infer.cleanup import CLEAN_PIXELS

SEED_LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4)  # p(boundary) below which a pixel seeds a region: the candidates tried


def closes(height: int, width: int, seeds: float | None) -> bool:
    """Whether an image of this size has its gaps closed (the one rule of every path)."""
    return seeds is not None and height * width <= CLEAN_PIXELS


def gap_lines(boundary: np.ndarray, seeds: float) -> np.ndarray | None:
    """(H, W) float p(boundary) -> the flat indices of the one-pixel watershed lines between the regions seeded
    at p(boundary) < `seeds` (None with fewer than two regions: nothing to keep apart). They depend on the
    probabilities and the seed level only, so the choices after training compute them once per image and level
    for every threshold and object size they score; as indices they take a few percent of the image's bytes."""
    markers = label(boundary < seeds, connectivity=1)  # (H, W) int: the sure region centres
    if markers.max() < 2:
        return None
    return np.flatnonzero(watershed(boundary, markers, connectivity=1, watershed_line=True) == 0)


def with_lines(index: np.ndarray, lines: np.ndarray | None) -> np.ndarray:
    """(H, W) uint8 classes 0/1 with the pixels at the flat indices `lines` set to class 1 (a copy)."""
    if lines is None:
        return index
    closed = index.copy()
    closed.reshape(-1)[lines] = 1
    return closed


def close_gaps(index: np.ndarray, boundary: np.ndarray, seeds: float) -> np.ndarray:
    """(H, W) uint8 classes 0/1 and the (H, W) float p(boundary) -> the classes with the watershed lines between
    the regions seeded at p(boundary) < `seeds` set to class 1."""
    return with_lines(index, gap_lines(boundary, seeds))
