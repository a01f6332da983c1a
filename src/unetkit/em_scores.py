"""The ISBI 2012 EM segmentation scores: pixel error, foreground-restricted Rand and information scores.

Definitions follow Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation algorithms for
connectomics", Front. Neuroanat. 2015, and the challenge's Fiji evaluation code (`trainableSegmentation.metrics`).
Why not just pixel error: a one-pixel gap in a membrane barely changes it but merges two neurons, which is the
mistake that matters in connectomics. The Rand and information scores count such merges and splits.

Conventions (each one matters for the numbers):

- Inputs are `(H, W)` boolean boundary maps, True = membrane. The ISBI 2012 label files store the opposite
  (membrane 0, cell 255), so pass `labels == 0` for them.
- Segments are the 4-connected components of the cell (non-membrane) pixels, as in the challenge code; two
  cells touching only at a corner are two segments. Membrane pixels get label 0.
- Foreground restriction: only pixels inside a ground-truth segment (gt label > 0) are scored; what is
  predicted on ground-truth membrane does not count.
- A predicted membrane pixel inside the ground-truth foreground is its own one-pixel segment (a singleton), as
  in the challenge code. So a thick predicted membrane costs a little split score but never causes a merge.
  (scikit-image's `adapted_rand_error` instead pools all label-0 pixels into one segment, which counts them
  as merged with each other, and counts unordered pairs n(n-1) rather than n^2; its numbers differ.)
- Segments are scored as predicted: they are not grown into the membrane pixels first. The challenge's final
  leaderboard thinned the membranes to one pixel and took the best of several thresholds; neither is done
  here, so values are comparable between our runs, not with that leaderboard.
- With S the predicted and T the ground-truth segmentation, p_ij the fraction of scored pixels in predicted
  segment i and true segment j, s_i and t_j its row and column sums:
  V_rand_split = sum p_ij^2 / sum t_j^2 (chance that two pixels of one true segment share a predicted one),
  V_rand_merge = sum p_ij^2 / sum s_i^2, V_info_split = I(S;T) / H(S), V_info_merge = I(S;T) / H(T);
  each V is the harmonic mean of its split and merge scores; the errors are 1 - V. Entropies use natural
  logs (the ratios do not depend on the base). A ratio 0/0 (one segment only, so nothing to split or merge)
  counts as a perfect 1.
- Warping error is not implemented: it needs topology-preserving warping of the prediction onto the truth.
- Several slices: each score is computed per slice and the slice scores are averaged, as the challenge did.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

from unetkit.distributed import all_sum
from unetkit.errors import UnetkitError


@dataclass(frozen=True)
class EMScores:
    """All scores of one slice, or their means over slices; V scores in [0, 1], higher is better."""

    pixel_error: float
    rand_error: float  # 1 - v_rand, the "adapted Rand error" the challenge ranked on
    v_rand: float
    v_rand_split: float
    v_rand_merge: float
    v_info: float
    v_info_split: float
    v_info_merge: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def segments_from_boundaries(boundary: np.ndarray) -> np.ndarray:
    """`(H, W)` bool membrane map -> `(H, W)` int32 labels: 4-connected cells numbered 1..K, membrane 0."""
    cells = (~_boundary_map(boundary, "boundary")).astype(np.uint8)
    _, labels = cv2.connectedComponents(cells, connectivity=4, ltype=cv2.CV_32S)
    return labels


class _Counts(NamedTuple):
    """Pixel counts of the foreground-restricted contingency table; predicted membrane pixels are left out."""

    joint: np.ndarray  # pixels per (true segment, predicted segment) pair
    true_sizes: np.ndarray  # pixels per true segment, predicted membrane included
    pred_sizes: np.ndarray  # pixels per predicted segment, inside the true foreground
    singletons: int  # predicted membrane pixels inside the true foreground, one segment each
    total: int  # pixels scored: the true foreground


def _counts(gt_labels: np.ndarray, pred_labels: np.ndarray) -> _Counts:
    gt, pred = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt.shape != pred.shape:
        raise ValueError(f"gt_labels shape {gt.shape} differs from pred_labels shape {pred.shape}")
    for name, labels in (("gt_labels", gt), ("pred_labels", pred)):
        if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
            raise ValueError(f"{name} must hold non-negative integer labels, got dtype {labels.dtype}")
    foreground = gt > 0
    g = gt[foreground].astype(np.int64)
    p = pred[foreground].astype(np.int64)
    if g.size == 0:
        raise UnetkitError(
            "the ground truth has no cell pixels (all membrane), so the foreground-restricted scores are "
            "undefined; check that True marks membrane in the ground-truth boundary map"
        )
    assigned = p > 0
    g_in, p_in = g[assigned], p[assigned]
    # One integer key per (true, predicted) pair, so one counting pass fills the sparse table.
    joint = _occurrences(g_in * (int(p_in.max(initial=0)) + 1) + p_in)
    return _Counts(joint, _occurrences(g), _occurrences(p_in), int(g.size - g_in.size), int(g.size))


def _occurrences(values: np.ndarray) -> np.ndarray:
    """How often each distinct value occurs (order irrelevant), for `(N,)` non-negative int64 values."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    # bincount is several times faster than sorting when the labels are compact (connected components are);
    # huge arbitrary label values would make its array too large, so those are sorted instead.
    if int(values.max()) <= 8 * values.size + 65536:
        counts = np.bincount(values)
        return counts[counts > 0]
    return np.unique(values, return_counts=True)[1]


def _harmonic(split: float, merge: float) -> float:
    return 0.0 if split + merge == 0 else 2.0 * split * merge / (split + merge)


