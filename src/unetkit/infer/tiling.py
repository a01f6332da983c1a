"""Tile-grid maths for overlap-tile prediction (U-Net paper, Fig. 2), kept small and separately tested.

Worked example, the paper's network (margin 92, outputs 388 + 16k, shift-equivariant in steps of 16) on a
333-pixel axis with 388-pixel output tiles: one tile covers it, starting at 0; its input window is
[-92, 480), i.e. mirrored context on both sides. On a 1000-pixel axis: step = 384 (the largest multiple of 16
not above 388, so every tile sits on the same pooling grid as one pass over the whole image would), starts
0, 384, 768; outputs [0, 388), [384, 772), [768, 1156) cover 0..999, neighbours overlap by 4 pixels that are
computed identically, and the last tile reaches past the image into mirrored pixels and is cropped.
"""

from __future__ import annotations

import math
import mmap

import numpy as np


def tile_starts(size: int, tile: int, overlap: int = 0, stride: int = 1) -> list[int]:
    """Start offsets (image coordinates) of output tiles of length `tile` covering `[0, size)`.

    overlap == 0 (the valid network's exact tiling): steps of `tile` rounded down to a multiple of `stride`,
    the last tile may run past the end. overlap > 0 (blended sliding window): at least `overlap` pixels
    shared by neighbours, starts spread evenly so the last tile ends exactly at `size`.
    """
    if tile <= 0 or size <= 0:
        raise ValueError(f"tile ({tile}) and size ({size}) must be positive")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap ({overlap}) must be in [0, tile={tile})")
    if overlap == 0 and tile < stride:  # steps of a whole stride would leave gaps between the tiles
        raise ValueError(f"tile ({tile}) must be at least the stride ({stride}) without overlap")
    if size <= tile:
        return [0]
    if overlap == 0:
        step = max(stride, tile - tile % stride)
        starts = [0]
        while starts[-1] + tile < size:
            starts.append(starts[-1] + step)
        return starts
    count = math.ceil((size - tile) / (tile - overlap)) + 1
    return sorted({round(i * (size - tile) / (count - 1)) for i in range(count)})


def reflect_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """Map any integer coordinates into `[0, size)` by mirror reflection without repeating the edge
    (numpy's `reflect`, OpenCV's REFLECT_101), as often as needed: period 2 * (size - 1)."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded < size, folded, period - folded)


def read_region(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """`array[top:top+height, left:left+width]` of an (H, W, ...) array, mirrored where it leaves the array.

    Only the rows and columns needed are touched, so a memory-mapped TIFF is read lazily, tile by tile.
    """
    rows = reflect_indices(np.arange(top, top + height), array.shape[0])
    cols = reflect_indices(np.arange(left, left + width), array.shape[1])
    r0, c0 = int(rows.min()), int(cols.min())
    block = np.asarray(array[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1])
    return block[rows - r0][:, cols - c0]


def release_pages(array: np.ndarray) -> None:
    """Drop the pages a memory-mapped array has touched from this process's memory (no-op for other arrays).

    Reading a memory-mapped TIFF band by band would otherwise keep every page read so far resident, so the
    process would grow with the image's area. The pages stay in the OS file cache (and written pages of a
    shared mapping are still saved), so touching them again only costs a page fault. Copy-on-write maps
    (mode "c") are left alone: dropping their pages would discard changes.
    """
    mapping = getattr(array, "_mmap", None)  # np.memmap's mmap object
    if isinstance(mapping, mmap.mmap) and getattr(array, "mode", "c") != "c":
        mapping.madvise(mmap.MADV_DONTNEED)


def blend_window(tile: int, mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """(tile, tile) float32 weights for blending overlapping tiles: high in the centre, where a padded network
    sees the most context, low at the edges. `constant` gives equal weights; `linear` a tent."""
    if mode == "constant":
        return np.ones((tile, tile), np.float32)
    centre = (tile - 1) / 2
    axis = np.arange(tile, dtype=np.float64) - centre
    if mode == "gaussian":
        profile = np.exp(-(axis**2) / (2 * (sigma_scale * tile) ** 2))
    elif mode == "linear":
        profile = 1.0 - np.abs(axis) / (centre + 1)
    else:
        raise ValueError(f"unknown blend mode {mode!r}")
    window = np.outer(profile, profile)
    return np.maximum(window / window.max(), 1e-3).astype(np.float32)  # never zero: every pixel counts
