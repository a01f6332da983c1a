"""Object-level scores of instance label images: how many objects were found, split, merged or missed.

A semantic score (IoU of the foreground) cannot tell two touching nuclei predicted as one blob from two
nuclei predicted apart; a microscopist counting cells needs the second. These scores compare a predicted label
image with the true one object by object. Inputs are `(H, W)` integer label images, 0 = background, every
other value one object (the ids need not be contiguous or agree between the two images).

- Matching: the IoU of every (true, predicted) pair from one contingency table; objects are matched one to one
  (scipy's linear assignment on IoU, pairs not above the threshold not allowed). Above IoU 0.5 a match is
  unique anyway, so this is the matching of the papers below.
- Precision, recall, F1 at IoU 0.5: TP / (TP + FP), TP / (TP + FN), their harmonic mean, from counts summed
  over all images.
- The 2018 Data Science Bowl score: per image the mean over IoU thresholds 0.5, 0.55, ..., 0.95 of
  TP / (TP + FP + FN), then averaged over images (an image with no object in either counts 1).
- Aggregated Jaccard index (Kumar et al., IEEE TMI 2017), per image then averaged: every true object adds its
  intersection and union with the predicted object of highest IoU (as in the paper, one predicted object may
  be picked by several true ones: a merge is paid for twice); a true object overlapping none, and every
  predicted object never picked, add their area to the union.
- Panoptic quality (Kirillov et al., CVPR 2019) at IoU 0.5: the sum of matched IoUs / (TP + FP / 2 + FN / 2),
  over all images.

`InstanceScores` accumulates images, as `ConfusionMatrix` does for pixels, and `scores()` derives the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5, 0.55, ..., 0.95


def _ids_and_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, (N,) position of each pixel's id among them) of a label image, as
    `np.unique(..., return_inverse=True)` gives; counting is several times faster than sorting when the ids are
    compact (a label image's are), so huge arbitrary ids alone are sorted."""
    flat = labels.ravel()
    if flat.size and np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and int(flat.max()) <= 8 * flat.size:
        present = np.bincount(flat.astype(np.intp, copy=False)) > 0
        return np.flatnonzero(present), (np.cumsum(present) - 1)[flat]
    return np.unique(flat, return_inverse=True)


def iou_table(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(IoU (T, P), intersections (T, P), true areas (T,), predicted areas (P,)) of the objects of two `(H, W)`
    label images, in the order of their sorted ids."""
    t_ids, t_index = _ids_and_index(truth)
    p_ids, p_index = _ids_and_index(pred)
    table = np.bincount(t_index * len(p_ids) + p_index,
                        minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    t_keep, p_keep = t_ids != 0, p_ids != 0
    t_area, p_area = table.sum(1)[t_keep], table.sum(0)[p_keep]
    inter = table[np.ix_(t_keep, p_keep)].astype(np.float64)
    union = t_area[:, None] + p_area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0), inter, t_area, p_area


def match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true rows, predicted columns) of the one-to-one matching with the largest total IoU among pairs whose
    IoU is above `threshold` (a hit, as the Data Science Bowl counts it)."""
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    allowed = iou > threshold
    rows, cols = linear_sum_assignment(np.where(allowed, iou, 0.0), maximize=True)
    keep = allowed[rows, cols]
    return rows[keep], cols[keep]


def _aji(iou: np.ndarray, inter: np.ndarray, t_area: np.ndarray, p_area: np.ndarray) -> float:
    """The aggregated Jaccard index of one image (1 when neither has an object)."""
    if iou.shape[0] == 0 or iou.shape[1] == 0:
        return 1.0 if iou.size == 0 and iou.shape[0] == iou.shape[1] == 0 else 0.0
    best = np.argmax(iou, axis=1)  # each true object's predicted partner, by IoU (one may serve several)
    paired = iou[np.arange(len(best)), best] > 0
    rows, cols = np.nonzero(paired)[0], best[paired]
    num = inter[rows, cols].sum()
    den = (t_area[rows] + p_area[cols] - inter[rows, cols]).sum() + t_area[~paired].sum()
    den += p_area[np.setdiff1d(np.arange(len(p_area)), cols)].sum()
    return float(num / den) if den else 1.0


@dataclass
class InstanceScores:
    """Object scores accumulated over images; `update(truth, pred)` per image, then `scores()`."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched_iou: float = 0.0
    dsb: list[float] = field(default_factory=list)
    aji: list[float] = field(default_factory=list)
    counts: list[tuple[int, int]] = field(default_factory=list)  # (true, predicted) objects per image

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        """Add one image: `(H, W)` true and predicted label images (0 = background)."""
        iou, inter, t_area, p_area = iou_table(np.asarray(truth), np.asarray(pred))
        n_true, n_pred = iou.shape
        rows, cols = match(iou, 0.5)
        self.tp += len(rows)
        self.fp += n_pred - len(rows)
        self.fn += n_true - len(rows)
        self.matched_iou += float(iou[rows, cols].sum())
        per_threshold = []
        for threshold in DSB_THRESHOLDS:
            hits = len(match(iou, threshold)[0])
            total = n_true + n_pred - hits
            per_threshold.append(hits / total if total else 1.0)
        self.dsb.append(float(np.mean(per_threshold)))
        self.aji.append(_aji(iou, inter, t_area, p_area))
        self.counts.append((n_true, n_pred))

    def scores(self) -> dict[str, Any]:
        """Precision, recall, F1 and PQ at IoU 0.5 (over all objects), DSB score and AJI (mean over images),
        and the object counts per image."""
        tp, fp, fn = self.tp, self.fp, self.fn
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        pq = self.matched_iou / (tp + fp / 2 + fn / 2) if tp + fp + fn else 1.0
        return {"precision": precision, "recall": recall, "f1": f1, "panoptic_quality": pq,
                "dsb_score": float(np.mean(self.dsb)) if self.dsb else None,
                "aji": float(np.mean(self.aji)) if self.aji else None, "tp": tp, "fp": fp, "fn": fn,
                "true_counts": [c[0] for c in self.counts], "predicted_counts": [c[1] for c in self.counts]}
