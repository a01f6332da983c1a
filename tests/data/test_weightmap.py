"""The paper's weight map (eq. 2) against distances and class weights worked out by hand."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from unetkit.config import IGNORE_INDEX
from unetkit.data import weightmap
from unetkit.data.weightmap import (
    WeightMapCache,
    border_weight_map,
    class_balance_weights,
    objects_from_mask,
    weight_map_picture,
)

BG, OBJ = 0, 1


def strip(*objects: tuple[int, int], width: int = 21) -> np.ndarray:
    """A (1, width) class mask: OBJ on the inclusive column ranges given, BG elsewhere."""
    mask = np.full((1, width), BG, dtype=np.uint8)
    for start, stop in objects:
        mask[0, start:stop + 1] = OBJ
    return mask


def term(d1: float, d2: float) -> float:
    return 10.0 * math.exp(-((d1 + d2) ** 2) / (2 * 5.0**2))


def test_two_objects_gap_weight_by_hand() -> None:
    mask = strip((0, 4), (12, 20))  # A: columns 0-4, B: 12-20, background gap 5-11
    w = border_weight_map(mask, object_classes=[OBJ], num_classes=2)
    # 21 pixels, 7 background, 14 object: w_c = 21 / (2 * 7) = 1.5 and 21 / (2 * 14) = 0.75.
    # Column 8 is 4 from A (column 4) and 4 from B (column 12); column 5 is 1 from A and 7 from B.
    assert w[0, 8] == pytest.approx(1.5 + term(4, 4), abs=1e-5)
    assert w[0, 5] == pytest.approx(1.5 + term(1, 7), abs=1e-5)
    # Object pixels get w_c only.
    assert np.allclose(w[0, [0, 4, 12, 20]], 0.75, atol=1e-6)
    assert w.dtype == np.float32 and w.shape == (1, 21)


def test_only_the_two_nearest_objects_count() -> None:
    mask = strip((0, 2), (6, 8), (16, 20))  # A 0-2, B 6-8, C 16-20
    w = border_weight_map(mask, object_classes=[OBJ], num_classes=2, class_weights=np.ones(2, np.float32))
    assert w[0, 4] == pytest.approx(1.0 + term(2, 2), abs=1e-5)  # A and B at 2; C at 12 is ignored
    assert w[0, 12] == pytest.approx(1.0 + term(4, 4), abs=1e-5)  # B and C at 4


def test_euclidean_distance_in_two_dimensions() -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[0, 0] = mask[3, 4] = OBJ  # two one-pixel objects
    w = border_weight_map(mask, object_classes=[OBJ], num_classes=2, class_weights=np.ones(2, np.float32))
    assert w[0, 4] == pytest.approx(1.0 + term(3, 4), abs=1e-5)
    assert w[1, 2] == pytest.approx(1.0 + term(math.sqrt(5), math.sqrt(8)), abs=1e-5)


def test_single_object_has_no_border_term() -> None:
    mask = strip((0, 4))
    w = border_weight_map(mask, object_classes=[OBJ], num_classes=2)
    # 16 background, 5 object: w_c = 21 / 32 and 21 / 10.
    assert np.allclose(w[0, 5:], 21 / 32, atol=1e-6)
    assert np.allclose(w[0, :5], 21 / 10, atol=1e-6)


def test_ignored_pixels_weigh_nothing_and_leave_the_count() -> None:
    mask = strip((0, 4), (12, 20))
    mask[0, 8] = IGNORE_INDEX
    w = border_weight_map(mask, object_classes=[OBJ], num_classes=2)
    # 20 counted pixels, 6 background: w_c = 20 / 12 and 20 / 28.
    assert w[0, 8] == 0.0
    assert w[0, 7] == pytest.approx(20 / 12 + term(3, 5), abs=1e-5)
    assert w[0, 0] == pytest.approx(20 / 28, abs=1e-6)


def test_class_balance_weights() -> None:
    mask = np.array([[0, 0, 0, 2], [IGNORE_INDEX, 2, 2, 2]], dtype=np.uint8)
    # 7 counted pixels, classes 0 (3) and 2 (4) present, K = 2; absent class 1 gets 1.
    assert np.allclose(class_balance_weights(mask, 3), [7 / 6, 1.0, 7 / 8])
    assert np.allclose(class_balance_weights(np.full((2, 2), IGNORE_INDEX, np.uint8), 2), [1.0, 1.0])
    with pytest.raises(ValueError, match="class 2"):
        class_balance_weights(mask, 2)


def test_objects_are_four_connected_and_skip_ignore() -> None:
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, IGNORE_INDEX]], dtype=np.uint8)
    labels = objects_from_mask(mask, [1])
    assert labels.dtype == np.int32
    assert labels.max() == 2  # the diagonal contact does not join (0, 0) to (1, 1)
    assert labels[0, 0] != labels[1, 1] and labels[1, 1] == labels[1, 2]
    assert objects_from_mask(mask, [1, IGNORE_INDEX])[2, 2] == 0


def brute_force(instances: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The border term (H, W) from every pixel's distance to every pixel of every object, no shortcut."""
    grid = np.stack(np.indices(instances.shape), axis=-1).reshape(-1, 2).astype(np.float64)  # (H*W, 2)
    dists = []
    for label in np.unique(instances[instances > 0]):
        points = np.argwhere(instances == label).astype(np.float64)  # (n, 2)
        diff = grid[:, None, :] - points[None, :, :]
        dists.append(np.sqrt((diff**2).sum(-1)).min(1))
    nearest = np.sort(np.stack(dists), axis=0)[:2]  # (2, H*W)
    border = w0 * np.exp(-((nearest[0] + nearest[1]) ** 2) / (2 * sigma**2))
    return np.where(instances.ravel() == 0, border, 0.0).reshape(instances.shape)


