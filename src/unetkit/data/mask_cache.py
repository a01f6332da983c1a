"""Decoded masks kept in memory for the length of a run, so an epoch does not decode every mask again.

Decoding is not free: a JPEG mask is read and thresholded, a palette mask matched colour by colour, and an
instance label image turned into background / interior / boundary (each object's ring found and widened),
which for a 1-megapixel image of nuclei costs more than the training step it feeds. A decoded mask is a
uint8 (H, W) array, an eighth of its float image, so a few hundred megabytes hold the masks of most
datasets; past the budget the remaining masks are decoded as before. The pre-flight scan fills the cache,
and data loader workers started after it inherit the filled cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASK_CACHE_BYTES = 512 * 2**20  # per process: 512 MiB holds ~500 one-megapixel masks


class DecodedMasks:
    """Masks by file path, up to `budget` bytes. Stored arrays are read-only: an in-place write by a
    transform would otherwise change the mask of every later epoch, so it raises instead."""

    def __init__(self, budget: int = MASK_CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self._masks: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._masks)

    def get(self, path: Path) -> np.ndarray | None:
        """The decoded (H, W) mask of `path`, or None when it was never stored."""
        return self._masks.get(str(path))

    def put(self, path: Path, mask: np.ndarray) -> np.ndarray:
        """Keep `mask` (H, W) for `path` while the budget allows; returns the array to use (read-only when kept)."""
        key = str(path)
        if key in self._masks or self.used + mask.nbytes > self.budget:
            return mask
        kept = np.array(mask, copy=True)
        kept.setflags(write=False)
        self._masks[key] = kept
        self.used += kept.nbytes
        return kept
