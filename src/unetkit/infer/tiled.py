"""Overlap-tile prediction over images of any size with bounded memory.

Tiles are processed one row of tiles at a time. The image is only read region by region (a memory-mapped
TIFF stays on disk: its pages are dropped after each row of tiles), the blended probabilities are kept for
one band of rows, and finished rows are handed on in small pieces (`index_bands`), so a caller can encode
and write them at once: memory grows with the image width, not its area.

For the valid network with `overlap=0` this is the paper's overlap-tile strategy: output tiles sit side by
side on the network's pooling grid, each input tile carries `margin` pixels of (mirrored, at the border)
context, and the result equals one forward pass over the whole mirror-padded image. With `overlap > 0`
neighbouring outputs are blended with a window that trusts tile centres most (for padded networks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from unetkit.config import InferConfig
from unetkit.data.source import Prepare
from unetkit.infer.predictor import Fn, classes_of
from unetkit.infer.tiling import blend_window, read_region, release_pages, tile_starts

# Finished rows are handed on in pieces of about this many pixels, so the arg-max (int64) and a caller's
# encoding of them stay a few tens of MB whatever the image width.
CHUNK_PIXELS = 1 << 21
# At most this many input pixels go through the network at once. A pass over more is no faster on CPUs (one
# ~1000^2 tile already keeps every core busy; smaller passes stay in cache) while its activations are the
# largest memory cost of prediction, so large tiles go fewer at a time than `batch_size` (1024^2: one by one).
PASS_PIXELS = 1 << 21



def tile_geometry(fn: Fn, tile: int) -> tuple[int, int]:
    """(input size, output size) of the tiles for a requested output tile size (rounded up to fit the network).

    Exact tiling steps along the pooling grid, so an output tile is at least one stride: a valid depth-3 U-Net's
    smallest output (4 pixels) asked for with --tile 4 becomes 12, not tiles 8 pixels apart with gaps between.
    """
    size_in = fn.input_size_for(max(tile, fn.stride))
    return size_in, fn.output_size(size_in)


def probability_bands(fn: Fn, image: np.ndarray, prepare: Prepare, tiling: InferConfig, progress: bool = False
                      ) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended probabilities of an (H, W, C) image, top to bottom: `(top, (K, rows, W) float32)` pieces.

    `tiling` gives the tile size, overlap (`overlap_for` the network's margin), blend window and batch size.
    `fn` maps (N, C, h, w) normalized tiles to (N, K, h - 2*margin, w - 2*margin) probabilities; it gets at
    most `batch_size` tiles and `PASS_PIXELS` input pixels at a time. Each piece is a new tensor (the caller
    may keep it); consecutive pieces cover rows 0..H-1 exactly once.
    """
    height, width = image.shape[:2]
    overlap, blend = tiling.overlap_for(fn.margin), tiling.blend
    size_in, size_out = tile_geometry(fn, tiling.tile)
    if overlap >= size_out:
        raise ValueError(f"overlap {overlap} must be smaller than the output tile {size_out}")
    ys = tile_starts(height, size_out, overlap, fn.stride)
    xs = tile_starts(width, size_out, overlap, fn.stride)
    window = torch.from_numpy(blend_window(size_out, blend if overlap else "constant"))  # (t, t)
    acc: torch.Tensor | None = None  # (K, t, W + t): probabilities of rows [top, top + t), weighted
    weight = torch.zeros(size_out, width + size_out)
    chunk = max(1, CHUNK_PIXELS // width)
    batch_size = max(1, min(tiling.batch_size, PASS_PIXELS // size_in**2))
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
        release_pages(image)  # the next row of tiles reads only `2 * margin` of these rows again
        # rows above the next tile row are final: hand them on, then move the rest up
        done = min((ys[row + 1] if row + 1 < len(ys) else height) - y, height - y)
        for a in range(0, done, chunk):
            b = min(done, a + chunk)
            yield y + a, acc[:, a:b, :width] / weight[a:b, :width]
        rest = size_out - done
        acc[:, :rest] = acc[:, done:].clone()
        acc[:, rest:] = 0
        weight[:rest] = weight[done:].clone()
        weight[rest:] = 0
    bar.close()


def index_bands(fn: Fn, image: np.ndarray, prepare: Prepare, tiling: InferConfig,
                probabilities: np.ndarray | None = None, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Class indices of an (H, W, C) image, top to bottom: `(top, (rows, W) uint8)` pieces (see
    `probability_bands`; `tiling.threshold` as in `classes_of`). When `probabilities` is given (a (K, H, W)
    array, e.g. a memory-mapped .npy), the blended probabilities are written into it as rows finish.
    """
    for top, probs in probability_bands(fn, image, prepare, tiling, progress):
        if probabilities is not None:
            probabilities[:, top : top + probs.shape[1]] = probs.numpy().astype(probabilities.dtype)
            release_pages(probabilities)  # written pages stay in the file cache until saved
        yield top, classes_of(probs, tiling.threshold).to(torch.uint8).numpy()


def predict_tiled(fn: Fn, image: np.ndarray, prepare: Prepare, tiling: InferConfig,
                  probabilities: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Segment an (H, W, C) image tile by tile; returns (H, W) uint8 class indices (see `index_bands`)."""
    return assemble(index_bands(fn, image, prepare, tiling, probabilities, progress), image.shape[:2])


def assemble(bands: Iterable[tuple[int, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """The whole (H, W) uint8 class map from `(top, rows)` pieces, for callers that need all of it at once."""
    index = np.empty(shape, np.uint8)
    for top, rows in bands:
        index[top : top + len(rows)] = rows
    return index
