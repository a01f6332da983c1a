"""Inference settings chosen on the validation images after training: threshold, small objects, TTA.

A network trained for a few minutes is often under-confident on thin or faint objects (p(foreground) 0.3 on
a true nucleus is common, so the arg-max misses it), leaves specks of false foreground, and may or may not
gain from averaging flipped views. Each of these is measured on the validation split with best.pt's weights
(the test split never takes part) and stored in the checkpoint, so `predict`, `evaluate` and exports apply
exactly what was measured:

- threshold (binary): the best-scoring p(foreground) cut, unless a cut nearer 0.5 (the arg-max) scores within
  one standard error of it: then the one nearest 0.5 of those;
- min_object (binary): the smallest object size kept, from a few candidates, by the same rule (the smallest
  size within one standard error of the best);
- tta: flips, when they raise the score by at least `TTA_GAIN`, for four times the inference time;
- gaps (a boundary map): whether closing the boundaries' gaps (`gaps`) keeps more regions apart, and from
  which seed level. With gaps judged, the threshold only decides which pixels are boundary, so it is judged
  by pixel IoU, and the regions judge the gaps: judged by the regions, the threshold would thin the
  boundaries to the watershed's one-pixel lines, which keep the regions apart but miss most boundary pixels.

The score is `train.choose_by` (`judges`): foreground IoU, the Rand error of the regions a boundary map
encloses, or an instance model's object score; for an instance model the threshold is the seed threshold.
Pixel IoU is the wrong judge of a boundary map: a threshold that thins the boundaries gains IoU while the
gaps it opens merge neighbouring objects.

Every candidate is scored from probabilities held in memory (one pass, and one more with flips for TTA),
through the same `classes_of` and `remove_small_objects` that `Inference` applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from unetkit.config import Config, InferConfig
from unetkit.data.dataset import Pair, load_pair
from unetkit.data.inspect import image_size
from unetkit.data.masks import MaskCodec
from unetkit.data.pairs import band_height, rows_of
from unetkit.infer.gaps import SEED_LEVELS
from unetkit.infer.inference import Inference, model_predictor, open_inference, validation_settings
from unetkit.infer.instances import true_objects
from unetkit.infer.judges import Held, Judge, Scored, judge_for, paired_error, score_held
from unetkit.infer.predictor import Fn
from unetkit.runtime import resolve_device

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
OBJECT_SIZES = (0, 16, 64, 256, 1024)  # pixels; sizes over 1% of the smallest validation image are not tried
TTA_GAIN = 0.005
MAX_HELD = 2 * 1024**3  # bytes of validation probabilities held in memory for the threshold and size choices


def hold_probabilities(inference: Inference, pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                       progress: bool = False, objects: bool = False) -> list[Held]:
    """One pass of the network over `pairs`, keeping each image's probabilities (and its true objects)."""
    held = []
    for pair in tqdm(pairs, desc="choices", leave=False, disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, channels, codec)  # (H, W, C) in [0, 1], (H, W) class indices
        probs = np.empty((codec.num_classes, *mask.shape), np.float32)
        inference.segment(image, probs)
        truth = true_objects(pair[1], mask, codec.encoding, rows=rows_of(pair)) if objects else None
        held.append(Held(probs, mask, truth))
    return held


def _within_noise(table: dict, best: object) -> list:
    """The candidates that lose to the best by no more than one standard error of their per-image differences
    from it (`paired_error`)."""
    return [k for k, scored in table.items() if table[best].value - scored.value <= paired_error(table[best], scored)]


def _noise(table: dict, best: object, other: object) -> str:
    """The standard error `_within_noise` compared `other` against, for a reason."""
    return f"{paired_error(table[best], table[other]):.4f}"


def choose_threshold(table: dict[float, Scored], judge: Judge | None = None) -> tuple[float, str]:
    """The threshold nearest 0.5 (the arg-max) among those within one standard error of the best score, and
    why; `table` maps each threshold to its higher-better score (foreground IoU unless `judge` says otherwise)."""
    name, shown = (judge.name, judge.shown) if judge else ("foreground IoU", lambda v: f"{v:.4f}")
    known = {t: s for t, s in table.items() if s.value is not None}
    if not known:
        return 0.5, "threshold 0.5 kept: the validation images hold no foreground to score"
    best = max(known, key=lambda t: (known[t].value, -abs(t - 0.5)))
    chosen = min(_within_noise(known, best), key=lambda t: (round(abs(t - 0.5), 6), -known[t].value))
    reason = f"threshold {chosen}: {name} {shown(known[chosen].value)} on the validation images"
    if chosen != best:
        return chosen, (f"{reason}, within one standard error ({_noise(known, best, chosen)}) of the best, "
                        f"{shown(known[best].value)} at {best}: the cut nearest 0.5 of those")
    at_half = known.get(0.5)
    if at_half is None or chosen == 0.5:
        return chosen, reason
    return chosen, f"{reason} against {shown(at_half.value)} at 0.5 (one standard error: {_noise(known, best, 0.5)})"