def rand_scores(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[float, float, float]:
    """`(v_rand, v_rand_split, v_rand_merge)` of two `(H, W)` label images (0 = membrane), foreground-restricted.

    Counts instead of fractions: the 1/n^2 normalisation cancels in every ratio.
    """
    return _rand(_counts(gt_labels, pred_labels))


def _rand(c: _Counts) -> tuple[float, float, float]:
    # A singleton adds 1^2 to both the joint and the predicted sums.
    sum_joint = float(np.sum(c.joint.astype(np.float64) ** 2)) + c.singletons
    sum_true = float(np.sum(c.true_sizes.astype(np.float64) ** 2))
    sum_pred = float(np.sum(c.pred_sizes.astype(np.float64) ** 2)) + c.singletons
    split, merge = sum_joint / sum_true, sum_joint / sum_pred
    return 2.0 * sum_joint / (sum_true + sum_pred), split, merge


def _entropy(sizes: np.ndarray, total: int) -> float:
    """Entropy in nats of segments with these pixel counts; singletons need no entry (1 * ln 1 = 0)."""
    sizes = sizes.astype(np.float64)
    return math.log(total) - float(np.sum(sizes * np.log(sizes))) / total


def info_scores(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[float, float, float]:
    """`(v_info, v_info_split, v_info_merge)` of two `(H, W)` label images (0 = membrane), foreground-restricted."""
    return _info(_counts(gt_labels, pred_labels))


def _info(c: _Counts) -> tuple[float, float, float]:
    h_pred = _entropy(c.pred_sizes, c.total)  # H(S)
    h_true = _entropy(c.true_sizes, c.total)  # H(T)
    mutual = h_pred + h_true - _entropy(c.joint, c.total)  # I(S;T) = H(S) + H(T) - H(S,T)
    # Decide "only one segment" from the counts: the float entropy of one segment can come out as 1e-16.
    one_pred = c.pred_sizes.size + c.singletons == 1
    split = 1.0 if one_pred else min(max(mutual / h_pred, 0.0), 1.0)
    merge = 1.0 if c.true_sizes.size == 1 else min(max(mutual / h_true, 0.0), 1.0)
    return _harmonic(split, merge), split, merge


def _boundary_map(boundary: np.ndarray, name: str) -> np.ndarray:
    """Check a 2-D boundary map of bools (or 0/1) and return it as bool; probabilities must be thresholded."""
    arr = np.asarray(boundary)
    if arr.ndim != 2:
        raise UnetkitError(f"{name} must be a 2-D (H, W) boundary map, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.size and bool(((arr != 0) & (arr != 1)).any()):
            raise UnetkitError(
                f"{name} holds values other than 0/1 (dtype {arr.dtype}); threshold the membrane "
                "probabilities first, e.g. prob > 0.5"
            )
        arr = arr != 0
    return arr


def em_scores(gt_boundary: np.ndarray, pred_boundary: np.ndarray) -> EMScores:
    """All scores of one slice from two `(H, W)` bool boundary maps (True = membrane)."""
    gt = _boundary_map(gt_boundary, "gt_boundary")
    pred = _boundary_map(pred_boundary, "pred_boundary")
    if gt.shape != pred.shape:
        raise UnetkitError(f"gt_boundary shape {gt.shape} differs from pred_boundary shape {pred.shape}")
    counts = _counts(segments_from_boundaries(gt), segments_from_boundaries(pred))
    v_rand, rand_split, rand_merge = _rand(counts)
    v_info, info_split, info_merge = _info(counts)
    return EMScores(
        pixel_error=float(np.mean(gt != pred)),
        rand_error=1.0 - v_rand,
        v_rand=v_rand,
        v_rand_split=rand_split,
        v_rand_merge=rand_merge,
        v_info=v_info,
        v_info_split=info_split,
        v_info_merge=info_merge,
    )


class EMScoreAccumulator:
    """Mean of the per-slice scores over every slice passed to `update` (the challenge averaged slices)."""

    def __init__(self) -> None:
        self._sums = dict.fromkeys((f.name for f in dataclasses.fields(EMScores)), 0.0)
        self._slices = 0

    def update(self, gt_boundary: np.ndarray, pred_boundary: np.ndarray) -> None:
        """Score one `(H, W)` slice, or each slice of an `(N, H, W)` stack; bool maps, True = membrane."""
        gt, pred = np.asarray(gt_boundary), np.asarray(pred_boundary)
        if gt.ndim == 2:
            gt, pred = gt[None], pred[None]
        if gt.shape != pred.shape:
            raise UnetkitError(f"gt_boundary shape {gt.shape} differs from pred_boundary shape {pred.shape}")
        for gt_slice, pred_slice in zip(gt, pred, strict=True):
            for key, value in em_scores(gt_slice, pred_slice).as_dict().items():
                self._sums[key] += value
            self._slices += 1

    def all_reduce(self) -> EMScoreAccumulator:
        """Add up the sums and slice counts of every process, so each rank holds the whole set's mean."""
        totals = torch.tensor([*self._sums.values(), float(self._slices)], dtype=torch.float64)
        totals = all_sum(totals)
        self._sums = dict(zip(self._sums, totals[:-1].tolist(), strict=True))
        self._slices = int(totals[-1])
        return self

    def result(self) -> EMScores:
        """Scores averaged over the slices seen so far."""
        if self._slices == 0:
            raise UnetkitError("no slices were scored; pass at least one (ground truth, prediction) pair")
        return EMScores(**{key: total / self._slices for key, total in self._sums.items()})
