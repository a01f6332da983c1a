"""Inference settings chosen on the validation images after training: threshold, small objects, TTA.

A network trained for a few minutes is often under-confident on thin or faint objects (p(foreground) 0.3 on
a true nucleus is common, so the arg-max misses it), leaves specks of false foreground, and may or may not
gain from averaging flipped views. Each of these is measured on the validation split with best.pt's weights
(the test split never takes part) and stored in the checkpoint, so `predict`, `evaluate` and exports apply
exactly what was measured:

- threshold (binary): the p(foreground) cut with the best score (ties: nearest 0.5, the arg-max);
- min_object (binary): the smallest object size kept, from a few candidates, by the same score;
- tta: flips, when they raise the score by at least `TTA_GAIN`, for four times the inference time.

The score is `train.choose_by`: `pixels` = foreground IoU (mIoU for several classes); `regions` = for a
boundary map (class 1 = the boundaries between objects, as EM membranes), one minus the Rand error of the
regions the boundaries enclose (`em_scores`, what `evaluate --em` reports). Pixel IoU is the wrong judge
there: a threshold that thins the boundaries gains IoU while the gaps it opens merge neighbouring objects.
For an instance model (`model.task: instances`) the threshold is the seed threshold and the object size
drops small objects; both are judged by the Data Science Bowl score of the grown objects.

Every candidate is scored from probabilities held in memory (one pass, and one more with flips for TTA),
through the same `classes_of` and `remove_small_objects` that `Inference` applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from unetkit.data.dataset import Pair, load_pair
from unetkit.data.inspect import image_size
from unetkit.data.masks import MaskCodec
from unetkit.em_scores import em_scores
from unetkit.infer.cleanup import cleans, remove_small_objects
from unetkit.infer.inference import Inference, model_predictor, open_inference, validation_settings
from unetkit.infer.instances import grow_objects, true_objects
from unetkit.infer.predictor import classes_of
from unetkit.instance_metrics import InstanceScores
from unetkit.metrics import ConfusionMatrix, scores
from unetkit.runtime import resolve_device

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
OBJECT_SIZES = (0, 16, 64, 256, 1024)  # pixels; sizes over 1% of the smallest validation image are not tried
TTA_GAIN = 0.005
MAX_HELD = 2 * 1024**3  # bytes of validation probabilities held in memory for the threshold and size choices


@dataclass
class Held:
    """One validation image's (K, H, W) float32 probabilities and (H, W) true classes."""

    probs: np.ndarray
    mask: np.ndarray
    objects: np.ndarray | None = None  # (H, W) true object labels, for an instance model's choices


def hold_probabilities(inference: Inference, pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                       progress: bool = False, objects: bool = False) -> list[Held]:
    """One pass of the network over `pairs`, keeping each image's probabilities (and its true objects)."""
    held = []
    for pair in tqdm(pairs, desc="choices", leave=False, disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, channels, codec)  # (H, W, C) in [0, 1], (H, W) class indices
        probs = np.empty((codec.num_classes, *mask.shape), np.float32)
        inference.segment(image, probs)
        held.append(Held(probs, mask, true_objects(pair[1], mask, codec.encoding) if objects else None))
    return held


def _predicted(item: Held, threshold: float, min_object_px: int) -> np.ndarray:
    """(H, W) uint8 classes of one held image at these settings, as `Inference` would write them."""
    pred = classes_of(torch.from_numpy(item.probs), threshold).numpy().astype(np.uint8)
    return remove_small_objects(pred, min_object_px) if cleans(*item.mask.shape, min_object_px) else pred


def score_held(held: Sequence[Held], threshold: float, min_object_px: int, class_names: list[str]) -> dict:
    """The scores `evaluate` would report at these settings, from the held probabilities."""
    confusion = ConfusionMatrix(len(class_names))
    for item in held:
        confusion.update(torch.from_numpy(_predicted(item, threshold, min_object_px)).long(),
                         torch.from_numpy(item.mask).long())
    return scores(confusion.matrix, class_names)


def region_error(held: Sequence[Held], threshold: float, min_object_px: int) -> float:
    """Mean over the images of the Rand error of the regions enclosed by class 1 (`em_scores`)."""
    return float(np.mean([em_scores(item.mask == 1, _predicted(item, threshold, min_object_px) == 1).rand_error
                          for item in held]))


@dataclass(frozen=True)
class Judge:
    """How the choices score held probabilities: `value` is higher-better, `shown` prints it."""

    name: str
    value: Callable[[Sequence[Held], float, int], float | None]
    shown: Callable[[float], str]


def object_score(held: Sequence[Held], seed_threshold: float, min_object_px: int) -> float:
    """The 2018 Data Science Bowl score of an instance model's objects grown at these settings."""
    found = InstanceScores()
    for item in held:
        found.update(item.objects, grow_objects(item.probs, seed_threshold, min_object_px))
    return float(found.scores()["dsb_score"])


def judge_for(by: str, class_names: list[str]) -> Judge:
    """The `train.choose_by` score as a Judge; "objects" (an instance model's) is the DSB score, and its
    threshold is the seed threshold."""
    if by == "objects":
        return Judge("object score (DSB)", object_score, lambda v: f"{v:.4f}")
    if by == "regions":
        return Judge("Rand error of the regions", lambda held, t, size: -region_error(held, t, size),
                     lambda v: f"{-v:.4f}")
    what = "foreground IoU" if len(class_names) == 2 else "mIoU"

    def pixels(held: Sequence[Held], t: float, size: int) -> float | None:
        result = score_held(held, t, size, class_names)
        return result["per_class"][class_names[1]]["iou"] if len(class_names) == 2 else result["miou"]

    return Judge(what, pixels, lambda v: f"{v:.4f}")


