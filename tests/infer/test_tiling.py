"""Tile-grid maths and the overlap-tile predictor: exact for the valid network, blended for padded ones."""

import numpy as np
import pytest
import torch

from unetkit.config import InferConfig
from unetkit.infer.predictor import Predictor, predict_whole
from unetkit.infer.tiled import predict_tiled
from unetkit.infer.tiling import blend_window, read_region, reflect_indices, tile_starts
from unetkit.infer.tta import TTA
from unetkit.models.unet import UNet


def test_tile_starts_worked_examples() -> None:
    # the paper's network: 388-pixel outputs on its 16-pixel pooling grid -> steps of 384
    assert tile_starts(333, 388, 0, 16) == [0]
    assert tile_starts(1000, 388, 0, 16) == [0, 384, 768]
    assert tile_starts(768, 384, 0, 16) == [0, 384]  # exact fit: no extra tile
    # blended windows: at least 64 shared pixels, the last tile ends exactly at the border
    assert tile_starts(1000, 256, 64) == [0, 186, 372, 558, 744]
    assert tile_starts(256, 256, 64) == [0]
    with pytest.raises(ValueError):
        tile_starts(100, 32, 32)


@pytest.mark.parametrize("size,tile,overlap,stride", [(333, 388, 0, 16), (517, 100, 0, 16), (517, 96, 20, 1),
                                                      (1000, 256, 64, 1), (50, 7, 3, 1)])
def test_tiles_cover_every_pixel(size: int, tile: int, overlap: int, stride: int) -> None:
    starts = tile_starts(size, tile, overlap, stride)
    covered = np.zeros(size + tile, int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered[:size].min() >= 1
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    if overlap:
        assert starts[-1] + tile == size or size <= tile


def test_reflect_indices_match_numpy_reflect() -> None:
    data = np.arange(5)
    expected = np.pad(data, (13, 17), mode="reflect")
    np.testing.assert_array_equal(data[reflect_indices(np.arange(-13, 5 + 17), 5)], expected)


def test_read_region_mirrors_outside_the_array() -> None:
    image = np.arange(6 * 7).reshape(6, 7)
    padded = np.pad(image, 10, mode="reflect")
    np.testing.assert_array_equal(read_region(image, -4, -10, 12, 20), padded[6:18, 0:20])


def test_blend_window_is_symmetric_and_peaks_in_the_centre() -> None:
    w = blend_window(9, "gaussian")
    assert w[4, 4] == 1.0 and w.min() > 0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    # tent 1 - |x - 1.5| / 2.5 = [0.4, 0.8, 0.8, 0.4]; outer product over its peak 0.64
    np.testing.assert_allclose(blend_window(4, "linear")[:2], [[0.25, 0.5, 0.5, 0.25], [0.5, 1, 1, 0.5]], rtol=1e-6)


def _prepare(region: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1), dtype=np.float32))


def test_overlap_tile_equals_one_pass_over_the_mirror_padded_image() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=3, depth=3, base_channels=4, padding="valid")
    predictor = Predictor(net, torch.device("cpu"))
    image = np.random.default_rng(0).random((333, 517, 1), dtype=np.float32)
    probs = np.zeros((3, 333, 517), np.float32)
    index = predict_tiled(predictor, image, _prepare, InferConfig(tile=100, overlap=0), probabilities=probs)
    whole = predict_whole(predictor, _prepare(image)[None])[0].numpy()  # one pass, mirror-padded
    np.testing.assert_allclose(probs, whole, atol=1e-5)
    np.testing.assert_array_equal(index, whole.argmax(0))


def test_blended_tiles_of_a_padded_network_sum_to_one_and_agree_with_one_pass() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4, padding="same")
    predictor = Predictor(net, torch.device("cpu"))
    image = np.random.default_rng(1).random((150, 97, 1), dtype=np.float32)
    probs = np.zeros((2, 150, 97), np.float32)
    index = predict_tiled(predictor, image, _prepare, InferConfig(tile=64, overlap=16, blend="gaussian"),
                          probabilities=probs)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    whole = predict_whole(predictor, _prepare(image)[None])[0].numpy()
    assert (index == whole.argmax(0)).mean() > 0.95  # tiles differ from one pass only near tile borders


def test_tta_is_exact_for_a_symmetric_function_and_averages_views() -> None:
    class Mean:  # a "network" that outputs the input mean everywhere: invariant to every view
        margin, stride = 0, 1

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 2, *x.shape[-2:])

    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(TTA(Mean(), "d4")(x), Mean()(x))

    class Left:  # probability 1 for class 1 on the left half: not invariant, so views disagree
        margin, stride = 0, 1

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            out[:, 1, :, : x.shape[-1] // 2] = 1
            out[:, 0] = 1 - out[:, 1]
            return out

    averaged = TTA(Left(), "flips")(x)
    # flips: identity and vertical flip keep "left", horizontal flip and rot180 map back to "right"
    torch.testing.assert_close(averaged[0, 1], torch.full((8, 8), 0.5))


def test_tta_keeps_the_valid_networks_cropped_shape() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4, padding="valid")
    fn = TTA(Predictor(net, torch.device("cpu")), "d4")
    out = predict_whole(fn, torch.rand(1, 1, 45, 30))
    assert out.shape == (1, 2, 45, 30)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 45, 30))
