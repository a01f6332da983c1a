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


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """The (smaller id, larger id) pairs of objects that share an edge (4-adjacent pixels) in a label image."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        hit = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
        pairs.update(zip(low.tolist(), high.tolist(), strict=True))
    return pairs


def instance_facts(files: list, max_images: int = 64) -> dict:
    """What `data inspect` reports about instance label images: objects per image, their median area, and
    how many touch another object (the objects connected components would merge)."""
    from unetkit.data.io import read_raw

    chosen = [files[i * len(files) // max_images] for i in range(max_images)] if len(files) > max_images else files
    per_image, areas, touching = [], [], 0
    for path in chosen:
        labels = read_raw(path).astype(np.int64)
        sizes = np.bincount(labels.ravel())[1:]
        sizes = sizes[sizes > 0]
        per_image.append(len(sizes))
        areas.extend(sizes.tolist())
        touching += len({i for pair in touching_pairs(labels) for i in pair})
    objects = sum(per_image)
    return {"images": len(chosen), "objects_per_image": objects / max(len(chosen), 1),
            "median_area": float(np.median(areas)) if areas else 0.0,
            "touching_share": touching / max(objects, 1)}


def format_instance_facts(facts: dict) -> str:
    return (f"instances/: {facts['objects_per_image']:.1f} objects per image (over {facts['images']} images), median "
            f"area {facts['median_area']:.0f} px, {facts['touching_share']:.1%} of objects touch another "
            "(connected components would merge them)")
