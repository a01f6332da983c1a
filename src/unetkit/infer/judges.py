"""How the choices after training score one setting on the held validation probabilities, and how sure it is.

A judge returns the score `evaluate` would report at the setting (pooled as `evaluate` pools it: one confusion
matrix over all images, the mean of the slice scores, the mean DSB score) and the images' own scores. The second
is what makes a choice honest: with five validation slices a threshold that beats 0.5 by less than the noise
won that contest by which slices were held out, and on other images its edge can turn into a loss (a membrane
threshold 0.05 past the validation slices' best opens the gaps that merge neighbouring cells). `choices` keeps a
departure from the default only when it wins by more than one standard error (the "one-standard-error rule" of
model selection, Breiman et al. 1984; Hastie, Tibshirani and Friedman, *The Elements of Statistical Learning*,
7.10).

The standard error is that of the per-image differences between the two settings compared (`paired_error`),
not of one setting's per-image scores: two settings are scored on the same images, and most of the spread
between images (an easy slice, a hard one) is shared by both. A change that gains 0.007 on every one of five
slices whose scores spread by 0.04 is a steady gain, and the spread of one setting's scores would call it noise.

Judges, after `train.choose_by`:
- `pixels`: foreground IoU (mIoU for several classes);
- `regions`: for a boundary map (class 1 = the boundaries between objects, as EM membranes), one minus the Rand
  error of the regions the boundaries enclose (`em_scores`, what `evaluate --em` reports);
- `objects` (an instance model): the 2018 Data Science Bowl score of the objects grown from the seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch

from unetkit.em_scores import em_scores
from unetkit.infer.cleanup import cleans, remove_small_objects
from unetkit.infer.gaps import closes, gap_lines, with_lines
from unetkit.infer.instances import grow_objects
from unetkit.infer.predictor import classes_of
from unetkit.instance_metrics import InstanceScores
from unetkit.metrics import ConfusionMatrix, scores


@dataclass
class Held:
    """One validation image's (K, H, W) float32 probabilities and (H, W) true classes."""

    probs: np.ndarray
    mask: np.ndarray
    objects: np.ndarray | None = None  # (H, W) true object labels, for an instance model's choices
    lines: dict[float, np.ndarray | None] = field(default_factory=dict)  # seed level -> flat indices of its lines

    def gap_lines(self, seeds: float) -> np.ndarray | None:
        """`gaps.gap_lines` of these probabilities at `seeds`, computed once: every threshold and object size
        scored at one seed level closes the same gaps, and a watershed costs ~0.1 s on a 512x512 image."""
        if seeds not in self.lines:
            self.lines[seeds] = gap_lines(self.probs[1], seeds)
        return self.lines[seeds]


class Scored(NamedTuple):
    """A setting's higher-better score (None: nothing to score), the standard error of the images' scores, and
    the images' own scores (None where an image has nothing to score), in the order of the held images."""

    value: float | None
    se: float = 0.0
    images: tuple[float | None, ...] = ()


def paired_error(best: Scored, other: Scored) -> float:
    """The standard error of the per-image differences between two settings scored on the same images; the
    best's own standard error where the per-image scores are not known for both."""
    if len(best.images) != len(other.images) or len(best.images) < 2:
        return best.se
    pairs = zip(best.images, other.images, strict=True)
    return standard_error([None if a is None or b is None else a - b for a, b in pairs])


def standard_error(values: Sequence[float | None]) -> float:
    """Standard deviation / sqrt(n) of the defined per-image scores; 0 with fewer than two."""
    known = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    return float(known.std(ddof=1) / np.sqrt(len(known))) if len(known) > 1 else 0.0


def predicted(item: Held, threshold: float, min_object_px: int, seeds: float | None = None) -> np.ndarray:
    """(H, W) uint8 classes of one held image at these settings, as `Inference` would write them: thresholded,
    gaps closed (`seeds`: `infer.boundary_seeds`), small objects removed."""
    pred = classes_of(torch.from_numpy(item.probs), threshold).numpy().astype(np.uint8)
    if closes(*item.mask.shape, seeds):
        pred = with_lines(pred, item.gap_lines(seeds))
    return remove_small_objects(pred, min_object_px) if cleans(*item.mask.shape, min_object_px) else pred


