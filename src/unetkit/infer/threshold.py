"""Choosing a binary model's probability threshold on the validation images.

A network trained with cross-entropy on sparse foreground is often under-confident on thin or faint objects:
p(foreground) of 0.3 on a true nucleus is common, and the arg-max (0.5) misses it. The threshold that gives
the best foreground IoU on the validation split is a cheap, honest improvement: the validation images are not
the ones the user will judge the model on (the test split never takes part), and the chosen value is stored
in the checkpoint, so `predict`, `evaluate` and exports apply exactly what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from unetkit.data.dataset import Pair, load_pair
from unetkit.data.masks import MaskCodec
from unetkit.infer.inference import Inference, model_predictor, open_inference, validation_settings
from unetkit.infer.predictor import classes_of
from unetkit.metrics import ConfusionMatrix, scores
from unetkit.runtime import resolve_device

CANDIDATES = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95


def threshold_scores(inference: Inference, pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                     candidates: Sequence[float] = CANDIDATES, progress: bool = False) -> dict[float, float | None]:
    """Foreground IoU of every candidate threshold over `pairs`, from one pass of the network per image (the
    probabilities are computed once and thresholded at each candidate; ignored pixels count nowhere)."""
    confusions = {t: ConfusionMatrix(2) for t in candidates}
    for pair in tqdm(pairs, desc="threshold", disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, channels, codec)  # (H, W, C) in [0, 1], (H, W) class indices
        probs = np.empty((2, *mask.shape), np.float32)  # (2, H, W)
        inference.segment(image, probs)
        probabilities, target = torch.from_numpy(probs), torch.from_numpy(mask).long()
        for threshold, confusion in confusions.items():
            confusion.update(classes_of(probabilities, threshold), target)
    return {t: scores(c.matrix, ["background", "foreground"])["per_class"]["foreground"]["iou"]
            for t, c in confusions.items()}


def choose_threshold(table: dict[float, float | None]) -> tuple[float, str]:
    """The threshold with the best foreground IoU (ties: the one nearest 0.5, the arg-max), and why."""
    known = {t: iou for t, iou in table.items() if iou is not None}
    if not known:
        return 0.5, "threshold 0.5 kept: the validation images hold no foreground to score"
    best = max(known, key=lambda t: (known[t], -abs(t - 0.5)))
    at_half = known.get(0.5)
    versus = f" against {at_half:.4f} at 0.5" if at_half is not None and best != 0.5 else ""
    return best, f"threshold {best}: foreground IoU {known[best]:.4f} on the validation images{versus}"


def tune_threshold(checkpoint_path: Path, pairs: Sequence[Pair], codec: MaskCodec, progress: bool = False
                   ) -> tuple[float, str]:
    """Choose the threshold on `pairs` (the validation images) with the checkpoint's weights, through the run's
    own validation inference, and store it in the checkpoint's config; returns it with its reason."""
    checkpoint = load_checkpoint(checkpoint_path)
    model, cfg = model_from_checkpoint(checkpoint, str(checkpoint_path))
    inference = open_inference(model_predictor(model, resolve_device(cfg.train.device)), cfg, validation_settings(cfg))
    threshold, reason = choose_threshold(threshold_scores(inference, pairs, codec, cfg.data.channels,
                                                          progress=progress))
    checkpoint["config"]["infer"]["threshold"] = threshold
    save_checkpoint(checkpoint, checkpoint_path)
    return threshold, reason
