"""Overlap-tile prediction over images of any size with bounded memory.

Tiles are processed one row of tiles at a time. The image is only read region by region (a memory-mapped
TIFF stays on disk), the blended probabilities are kept for one band of rows, and every finished row is
turned into class indices at once (arg-max per band), so memory grows with the image width, not its area.

For the valid network with `overlap=0` this is the paper's overlap-tile strategy: output tiles sit side by
side on the network's pooling grid, each input tile carries `margin` pixels of (mirrored, at the border)
context, and the result equals one forward pass over the whole mirror-padded image. With `overlap > 0`
neighbouring outputs are blended with a window that trusts tile centres most (for padded networks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from unetkit.infer.predictor import Fn
from unetkit.infer.tiling import blend_window, read_region, tile_starts

Prepare = Callable[[np.ndarray], torch.Tensor]  # raw (h, w, C) region -> normalized (C, h, w) float32 tensor


def tile_geometry(fn: Fn, tile: int) -> tuple[int, int]:
    """(input size, output size) of the tiles for a requested output tile size (rounded up to fit the network)."""
    size_in = fn.input_size_for(tile)
    return size_in, fn.output_size(size_in)


def predict_tiled(
    fn: Fn,
    image: np.ndarray,
    prepare: Prepare,
    *,
    tile: int = 512,
    overlap: int = 0,
    blend: str = "gaussian",
    batch_size: int = 4,
    probabilities: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Segment an (H, W, C) image tile by tile; returns (H, W) uint8 class indices.

    `fn` maps (N, C, h, w) normalized tiles to (N, K, h - 2*margin, w - 2*margin) probabilities. When
    `probabilities` is given (a (K, H, W) array, e.g. a memory-mapped .npy), the blended probabilities are
    written into it as rows finish.
    """
    height, width = image.shape[:2]
    size_in, size_out = tile_geometry(fn, tile)
    if overlap >= size_out:
        raise ValueError(f"overlap {overlap} must be smaller than the output tile {size_out}")
    ys = tile_starts(height, size_out, overlap, fn.stride)
    xs = tile_starts(width, size_out, overlap, fn.stride)
    window = torch.from_numpy(blend_window(size_out, blend if overlap else "constant"))  # (t, t)
    index = np.zeros((height, width), np.uint8)
    acc: torch.Tensor | None = None  # (K, t, W + t): probabilities of rows [top, top + t), weighted
    weight = torch.zeros(size_out, width + size_out)
    bar = tqdm(total=len(ys) * len(xs), desc="tiles", leave=False, disable=not progress, dynamic_ncols=True)
    for row, y in enumerate(ys):
        for first in range(0, len(xs), batch_size):
            batch_x = xs[first : first + batch_size]
            tiles = [prepare(read_region(image, y - fn.margin, x - fn.margin, size_in, size_in)) for x in batch_x]
            out = fn(torch.stack(tiles)).float()  # (B, K, t, t)
            if acc is None:
                acc = torch.zeros(out.shape[1], size_out, width + size_out)
            for x, probs in zip(batch_x, out, strict=True):
                acc[:, :, x : x + size_out] += probs * window
                weight[:, x : x + size_out] += window
            bar.update(len(batch_x))
        # rows above the next tile row are final: normalize, arg-max, write, then move the rest up
        done = min((ys[row + 1] if row + 1 < len(ys) else height) - y, height - y)
        final = acc[:, :done, :width] / weight[:done, :width]  # (K, done, W)
        index[y : y + done] = final.argmax(0).numpy().astype(np.uint8)
        if probabilities is not None:
            probabilities[:, y : y + done] = final.numpy().astype(probabilities.dtype)
        acc = torch.cat([acc[:, done:], torch.zeros_like(acc[:, :done])], dim=1)
        weight = torch.cat([weight[done:], torch.zeros_like(weight[:done])], dim=0)
    bar.close()
    return index