def _confusion(item: Held, threshold: float, min_object_px: int, num_classes: int,
               seeds: float | None = None) -> torch.Tensor:
    confusion = ConfusionMatrix(num_classes)
    confusion.update(torch.from_numpy(predicted(item, threshold, min_object_px, seeds)).long(),
                     torch.from_numpy(item.mask).long())
    return confusion.matrix


def score_held(held: Sequence[Held], threshold: float, min_object_px: int, class_names: list[str],
               seeds: float | None = None) -> dict:
    """The scores `evaluate` would report at these settings, from the held probabilities."""
    confusion = ConfusionMatrix(len(class_names))
    for item in held:
        confusion.add_counts(_confusion(item, threshold, min_object_px, len(class_names), seeds))
    return scores(confusion.matrix, class_names)


def region_error(held: Sequence[Held], threshold: float, min_object_px: int, seeds: float | None = None) -> float:
    """Mean over the images of the Rand error of the regions enclosed by class 1 (`em_scores`)."""
    return float(np.mean(_region_errors(held, threshold, min_object_px, seeds)))


def _region_errors(held: Sequence[Held], threshold: float, min_object_px: int,
                   seeds: float | None = None) -> list[float]:
    return [em_scores(item.mask == 1, predicted(item, threshold, min_object_px, seeds) == 1).rand_error
            for item in held]


class Scorer(Protocol):
    """A judge's score of held probabilities at (threshold, min_object_px, boundary seeds)."""

    def __call__(self, held: Sequence[Held], threshold: float, min_object_px: int,
                 seeds: float | None = None) -> Scored: ...


@dataclass(frozen=True)
class Judge:
    """How the choices score held probabilities at (threshold, min_object_px, seeds); `shown` prints a value."""

    name: str
    score: Scorer
    shown: Callable[[float], str]


def _objects(held: Sequence[Held], seed_threshold: float, min_object_px: int, seeds: float | None = None) -> Scored:
    found = InstanceScores()
    for item in held:
        found.update(item.objects, grow_objects(item.probs, seed_threshold, min_object_px))
    return Scored(float(found.scores()["dsb_score"]), standard_error(found.dsb), tuple(found.dsb))


def _regions(held: Sequence[Held], threshold: float, min_object_px: int, seeds: float | None = None) -> Scored:
    errors = _region_errors(held, threshold, min_object_px, seeds)
    return Scored(-float(np.mean(errors)), standard_error(errors), tuple(-e for e in errors))


def _pixels(class_names: list[str]) -> Scorer:
    def headline(matrix: torch.Tensor) -> float | None:
        result = scores(matrix, class_names)
        return result["per_class"][class_names[1]]["iou"] if len(class_names) == 2 else result["miou"]

    def pixels(held: Sequence[Held], threshold: float, min_object_px: int, seeds: float | None = None) -> Scored:
        matrices = [_confusion(item, threshold, min_object_px, len(class_names), seeds) for item in held]
        images = tuple(headline(m) for m in matrices)
        return Scored(headline(torch.stack(matrices).sum(0)), standard_error(images), images)

    return pixels


def judge_for(by: str, class_names: list[str]) -> Judge:
    """The `train.choose_by` score as a Judge; "objects" (an instance model's) is the DSB score, and its
    threshold is the seed threshold."""
    if by == "objects":
        return Judge("object score (DSB)", _objects, lambda v: f"{v:.4f}")
    if by == "regions":
        return Judge("Rand error of the regions", _regions, lambda v: f"{-v:.4f}")
    return Judge("foreground IoU" if len(class_names) == 2 else "mIoU", _pixels(class_names), lambda v: f"{v:.4f}")