def choose_object_size(held: Sequence[Held], threshold: float, class_names: list[str],
                       judge: Judge | None = None, seeds: float | None = None) -> tuple[int, str]:
    """The smallest minimum object size within one standard error of the best score, and why."""
    judge = judge or judge_for("pixels", class_names)
    smallest = min(item.mask.size for item in held)
    table = {size: judge.score(held, threshold, size, seeds) for size in OBJECT_SIZES if size <= smallest // 100}
    table = {size: scored._replace(value=scored.value or 0.0) for size, scored in table.items()}
    best = max(table, key=lambda s: (table[s].value, -s))
    chosen = min(_within_noise(table, best))
    kept = judge.shown(table[0].value)
    if chosen == 0:
        if best == 0:
            return 0, f"small objects kept: removing them did not improve the {judge.name} ({kept})"
        return 0, (f"small objects kept: removing those under {best} px gives {judge.name} "
                   f"{judge.shown(table[best].value)} against {kept}, within one standard error "
                   f"({_noise(table, best, 0)})")
    return chosen, (f"objects under {chosen} px removed: {judge.name} {judge.shown(table[chosen].value)} against "
                    f"{kept} keeping all")


def choose_seeds(held: Sequence[Held], threshold: float, judge: Judge) -> tuple[float | None, str]:
    """Whether closing a boundary map's gaps pays and from which seed level (`infer.boundary_seeds`): of the
    settings within one standard error of the best score, the one that changes the map least (off, else the
    lowest level: the fewest seeds), and why."""
    table = {None: judge.score(held, threshold, 0), **{s: judge.score(held, threshold, 0, s) for s in SEED_LEVELS}}
    table = {level: scored._replace(value=scored.value or 0.0) for level, scored in table.items()}
    best = max(table, key=lambda level: table[level].value)  # ties: the first, off
    near = _within_noise(table, best)
    off = judge.shown(table[None].value)
    if None in near:
        return None, (f"boundary gaps left as thresholded: closing them gives at best {judge.name} "
                      f"{judge.shown(table[best].value)} against {off}, not more than one standard error "
                      f"({_noise(table, best, None)})" if best is not None else
                      f"boundary gaps left as thresholded: closing them did not improve the {judge.name} ({off})")
    chosen = min(level for level in near if level is not None)
    return chosen, (f"boundary gaps closed by a watershed from regions seeded at p(boundary) < {chosen}: "
                    f"{judge.name} {judge.shown(table[chosen].value)} against {off} without, at threshold "
                    f"{threshold}")


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
    gaps = "gaps" in choose and not grown  # a boundary map: pixels decide the cut, regions the gaps
    if "threshold" in choose:
        by = judge_for("pixels", names) if gaps else judge
        threshold, reason = choose_threshold({t: by.score(held, t, 0) for t in THRESHOLDS}, by)
        infer = infer.model_copy(update={cut: threshold})
        reasons.append(f"seed {reason}" if grown else reason)
    seeds = None
    if gaps:
        seeds, reason = choose_seeds(held, infer.threshold, judge)
        infer = infer.model_copy(update={"boundary_seeds": seeds})
        reasons.append(reason)
    if "min_object" in choose:
        size, reason = choose_object_size(held, getattr(infer, cut), names, judge, seeds)
        infer = infer.model_copy(update={"min_object_px": size})
        reasons.append(reason)
    if "tta" in choose:
        infer, held, reason = _judge_flips(predictor, cfg, infer, kept, codec, held, judge, progress)
        reasons.append(reason)
    pixel_cleanup = 0 if grown else infer.min_object_px  # an instance model removes small objects, not pixels
    final = (score_held(held, infer.threshold, pixel_cleanup, names, infer.boundary_seeds)
             if len(kept) == len(pairs) else None)
    chosen = {"threshold": infer.threshold, "seed_threshold": infer.seed_threshold,
              "min_object_px": infer.min_object_px, "tta": infer.tta, "boundary_seeds": infer.boundary_seeds}
    checkpoint["config"]["infer"].update(chosen)
    save_checkpoint(checkpoint, checkpoint_path)
    return chosen, reasons, final


def _judge_flips(predictor: Fn, cfg: Config, infer: InferConfig, pairs: Sequence[Pair], codec: MaskCodec,
                 held: list[Held], judge: Judge, progress: bool) -> tuple[InferConfig, list[Held], str]:
    """Flip TTA when it raises the score by at least TTA_GAIN: the settings and held probabilities to go on
    with, and why."""
    grown = cfg.model.task == "instances"
    flipped_infer = infer.model_copy(update={"tta": "flips"})
    flipped = hold_probabilities(open_inference(predictor, cfg, flipped_infer), pairs, codec, cfg.data.channels,
                                 progress, objects=grown)
    cut = infer.seed_threshold if grown else infer.threshold
    plain, with_flips = (judge.score(h, cut, infer.min_object_px, infer.boundary_seeds).value or 0.0
                         for h in (held, flipped))
    if with_flips - plain >= TTA_GAIN:
        return flipped_infer, flipped, (f"TTA flips: {judge.name} {judge.shown(with_flips)} against "
                                        f"{judge.shown(plain)} without, for 4x the time")
    return infer, held, (f"no TTA: flips give {judge.name} {judge.shown(with_flips)} against "
                         f"{judge.shown(plain)} without, not worth 4x the time")


def _within_memory(pairs: Sequence[Pair], num_classes: int) -> list[Pair]:
    """The first pairs whose (K, H, W) float32 probabilities fit in MAX_HELD bytes (at least one)."""
    kept, used = [], 0
    for pair in pairs:
        width, height = image_size(pair[0])
        used += 4 * num_classes * width * band_height(height, rows_of(pair))
        if kept and used > MAX_HELD:
            break
        kept.append(pair)
    return kept