def choose_threshold(table: dict[float, float | None], judge: Judge | None = None) -> tuple[float, str]:
    """The threshold with the best score (ties: the one nearest 0.5, the arg-max), and why; `table` maps each
    threshold to its higher-better score (foreground IoU unless `judge` says otherwise)."""
    name, shown = (judge.name, judge.shown) if judge else ("foreground IoU", lambda v: f"{v:.4f}")
    known = {t: v for t, v in table.items() if v is not None}
    if not known:
        return 0.5, "threshold 0.5 kept: the validation images hold no foreground to score"
    best = max(known, key=lambda t: (known[t], -abs(t - 0.5)))
    at_half = known.get(0.5)
    versus = f" against {shown(at_half)} at 0.5" if at_half is not None and best != 0.5 else ""
    return best, f"threshold {best}: {name} {shown(known[best])} on the validation images{versus}"


def choose_object_size(held: Sequence[Held], threshold: float, class_names: list[str],
                       judge: Judge | None = None) -> tuple[int, str]:
    """The minimum object size with the best score (ties: the smallest), and why."""
    judge = judge or judge_for("pixels", class_names)
    smallest = min(item.mask.size for item in held)
    table = {size: judge.value(held, threshold, size) or 0.0 for size in OBJECT_SIZES if size <= smallest // 100}
    best = max(table, key=lambda s: (table[s], -s))
    if best == 0:
        return 0, f"small objects kept: removing them did not improve the {judge.name} ({judge.shown(table[0])})"
    return best, (f"objects under {best} px removed: {judge.name} {judge.shown(table[best])} against "
                  f"{judge.shown(table[0])} keeping all")


def choose_inference(checkpoint_path: str, pairs: Sequence[Pair], codec: MaskCodec, choose: Sequence[str],
                     progress: bool = False) -> tuple[dict[str, object], list[str], dict]:
    """Make the `train.choose` choices with the checkpoint's weights on `pairs` (the validation images), store
    them in the checkpoint's config, and return the chosen `infer` values, one reason per choice, and the
    validation scores at the chosen settings (what `evaluate CKPT --split val` reports)."""
    checkpoint = load_checkpoint(checkpoint_path)
    model, cfg = model_from_checkpoint(checkpoint, str(checkpoint_path))
    predictor = model_predictor(model, resolve_device(cfg.train.device))
    infer, names = validation_settings(cfg), cfg.data.classes
    grown = cfg.model.task == "instances"  # an instance model: the threshold is the seed threshold
    judge = judge_for("objects" if grown else cfg.train.choose_by, names)
    cut = "seed_threshold" if grown else "threshold"
    reasons: list[str] = []
    kept = _within_memory(pairs, codec.num_classes * (2 if "tta" in choose else 1))
    if len(kept) < len(pairs):
        reasons.append(f"choices judged on the first {len(kept)} of {len(pairs)} validation images (their "
                       f"probabilities fill {MAX_HELD >> 30} GiB)")
    held = hold_probabilities(open_inference(predictor, cfg, infer), kept, codec, cfg.data.channels, progress,
                              objects=grown)
    if "threshold" in choose:
        threshold, reason = choose_threshold({t: judge.value(held, t, 0) for t in THRESHOLDS}, judge)
        infer = infer.model_copy(update={cut: threshold})
        reasons.append(f"seed {reason}" if grown else reason)
    if "min_object" in choose:
        size, reason = choose_object_size(held, getattr(infer, cut), names, judge)
        infer = infer.model_copy(update={"min_object_px": size})
        reasons.append(reason)
    if "tta" in choose:
        flipped_infer = infer.model_copy(update={"tta": "flips"})
        flipped = hold_probabilities(open_inference(predictor, cfg, flipped_infer), kept, codec, cfg.data.channels,
                                     progress, objects=grown)
        plain, with_flips = (judge.value(h, getattr(infer, cut), infer.min_object_px) or 0.0 for h in (held, flipped))
        if with_flips - plain >= TTA_GAIN:
            infer, held = flipped_infer, flipped
            reasons.append(f"TTA flips: {judge.name} {judge.shown(with_flips)} against {judge.shown(plain)} "
                           "without, for 4x the time")
        else:
            reasons.append(f"no TTA: flips give {judge.name} {judge.shown(with_flips)} against "
                           f"{judge.shown(plain)} without, not worth 4x the time")
    pixel_cleanup = 0 if grown else infer.min_object_px  # an instance model removes small objects, not pixels
    final = score_held(held, infer.threshold, pixel_cleanup, names) if len(kept) == len(pairs) else None
    chosen = {"threshold": infer.threshold, "seed_threshold": infer.seed_threshold,
              "min_object_px": infer.min_object_px, "tta": infer.tta}
    checkpoint["config"]["infer"].update(chosen)
    save_checkpoint(checkpoint, checkpoint_path)
    return chosen, reasons, final


def _within_memory(pairs: Sequence[Pair], num_classes: int) -> list[Pair]:
    """The first pairs whose (K, H, W) float32 probabilities fit in MAX_HELD bytes (at least one)."""
    kept, used = [], 0
    for pair in pairs:
        width, height = image_size(pair[0])
        used += 4 * num_classes * width * height
        if kept and used > MAX_HELD:
            break
        kept.append(pair)
    return kept
