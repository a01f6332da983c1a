"""Inference settings chosen on the validation images after training: threshold, small objects, TTA.

A network trained for a few minutes is often under-confident on thin or faint objects (p(foreground) 0.3 on
a true nucleus is common, so the arg-max misses it), leaves specks of false foreground, and may or may not
gain from averaging flipped views. Each of these is measured on the validation split with best.pt's weights
(the test split never takes part) and stored in the checkpoint, so `predict`, `evaluate` and exports apply
exactly what was measured:

- threshold (binary): the p(foreground) cut with the best foreground IoU (ties: nearest 0.5, the arg-max);
- min_object (binary): the smallest object size kept, from a few candidates, by foreground IoU;
- tta: flips, when they raise the score (foreground IoU, or mIoU for several classes) by at least
  `TTA_GAIN`, for four times the inference time.

Threshold and object size are scored from one pass of probabilities held in memory, through the same
`classes_of` and `remove_small_objects` that `Inference` applies; the flips are scored by `score_pairs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from unetkit.config import Config, InferConfig
from unetkit.data.dataset import Pair, load_pair
from unetkit.data.inspect import image_size
from unetkit.data.masks import MaskCodec
from unetkit.infer.cleanup import cleans, remove_small_objects
from unetkit.infer.inference import Inference, model_predictor, open_inference, validation_settings
from unetkit.infer.predictor import classes_of
from unetkit.infer.scoring import score_pairs
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


def hold_probabilities(inference: Inference, pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                       progress: bool = False) -> list[Held]:
    """One pass of the network over `pairs`, keeping each image's probabilities."""
    held = []
    for pair in tqdm(pairs, desc="choices", leave=False, disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, channels, codec)  # (H, W, C) in [0, 1], (H, W) class indices
        probs = np.empty((codec.num_classes, *mask.shape), np.float32)
        inference.segment(image, probs)
        held.append(Held(probs, mask))
    return held


def score_held(held: Sequence[Held], threshold: float, min_object_px: int, class_names: list[str]) -> dict:
    """The scores `evaluate` would report at these settings, from the held probabilities."""
    confusion = ConfusionMatrix(len(class_names))
    for item in held:
        pred = classes_of(torch.from_numpy(item.probs), threshold)
        if cleans(*item.mask.shape, min_object_px):
            pred = torch.from_numpy(remove_small_objects(pred.numpy().astype(np.uint8), min_object_px)).long()
        confusion.update(pred, torch.from_numpy(item.mask).long())
    return scores(confusion.matrix, class_names)


def headline_score(result: dict, class_names: list[str]) -> float:
    """What the choices maximise: foreground IoU for a binary model, mIoU otherwise (undefined counts as 0)."""
    value = result["per_class"][class_names[1]]["iou"] if len(class_names) == 2 else result["miou"]
    return value if value is not None else 0.0


def choose_threshold(table: dict[float, float | None]) -> tuple[float, str]:
    """The threshold with the best foreground IoU (ties: the one nearest 0.5, the arg-max), and why."""
    known = {t: iou for t, iou in table.items() if iou is not None}
    if not known:
        return 0.5, "threshold 0.5 kept: the validation images hold no foreground to score"
    best = max(known, key=lambda t: (known[t], -abs(t - 0.5)))
    at_half = known.get(0.5)
    versus = f" against {at_half:.4f} at 0.5" if at_half is not None and best != 0.5 else ""
    return best, f"threshold {best}: foreground IoU {known[best]:.4f} on the validation images{versus}"


def choose_object_size(held: Sequence[Held], threshold: float, class_names: list[str]) -> tuple[int, str]:
    """The minimum object size with the best foreground IoU (ties: the smallest), and why."""
    smallest = min(item.mask.size for item in held)
    table = {size: headline_score(score_held(held, threshold, size, class_names), class_names)
             for size in OBJECT_SIZES if size <= smallest // 100}
    best = max(table, key=lambda s: (table[s], -s))
    if best == 0:
        return 0, f"small objects kept: removing them did not raise the foreground IoU ({table[0]:.4f})"
    return best, (f"objects under {best} px removed: foreground IoU {table[best]:.4f} against {table[0]:.4f} "
                  "keeping all")


def choose_inference(checkpoint_path: str, pairs: Sequence[Pair], codec: MaskCodec, choose: Sequence[str],
                     progress: bool = False) -> tuple[dict[str, object], list[str], dict]:
    """Make the `train.choose` choices with the checkpoint's weights on `pairs` (the validation images), store
    them in the checkpoint's config, and return the chosen `infer` values, one reason per choice, and the
    validation scores at the chosen settings (what `evaluate CKPT --split val` reports)."""
    checkpoint = load_checkpoint(checkpoint_path)
    model, cfg = model_from_checkpoint(checkpoint, str(checkpoint_path))
    predictor = model_predictor(model, resolve_device(cfg.train.device))
    infer, names = validation_settings(cfg), cfg.data.classes
    reasons: list[str] = []
    kept = _within_memory(pairs, codec.num_classes)
    if len(kept) < len(pairs):
        reasons.append(f"threshold and object size judged on the first {len(kept)} of {len(pairs)} validation images "
                       f"(their probabilities fill {MAX_HELD >> 30} GiB)")
    held = hold_probabilities(open_inference(predictor, cfg, infer), kept, codec, cfg.data.channels, progress)
    if "threshold" in choose:
        table = {t: score_held(held, t, 0, names)["per_class"][names[1]]["iou"] for t in THRESHOLDS}
        threshold, reason = choose_threshold(table)
        infer = infer.model_copy(update={"threshold": threshold})
        reasons.append(reason)
    if "min_object" in choose:
        size, reason = choose_object_size(held, infer.threshold, names)
        infer = infer.model_copy(update={"min_object_px": size})
        reasons.append(reason)
    final = score_held(held, infer.threshold, infer.min_object_px, names) if len(kept) == len(pairs) else None
    if "tta" in choose:
        infer, reason, flipped = _choose_tta(predictor, cfg, infer, held, pairs, codec, progress)
        final = flipped if infer.tta == "flips" else final
        reasons.append(reason)
    chosen = {"threshold": infer.threshold, "min_object_px": infer.min_object_px, "tta": infer.tta}
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


def _choose_tta(predictor: object, cfg: Config, infer: InferConfig, held: Sequence[Held], pairs: Sequence[Pair],
                codec: MaskCodec, progress: bool) -> tuple[InferConfig, str, dict]:
    """Flips when they raise the validation score by at least TTA_GAIN at the settings chosen so far; returns
    the settings, why, and the scores with flips."""
    names = cfg.data.classes
    plain = headline_score(score_held(held, infer.threshold, infer.min_object_px, names), names)
    flipped_infer = infer.model_copy(update={"tta": "flips"})
    scored = score_pairs(open_inference(predictor, cfg, flipped_infer), pairs, codec, cfg.data.channels,
                         progress=progress, desc="choices (flips)")
    with_flips = scores(scored.confusion.matrix, names)
    flipped = headline_score(with_flips, names)
    what = "foreground IoU" if len(names) == 2 else "mIoU"
    if flipped - plain >= TTA_GAIN:
        return (flipped_infer, f"TTA flips: {what} {flipped:.4f} against {plain:.4f} without, for 4x the time",
                with_flips)
    return (infer, f"no TTA: flips give {what} {flipped:.4f} against {plain:.4f} without, not worth 4x the time",
            with_flips)
