"""Scoring an `Inference` on labelled images: the one loop behind validation during training and `evaluate`.

Each image is read with its mask, segmented by `Inference.segment` (the path `predict` takes), counted into one
confusion matrix, and, when a loss is given, scored with the configured loss on the predicted probabilities.
Under torchrun rank r scores images r, r + world_size, ...; the integer counts and the loss sums are then
summed over ranks, so every image counts exactly once whatever the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from unetkit.data.dataset import Pair, load_mask, load_pair
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec
from unetkit.data.pairs import crop_rows, rows_of
from unetkit.data.source import open_image, to_unit
from unetkit.data.weightmap import WeightMapCache
from unetkit.distributed import all_sum, gather_objects
from unetkit.em_scores import EMScoreAccumulator
from unetkit.infer.gallery import THUMB_SIDE, Gallery
from unetkit.infer.inference import Inference
from unetkit.infer.instances import objects_from, true_objects
from unetkit.instance_metrics import InstanceScores
from unetkit.losses import SegmentationLoss, WeightedCrossEntropy, loss_of_probabilities
from unetkit.metrics import ConfusionMatrix

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (C, H, W) in [0, 1], truth (H, W), prediction (H, W)


@dataclass
class Scored:
    """What scoring a set of images gives: the counts, the mean loss per image, a few pictures, EM scores,
    per-image scores with the best and worst images, and the (H, W) size of every image scored."""

    confusion: ConfusionMatrix
    loss: float | None = None  # mean over images of the configured loss (None when no loss was asked for)
    samples: list[Sample] = field(default_factory=list)
    em: EMScoreAccumulator | None = None
    objects: InstanceScores | None = None  # object scores (`instances=True`)
    gallery: Gallery | None = None  # per-image scores, best and worst images (`ranked=k`)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (H, W) of each image, in scoring order


def _image_loss(loss_fn: SegmentationLoss, probs: np.ndarray, mask: np.ndarray, weight: np.ndarray | None) -> float:
    """Loss of one image's (K, H, W) probabilities against its (H, W) mask (and border weight map)."""
    target = torch.from_numpy(mask.astype(np.int64))[None]  # (1, H, W); a new array (cached masks are read-only)
    pixel_weight = torch.from_numpy(weight)[None] if weight is not None else None
    return float(loss_of_probabilities(loss_fn, torch.from_numpy(probs)[None], target, pixel_weight))


def _count(scored: Scored, pair: Pair, image: np.ndarray, mask: np.ndarray, pred: np.ndarray, channels: int
           ) -> None:
    """Count one image's (H, W) prediction against its mask: into the set's matrix, its own score, its size.
    The gallery gets every n-th pixel only, read as such from a lazily opened (tiled, pyramidal) image."""
    counted = ConfusionMatrix(scored.confusion.num_classes)  # this image's counts, then added to the set's
    counted.update(torch.from_numpy(pred).long(), torch.from_numpy(mask.astype(np.int64)))
    scored.confusion.add_counts(counted.matrix)
    scored.sizes.append(mask.shape)
    if scored.gallery is not None:
        step = max(1, math.ceil(max(mask.shape) / THUMB_SIDE))  # as `thumbnail` takes them
        shown = to_unit(np.asarray(image[::step, ::step]), channels)  # (h, w, C)
        scored.gallery.add(pair[0].stem, counted.matrix.numpy(), shown.transpose(2, 0, 1), mask[::step, ::step],
                           pred[::step, ::step])


def _read(pair: Pair, channels: int, codec: MaskCodec, level: int | None, masks: DecodedMasks | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """(image, (H, W) uint8 classes): the image decoded whole as (H, W, C) in [0, 1], or with a `level` opened
    as `predict` opens it ((H, W[, C]), raw or in [0, 1], read region by region where the file allows)."""
    if level is None:
        return load_pair(pair, channels, codec, masks)
    image = open_image(pair[0], channels, level)
    rows = rows_of(pair)
    return crop_rows(image, rows), crop_rows(load_mask(pair, codec, image.shape), rows)


def _reduce(scored: Scored) -> None:
    """Sum or gather every rank's share, so each rank holds the whole set's counts, scores and sizes."""
    scored.confusion.all_reduce()  # exact integer counts summed over ranks: every image counted once
    if scored.em is not None:
        scored.em.all_reduce()
    if scored.gallery is not None:
        scored.gallery = scored.gallery.merged()
    scored.sizes = [size for part in gather_objects(scored.sizes) for size in part]  # every rank's, rank order


@torch.inference_mode()
def score_pairs(
    inference: Inference,
    pairs: Sequence[Pair],
    codec: MaskCodec,
    channels: int,
    *,
    loss_fn: SegmentationLoss | None = None,
    weights: WeightMapCache | None = None,
    em_scores: bool = False,
    instances: bool = False,
    keep_samples: int = 0,
    ranked: int | None = None,
    classes: list[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    desc: str = "evaluate",
    level: int | None = None,
    masks: DecodedMasks | None = None,
) -> Scored:
    """Segment every pair with `inference` and accumulate one confusion matrix (and loss, EM scores) over all.

    `weights` gives the border weight maps a `weighted_ce` loss needs; `keep_samples` keeps the first few
    (image, truth, prediction) triples of this rank for pictures. `ranked=k` scores every image on its own
    and keeps the best and worst k (`infer/gallery.py`; `classes` names the classes, default 0, 1, ...).
    `instances` also scores the predicted objects against the true ones (`infer/instances.py`; one process
    only). With a `level` the images are opened as `predict` opens them (that pyramid level; tiled,
    compressed and OME files read region by region), else decoded whole, as validation during training
    reads them.
    """
    k = codec.num_classes
    scored = Scored(ConfusionMatrix(k), em=EMScoreAccumulator() if em_scores else None,
                    objects=InstanceScores() if instances else None,
                    gallery=None if ranked is None else Gallery(classes or [str(c) for c in range(k)], ranked))
    total = 0.0
    if loss_fn is None or not any(isinstance(t, WeightedCrossEntropy) for t in loss_fn.terms):
        weights = None  # the border maps cost time and only `weighted_ce` reads them
    for pair in tqdm(pairs[rank::world_size], desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        image, mask = _read(pair, channels, codec, level, masks)
        grows = instances and inference.task == "instances"  # its objects are grown from the probabilities
        probs = np.empty((k, *mask.shape), np.float32) if loss_fn is not None or grows else None
        pred = inference.segment(image, probs)  # (H, W) uint8
        _count(scored, pair, image, mask, pred, channels)
        if loss_fn is not None and probs is not None:
            weight = weights.get(pair[1], mask) if weights is not None else None
            total += _image_loss(loss_fn, probs, mask, weight)
        if scored.em is not None:
            scored.em.update(mask == 1, pred == 1)
        if scored.objects is not None:
            infer, rule = inference.infer, inference.objects
            scored.objects.update(true_objects(pair[1], mask, codec.encoding, rule, rows_of(pair)),
                                  objects_from(rule, pred, probs, infer.seed_threshold, infer.min_object_px))
        if len(scored.samples) < keep_samples:
            scored.samples.append((to_unit(np.asarray(image), channels).transpose(2, 0, 1), mask, pred))
    _reduce(scored)
    if loss_fn is not None:
        scored.loss = float(all_sum(torch.tensor([total], dtype=torch.float64))) / max(len(pairs), 1)
    return scored
