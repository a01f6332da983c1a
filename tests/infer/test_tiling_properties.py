"""Properties of the tile grid for random image sizes, tiles, overlaps, margins and pooling strides.

Without overlap (the valid network's exact tiling) every output pixel belongs to exactly one tile; with
overlap the blend weights of the tiles over each pixel sum to one. End to end, a stand-in network whose
output is its input's centre (so every tile predicts each pixel as the pixel itself) must give back the image
through `predict_tiled`: a pixel covered by no tile, counted twice, or read from the wrong place would differ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unetkit.config import InferConfig
from unetkit.infer.tiled import predict_tiled
from unetkit.infer.tiling import blend_window, tile_starts

PROPERTY = settings(max_examples=50, deadline=None)


@st.composite
def grids(draw: st.DrawFn, blended: bool) -> tuple[int, int, int, int]:
    """(size, tile, overlap, stride): overlap 0 with a pooling stride up to the tile, or overlap in [1, tile)."""
    tile = draw(st.integers(2 if blended else 1, 64))
    size = draw(st.integers(1, 300))
    if blended:
        return size, tile, draw(st.integers(1, tile - 1)), 1
    return size, tile, 0, draw(st.sampled_from([s for s in (1, 2, 4, 8, 16) if s <= tile]))


@PROPERTY
@given(grids(blended=False))
def test_without_overlap_each_pixel_belongs_to_exactly_one_tile(grid: tuple[int, int, int, int]) -> None:
    size, tile, _, stride = grid
    starts = tile_starts(size, tile, 0, stride)
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < size
    assert all(s % stride == 0 for s in starts)  # on the pooling grid of one pass over the whole image
    owners = np.zeros(size, int)
    for start, end in zip(starts, [*starts[1:], size], strict=True):  # a tile owns the pixels up to the next
        assert end - start <= tile  # ... and they lie inside its output
        owners[start:end] += 1
    assert (owners == 1).all()


@PROPERTY
@given(st.integers(1, 100), st.integers(1, 15))
def test_without_overlap_a_tile_narrower_than_the_stride_is_refused(size: int, tile: int) -> None:
    with pytest.raises(ValueError, match="at least the stride"):  # whole-stride steps would leave gaps
        tile_starts(size, tile, 0, 16)


@PROPERTY
@given(grids(blended=True))
def test_with_overlap_neighbours_share_enough_and_the_last_tile_ends_at_the_border(
        grid: tuple[int, int, int, int]) -> None:
    size, tile, overlap, _ = grid
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == size  # no tile reaches past the image
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:], strict=False))
    assert len(starts) == math.ceil((size - tile) / (tile - overlap)) + 1  # as few tiles as that allows


@PROPERTY
@given(grids(blended=True), grids(blended=True), st.sampled_from(["gaussian", "linear", "constant"]))
def test_blend_weights_over_each_pixel_sum_to_one(rows: tuple[int, int, int, int], cols: tuple[int, int, int, int],
                                                  mode: str) -> None:
    (height, tile, overlap, _), (width, _, _, _) = rows, cols
    window = blend_window(tile, mode)  # (t, t)
    assert window.min() >= 1e-3  # never zero: every covered pixel has weight
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total = np.zeros((height + tile, width + tile))
    for y in ys:
        for x in xs:
            total[y : y + tile, x : x + tile] += window
    total = total[:height, :width]
    assert total.min() >= 1e-3
    shares = np.zeros_like(total)  # each tile's normalized weight, summed over the tiles
    for y in ys:
        for x in xs:
            part = window[: height - y, : width - x] if y < height and x < width else window[:0, :0]
            shares[y : y + part.shape[0], x : x + part.shape[1]] += part / total[y : y + part.shape[0],
                                                                                  x : x + part.shape[1]]
    np.testing.assert_allclose(shares, 1.0, rtol=1e-9)


class CentreNet:
    """A stand-in network: `(N, 1, h, w)` -> `(N, 2, h - 2m, w - 2m)` probabilities (1 - v, v) with v the
    input's centre, so each output pixel is the image pixel it stands for. Its outputs are `smallest + k *
    stride` pixels, like an unpadded U-Net's (depth 3: 4, 12, 20, ... with stride 8)."""

    def __init__(self, margin: int, stride: int, smallest: int) -> None:
        self.margin, self.stride, self.smallest = margin, stride, smallest

    def is_valid_input(self, size: int) -> bool:
        output = size - 2 * self.margin
        return output >= self.smallest and (output - self.smallest) % self.stride == 0

    def output_size(self, size: int) -> int:
        assert self.is_valid_input(size)
        return size - 2 * self.margin

    def input_size_for(self, output: int) -> int:
        steps = math.ceil(max(output - self.smallest, 0) / self.stride)
        return 2 * self.margin + self.smallest + steps * self.stride

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin
        v = x[:, :1, m : x.shape[2] - m, m : x.shape[3] - m]
        return torch.cat([1 - v, v], dim=1)


@PROPERTY
@given(height=st.integers(1, 70), width=st.integers(1, 70), tile=st.integers(1, 40), overlap_share=st.floats(0, 0.9),
       margin=st.integers(0, 6), stride=st.sampled_from([1, 2, 4, 8]), smallest_share=st.floats(0, 1),
       blend=st.sampled_from(["gaussian", "linear"]), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_tiled_prediction_puts_every_pixel_back_where_it_came_from(
        height: int, width: int, tile: int, overlap_share: float, margin: int, stride: int, smallest_share: float,
        blend: str, batch: int, seed: int) -> None:
    net = CentreNet(margin, stride, smallest=max(1, round(smallest_share * stride)))
    overlap = int(overlap_share * tile)  # 0 = the exact overlap-tile path, else blended tiles
    image = np.random.default_rng(seed).random((height, width, 1), dtype=np.float32)  # (H, W, 1) in [0, 1)
    probabilities = np.zeros((2, height, width), np.float32)

    def prepare(region: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1)))  # (1, h, w)

    index = predict_tiled(net, image, prepare, InferConfig(tile=tile, overlap=overlap, blend=blend, batch_size=batch),
                          probabilities=probabilities)
    np.testing.assert_allclose(probabilities[1], image[..., 0], atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(index, (probabilities[1] > probabilities[0]).astype(np.uint8))