@pytest.mark.parametrize("cutoff", [None, 8.0])
def test_cutoff_matches_brute_force(cutoff: float | None) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.indices((64, 64))
    instances = np.zeros((64, 64), dtype=np.int32)
    for label in range(1, 11):
        cy, cx, r = rng.integers(0, 64), rng.integers(0, 64), rng.integers(2, 7)
        instances[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
    mask = (instances > 0).astype(np.uint8)
    w0, sigma = 10.0, 5.0
    w = border_weight_map(mask, instances, object_classes=[1], num_classes=2, w0=w0, sigma=sigma,
                          class_weights=np.zeros(2, np.float32), cutoff=cutoff)
    radius = 6 * sigma if cutoff is None else cutoff
    bound = w0 * math.exp(-(radius**2) / (2 * sigma**2)) + 1e-5  # + float32 rounding
    exact = brute_force(instances, w0, sigma)
    assert np.abs(w - exact).max() <= bound
    if cutoff is not None:  # the short cutoff really drops something, so the comparison has teeth
        assert np.abs(w - exact).max() > 1e-3


def test_cache_computes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = weightmap.border_weight_map
    monkeypatch.setattr(weightmap, "border_weight_map", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = tmp_path / "m.png"
    path.write_bytes(b"stand-in mask file")
    mask = strip((0, 4), (12, 20))
    cache = WeightMapCache(object_classes=[OBJ], num_classes=2, cache_dir=tmp_path / "cache")
    first = cache.get(path, mask)
    second = cache.get(path, mask)
    assert len(calls) == 1 and np.array_equal(first, second)
    assert first[0, 8] == pytest.approx(1.5 + term(4, 4), abs=1e-5)
    # A fresh cache over the same folder reads the .npy instead of computing.
    again = WeightMapCache(object_classes=[OBJ], num_classes=2, cache_dir=tmp_path / "cache").get(path, mask)
    assert len(calls) == 1 and np.array_equal(again, first)
    # A touched file or other parameters mean a new map.
    os.utime(path, ns=(0, 12345))
    cache.get(path, mask)
    assert len(calls) == 2
    flat = WeightMapCache(object_classes=[OBJ], num_classes=2, class_balance=False).get(path, mask)
    assert len(calls) == 3 and flat[0, 0] == 1.0 and flat[0, 8] == pytest.approx(1.0 + term(4, 4), abs=1e-5)


def test_picture_scales_zero_to_max() -> None:
    picture = weight_map_picture(np.array([[0.0, 4.0], [2.0, 4.0]], dtype=np.float32))
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [68, 1, 84]  # viridis at 0
    assert picture[0, 1].tolist() == [253, 231, 36]  # viridis at 1 (the maximum)
    assert weight_map_picture(np.zeros((1, 2), np.float32))[0, 1].tolist() == [68, 1, 84]
