"""ISBI 2012 scores on label images small enough to work out by hand.

Notation in the comments: counts instead of fractions (the 1/n^2 cancels). "joint" is sum n_ij^2 over
(true, predicted) pairs, "true" is sum over true segment sizes squared, "pred" the same for predicted segments.
split = joint / true, merge = joint / pred, V = 2 joint / (true + pred). Entropies in nats.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetkit.em_scores import (
    EMScoreAccumulator,
    EMScores,
    em_scores,
    info_scores,
    rand_scores,
    segments_from_boundaries,
)
from unetkit.errors import UnetkitError

L2 = math.log(2)


def test_identical_segmentations_score_perfectly() -> None:
    labels = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, 2], [3, 3, 0, 2]])
    assert rand_scores(labels, labels) == (1.0, 1.0, 1.0)
    assert info_scores(labels, labels) == (1.0, 1.0, 1.0)


def test_two_segments_merged_into_one() -> None:
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 5]])
    # joint 2^2 + 2^2 = 8, true 2^2 + 2^2 = 8, pred 4^2 = 16: split 1, merge 1/2, V = 16 / 24 = 2/3.
    assert rand_scores(gt, pred) == pytest.approx((2 / 3, 1.0, 1 / 2))
    # One predicted segment: H(S) = 0 so I = 0. Nothing split (0/0 -> 1), merge I / H(T) = 0, V = 0.
    assert info_scores(gt, pred) == pytest.approx((0.0, 1.0, 0.0))


def test_partial_merge() -> None:
    gt = np.array([[1, 1, 2, 2, 3, 3, 3, 3]])
    pred = np.array([[7, 7, 7, 7, 9, 9, 9, 9]])
    # joint 4 + 4 + 16 = 24, true 4 + 4 + 16 = 24, pred 16 + 16 = 32: split 1, merge 3/4, V = 48 / 56 = 6/7.
    assert rand_scores(gt, pred) == pytest.approx((6 / 7, 1.0, 3 / 4))
    # H(T) = -(1/4 ln 1/4 + 1/4 ln 1/4 + 1/2 ln 1/2) = 3/2 ln 2, H(S) = ln 2. T refines S so I = H(S) = ln 2:
    # split ln2 / ln2 = 1, merge ln2 / (3/2 ln2) = 2/3, V = 2 * (2/3) / (5/3) = 4/5.
    assert info_scores(gt, pred) == pytest.approx((4 / 5, 1.0, 2 / 3))


def test_split_mirrors_merge() -> None:
    gt = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[1, 1, 2, 2, 3, 3, 3, 3]])
    # joint 4 + 4 + 16 = 24, true 16 + 16 = 32, pred 24: split 3/4, merge 1, V = 6/7.
    assert rand_scores(gt, pred) == pytest.approx((6 / 7, 3 / 4, 1.0))
    # S refines T so I = H(T) = ln 2, H(S) = 3/2 ln 2: split 2/3, merge 1, V = 4/5.
    assert info_scores(gt, pred) == pytest.approx((4 / 5, 2 / 3, 1.0))


def test_predicted_membrane_pixels_are_singletons() -> None:
    gt = np.array([[1, 1, 1, 2, 2, 2]])
    pred = np.array([[5, 5, 0, 0, 7, 7]])
    # Each predicted 0 is its own segment: joint 2^2 + 2^2 + 1 + 1 = 10, true 9 + 9 = 18, pred 4 + 4 + 1 + 1 = 10.
    # split 5/9, merge exactly 1 (pooling the two 0s into one segment would give pred 12 and merge 5/6).
    assert rand_scores(gt, pred) == pytest.approx((2 * 10 / 28, 5 / 9, 1.0))
    # Predicted sizes 2, 2, 1, 1 of 6: H(S) = ln 6 - (2 ln 2 + 2 ln 2) / 6. S refines T, so I = H(T) = ln 2.
    h_s = math.log(6) - 4 * L2 / 6
    split = L2 / h_s
    assert info_scores(gt, pred) == pytest.approx((2 * split / (split + 1), split, 1.0))


def test_ground_truth_membrane_is_not_scored() -> None:
    gt = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[1, 1, 1, 2, 2]])  # label 1 covers the gt membrane pixel, but that pixel is ignored
    assert rand_scores(gt, pred) == (1.0, 1.0, 1.0)
    assert info_scores(gt, pred) == (1.0, 1.0, 1.0)


def test_label_values_need_not_be_consecutive() -> None:
    gt = np.array([[3, 3, 900, 900]])
    pred = np.array([[10**9, 10**9, 10**9, 10**9]])  # too large for bincount: goes through the sorted path
    assert rand_scores(gt, pred) == pytest.approx((2 / 3, 1.0, 1 / 2))


def test_singleton_shortcut_matches_explicit_relabelling() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(12, 12))
    pred = rng.integers(0, 5, size=(12, 12))
    # Give every predicted 0 its own fresh label and score with no 0s in the prediction at all.
    explicit = pred.copy()
    zeros = explicit == 0
    explicit[zeros] = 100 + np.arange(int(zeros.sum()))
    assert rand_scores(gt, pred) == pytest.approx(rand_scores(gt, explicit))
    assert info_scores(gt, pred) == pytest.approx(info_scores(gt, explicit))


def test_segments_use_4_connectivity() -> None:
    boundary = np.array([[False, True], [True, False]])  # two cells touching only at a corner
    labels = segments_from_boundaries(boundary)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [[1, 0], [0, 2]])


def test_pixel_error_counts_disagreeing_pixels() -> None:
    gt = np.zeros((4, 4), dtype=bool)
    gt[:, 1] = True
    pred = gt.copy()
    pred[0, 1] = False  # a gap in the membrane
    pred[3, 3] = True
    pred[2, 0] = True
    assert em_scores(gt, pred).pixel_error == pytest.approx(3 / 16)


def _wall_and_open() -> tuple[np.ndarray, np.ndarray]:
    """A 3x5 slice whose membrane column splits it in two cells of 6 pixels, and a prediction with no membrane."""
    gt = np.zeros((3, 5), dtype=bool)
    gt[:, 2] = True
    return gt, np.zeros((3, 5), dtype=bool)


def test_em_scores_end_to_end() -> None:
    gt, pred = _wall_and_open()
    scores = em_scores(gt, pred)
    # 3 of 15 pixels differ. The 12 gt cell pixels all fall in the one predicted cell:
    # joint 36 + 36 = 72, true 72, pred 144: split 1, merge 1/2, V = 144 / 216 = 2/3. Info as in the merge case.
    expected = EMScores(
        pixel_error=1 / 5,
        rand_error=1 / 3,
        v_rand=2 / 3,
        v_rand_split=1.0,
        v_rand_merge=1 / 2,
        v_info=0.0,
        v_info_split=1.0,
        v_info_merge=0.0,
    )
    assert scores.as_dict() == pytest.approx(expected.as_dict())


def test_accumulator_averages_slices() -> None:
    gt, pred = _wall_and_open()
    acc = EMScoreAccumulator()
    acc.update(gt, gt)  # perfect slice: errors 0, every V 1
    acc.update(gt, pred)
    result = acc.result().as_dict()
    assert result["pixel_error"] == pytest.approx((0 + 1 / 5) / 2)
    assert result["v_rand"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["rand_error"] == pytest.approx((0 + 1 / 3) / 2)
    assert result["v_rand_merge"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["v_info"] == pytest.approx((1 + 0) / 2)
    stacked = EMScoreAccumulator()
    stacked.update(np.stack([gt, gt]), np.stack([gt, pred]))  # (N, H, W) stacks are split into slices
    assert stacked.result().as_dict() == pytest.approx(result)


def test_user_mistakes_raise_unetkit_error() -> None:
    gt, _ = _wall_and_open()
    with pytest.raises(UnetkitError, match="threshold"):
        em_scores(gt, np.full((3, 5), 0.7))  # probabilities, not a boundary map
    with pytest.raises(UnetkitError, match="no cell pixels"):
        em_scores(np.ones((3, 5), dtype=bool), gt)
    with pytest.raises(UnetkitError, match="no slices"):
        EMScoreAccumulator().result()
