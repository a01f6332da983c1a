"""Touching synthetic nuclei with their instance labels: the smallest dataset on which connected components
fail and an instance model must succeed, generated from a seed (for tests and quick trials).

Each image holds pairs of bright discs that overlap a little, so their union is one connected blob; the
instance label image gives each disc its own id (the overlap goes to the disc drawn last, as an annotator
would draw a border through it). A faint dark seam along the contact, as real touching nuclei show, is the
visual cue a network can learn to separate them by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetkit.data.writers import write_image, write_mask


def touching_sample(rng: np.random.Generator, size: int = 96, pairs: int = 3, radius: int = 9
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(image (size, size) uint8, labels (size, size) uint16) of `pairs` touching disc pairs."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    image = rng.normal(40, 8, (size, size))
    step = size // pairs
    for k in range(pairs):
        cy = step * k + step // 2
        cx = int(rng.integers(radius + 2, size - 3 * radius - 2))
        for j, x in enumerate((cx, cx + int(1.7 * radius))):
            disc = (yy - cy) ** 2 + (xx - x) ** 2 <= radius ** 2
            labels[disc] = 2 * k + j + 1
    seam = np.zeros((size, size), bool)
    seam[:, 1:] |= (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    image[labels > 0] = rng.normal(190, 10, int((labels > 0).sum()))
    image[seam] = 110
    return np.clip(image, 0, 255).astype(np.uint8), labels


def make_touching_dataset(root: Path, count: int = 8, size: int = 96, seed: int = 0) -> Path:
    """Write `root/images`, `root/masks` (binary 0/255) and `root/instances` (16-bit labels); returns `root`."""
    root = Path(root)
    for i in range(count):
        image, labels = touching_sample(np.random.default_rng([seed, i]), size)
        write_image(root / "images" / f"cells_{i:03d}.png", image)
        write_mask(root / "masks" / f"cells_{i:03d}.png", np.where(labels > 0, 255, 0).astype(np.uint8))
        write_mask(root / "instances" / f"cells_{i:03d}.png", labels)
    return root
