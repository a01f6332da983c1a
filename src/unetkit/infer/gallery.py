"""Per-image scores and the pictures of the best and worst predicted images, kept while scoring streams.

A dataset score hides which images fail. Every scored image gets one number: the IoU of the foreground for a
binary model (class 1), the mIoU of its own confusion matrix otherwise (`unetkit.metrics.scores`, the function
behind every reported score, so an image's number is computed as the dataset's). An image with nothing to
score (no foreground in truth or prediction for a binary model) has no score and is not ranked.

Only the current best `k` and worst `k` images are held, as small thumbnails (longest side at most
`THUMB_SIDE` px, every n-th pixel, so masks keep their exact classes): memory stays bounded whatever the
number or size of the images. The per-image scores themselves (one float each) are all kept for the JSON.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetkit.distributed import gather_objects
from unetkit.metrics import scores

THUMB_SIDE = 192  # px: enough to see where a prediction fails, small enough to embed a dozen in one page


@dataclass(frozen=True, order=True)
class Pictured:
    """One ranked image's thumbnails: image (h, w, 3) uint8 for display, truth and prediction (h, w) classes.
    Ordered by name alone, so equal scores from two processes still rank."""

    name: str
    score: float = field(compare=False)
    image: np.ndarray = field(compare=False, repr=False)
    truth: np.ndarray = field(compare=False, repr=False)
    pred: np.ndarray = field(compare=False, repr=False)


def image_score(matrix: np.ndarray, classes: list[str]) -> float | None:
    """The score of one image from its `(C, C)` confusion matrix: foreground IoU (2 classes) or mIoU."""
    result = scores(matrix, classes)
    return result["per_class"][classes[1]]["iou"] if len(classes) == 2 else result["miou"]


def thumbnail(image_chw: np.ndarray, truth: np.ndarray, pred: np.ndarray, side: int = THUMB_SIDE
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, H, W) image in any range, (H, W) truth and prediction -> every n-th pixel so the longest side is at
    most `side`: the image min-max scaled to (h, w, 3) uint8, the masks still class indices (h, w)."""
    step = max(1, math.ceil(max(truth.shape) / side))
    img = np.asarray(image_chw[:, ::step, ::step], np.float32).transpose(1, 2, 0)  # (h, w, C)
    low, high = float(img.min()), float(img.max())
    img = (img - low) / max(high - low, 1e-8)
    rgb = img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, axis=-1)
    return (rgb * 255).round().astype(np.uint8), truth[::step, ::step].copy(), pred[::step, ::step].copy()


@dataclass
class Gallery:
    """The per-image scores of a scoring pass and the thumbnails of its best and worst `k` images."""

    classes: list[str]
    k: int = 3
    scores: list[tuple[str, float | None]] = field(default_factory=list)  # (image name, score) in scoring order
    _best: list[tuple[float, int, Pictured]] = field(default_factory=list)  # min-heap: the k highest scores
    _worst: list[tuple[float, int, Pictured]] = field(default_factory=list)  # min-heap of -score: k lowest

    def add(self, name: str, matrix: np.ndarray, image_chw: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
        """Score one image from its `(C, C)` matrix; keep its thumbnails if it is among the best or worst `k`."""
        score = image_score(matrix, self.classes)
        self.scores.append((name, score))
        if score is None or self.k == 0:
            return
        order = len(self.scores)  # equal scores: the earlier image ranks as the better, so best and worst differ
        wants_best = len(self._best) < self.k or score > self._best[0][0]
        wants_worst = len(self._worst) < self.k or -score >= self._worst[0][0]
        if not (wants_best or wants_worst):
            return  # the common case on a large set: no thumbnail is made
        item = Pictured(name, score, *thumbnail(image_chw, truth, pred))
        if wants_best:
            _keep(self._best, (score, -order, item), self.k)
        if wants_worst:
            _keep(self._worst, (-score, order, item), self.k)

    def merged(self) -> Gallery:
        """Every process's gallery merged (under torchrun each scores its share of the images): the scores in
        rank order and the best and worst `k` over all. Without torchrun, the gallery itself."""
        parts = gather_objects(self)
        if len(parts) == 1:
            return self
        out = Gallery(self.classes, self.k)
        for part in parts:
            out.scores.extend(part.scores)
            for entry in part._best:
                _keep(out._best, entry, self.k)
            for entry in part._worst:
                _keep(out._worst, entry, self.k)
        return out

    def best(self) -> list[Pictured]:
        """The best `k` images, best first."""
        return [entry[2] for entry in sorted(self._best, reverse=True)]

    def worst(self) -> list[Pictured]:
        """The worst `k` images, worst first, without those already among the best (fewer than 2k images)."""
        shown = {id(item) for item in self.best()}
        return [entry[2] for entry in sorted(self._worst, reverse=True) if id(entry[2]) not in shown]

    def as_dict(self) -> dict[str, Any]:
        """What the JSON report holds: every image's score and the names and scores of the best and worst."""
        return {"per_image": [{"image": name, "score": score} for name, score in self.scores],
                "best": [{"image": p.name, "score": p.score} for p in self.best()],
                "worst": [{"image": p.name, "score": p.score} for p in self.worst()],
                "score": "foreground IoU" if len(self.classes) == 2 else "mIoU"}


def _keep(heap: list[tuple[float, int, Pictured]], entry: tuple[float, int, Pictured], k: int) -> None:
    """Push `entry` onto the min-heap, dropping its smallest entry beyond `k`."""
    if len(heap) < k:
        heapq.heappush(heap, entry)
    elif entry[:2] > heap[0][:2]:
        heapq.heapreplace(heap, entry)
