"""Instance label images (0 = background, each other value one object) as training targets.

A semantic U-Net cannot give touching objects different labels, but it can learn where one object ends:
the three-class target of background / object interior / object boundary (as in Caicedo et al., "Evaluation
of deep learning strategies for nucleus segmentation in fluorescence images", Cytometry A 2019). Every
object's own outer ring of `width` pixels is its boundary, so two touching objects are parted by two rings,
and the interiors that remain are the seeds from which the objects are grown back after prediction
(`infer/instances.py`). With two classes the target is just object versus background.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def boundary_of(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """(H, W) bool: the pixels of each object within `width` pixels of another label (background or another
    object), measured inside the object."""
    edges = find_boundaries(labels, connectivity=1, mode="inner")
    if width > 1:
        edges = binary_dilation(edges, iterations=width - 1) & (labels > 0)
    return edges


def instance_target(labels: np.ndarray, num_classes: int, width: int = 2) -> np.ndarray:
    """(H, W) uint8 classes of an (H, W) integer label image: 0/1 (background/object) with two classes,
    0/1/2 (background/interior/boundary) with three."""
    target = (labels > 0).astype(np.uint8)
    if num_classes == 3:
        target[boundary_of(labels, width)] = BOUNDARY
    return target
