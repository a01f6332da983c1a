"""Choosing ensemble weights on labelled images, and the `ensemble` command's Python twin.

Every member runs once per image (through `open_inference`, the whole-image / tiled path and TTA of `evaluate`); all
candidate weightings are then scored on those probabilities, each with its own confusion matrix over all
pixels of all images. Because counts simply add up over images, nothing is kept from one image to the next:
memory is that of one image's member probabilities, `(M, K, H, W)` float32, whatever the number of images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from unetkit.checkpoint import load_checkpoint
from unetkit.config import IGNORE_INDEX, Config, DataConfig, InferConfig
from unetkit.data.dataset import Pair, load_pair
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.ensemble import Ensemble, load_members, normalize_weights, write_ensemble
from unetkit.infer.evaluate import evaluation_pairs
from unetkit.infer.inference import InferOptions, open_inference
from unetkit.infer.predictor import Fn, classes_of
from unetkit.metrics import ConfusionMatrix, scores
from unetkit.runtime import resolve_device

MAX_COMBINATIONS = 20_000  # beyond this a finer grid costs more than it can gain


def simplex_grid(count: int, step: float) -> list[list[float]]:
    """Every weight vector of `count` multiples of `step` summing to 1 (3 members, step 0.1: 66 vectors)."""
    parts = round(1 / step) if step > 0 else 0
    if not 0 < step <= 1 or abs(parts * step - 1) > 1e-6:
        raise UnetkitError(f"grid step {step} must divide 1 into equal parts, e.g. 0.1, 0.05 or 0.25")
    total = math.comb(parts + count - 1, count - 1)
    if total > MAX_COMBINATIONS:
        raise UnetkitError(f"a grid step of {step} gives {total} weightings for {count} members; use a coarser step")
    grid = []
    for bars in itertools.combinations(range(parts + count - 1), count - 1):  # stars and bars
        edges = (-1, *bars, parts + count - 1)
        grid.append([(edges[i + 1] - edges[i] - 1) / parts for i in range(count)])
    return grid


def weighting_confusions(members: Sequence[Fn], pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                         weightings: torch.Tensor, infer: InferConfig, progress: bool = False) -> torch.Tensor:
    """(W, K, K) confusion matrices, one per row of the (W, M) `weightings`, over all pixels of all pairs.

    `members` take images scaled to [0, 1] (see `Normalized`); ignored pixels count nowhere.
    """
    k = codec.num_classes
    scale_only = Config(data=DataConfig(channels=channels, classes=[str(c) for c in range(max(k, 2))],
                                        mean=[0.0], std=[1.0]))
    inferences = [open_inference(member, scale_only, infer) for member in members]
    confusions = [ConfusionMatrix(k) for _ in weightings]
    for pair in tqdm(pairs, desc="ensemble", disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, channels, codec)  # (H, W, C) in [0, 1], (H, W) class indices
        target = torch.from_numpy(mask).reshape(-1).long()
        keep = target != IGNORE_INDEX  # ConfusionMatrix skips these too; dropping them first saves the sums
        probs = np.empty((len(inferences), k, *mask.shape), np.float32)  # (M, K, H, W)
        for i, inference in enumerate(inferences):
            inference.segment(image, probs[i])
        kept = torch.from_numpy(probs).reshape(len(inferences), k, -1)[:, :, keep]  # (M, K, P)
        for confusion, weights in zip(confusions, weightings, strict=True):
            # summed member by member, as `Ensemble` does, so a saved weighting predicts exactly what was scored
            total = kept[0] * weights[0]  # (K, P)
            for member, weight in zip(kept[1:], weights[1:], strict=True):
                total = total + member * weight
            confusion.update(classes_of(total, infer.threshold, dim=0), target[keep])
    return torch.stack([confusion.matrix for confusion in confusions])


def search_weights(members: Sequence[tuple[str, Fn]], pairs: Sequence[Pair], codec: MaskCodec, channels: int,
                   grid_step: float | None = 0.1, infer: InferConfig | None = None,
                   weights: Sequence[float] | None = None, progress: bool = False) -> dict[str, Any]:
    """Score each member, equal weights, given `weights` and (unless `grid_step` is None) every weighting on the
    simplex grid, all from one pass over `pairs`; mIoU as `evaluate` computes it.

    `members` are (name, predictor taking [0, 1] input) pairs. Returns {"members": [{"checkpoint", "miou"}],
    "equal_weights_miou", "images"}, with "weights" / "weights_miou" when weights are given and
    "best_weights" / "best_miou" / "grid_step" / "combinations" when searching (ties: first grid point).
    """
    names = [name for name, _ in members]
    count = len(members)
    vectors = [[float(i == j) for j in range(count)] for i in range(count)] + [[1.0 / count] * count]
    given = normalize_weights(weights, count) if weights is not None else None
    if given is not None:
        vectors.append(given)
    grid = simplex_grid(count, grid_step) if grid_step is not None else []
    table = torch.tensor(vectors + grid, dtype=torch.float32)  # (W, M)
    confusions = weighting_confusions([fn for _, fn in members], pairs, codec, channels, table,
                                      infer or InferConfig(), progress)
    labels = [str(c) for c in range(codec.num_classes)]
    mious = [scores(matrix, labels)["miou"] for matrix in confusions]
    report: dict[str, Any] = {
        "members": [{"checkpoint": name, "miou": mious[i]} for i, name in enumerate(names)],
        "equal_weights_miou": mious[count],
        "images": len(pairs),
    }
    if given is not None:
        report.update(weights=given, weights_miou=mious[count + 1])
    if grid:
        first = len(vectors)
        ranked = [-1.0 if m is None else m for m in mious[first:]]
        best = max(range(len(grid)), key=ranked.__getitem__)
        report.update(best_weights=grid[best], best_miou=mious[first + best],
                      grid_step=grid_step, combinations=len(grid))
    return report


def ensemble(checkpoints: Sequence[str | Path], data: str | Path | None = None, *, split: str | None = None,
             images: str | Path | None = None, masks: str | Path | None = None, weights: Sequence[float] | None = None,
             search: bool = False, output: str | Path | None = None, grid_step: float = 0.1,
             options: InferOptions | None = None, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Score the members, their equal-weight ensemble and given or searched weights on labelled images, then
    write the ensemble file (default `ensemble.pt` in the current folder) with the chosen weights. `options`
    override the first member's inference settings (tile, overlap, TTA, ...).

    Saved weights: the searched ones with `search`, else `weights`, else equal. Returns the `search_weights`
    report plus "saved_weights", "saved_miou", "ensemble" (the file) and "tta".
    """
    if weights is not None and search:
        raise UnetkitError("give --weights or --search, not both")
    paths = [Path(c) for c in checkpoints]
    out = Path(output) if output else Path("ensemble.pt")
    if out.resolve() in {p.resolve() for p in paths}:
        raise UnetkitError(f"output {out} is one of the member checkpoints; choose another -o")
    loaded = [load_checkpoint(p) for p in paths]
    sources = [str(p) for p in paths]
    members, cfg = load_members(loaded, sources, resolve_device(device))
    Ensemble(members, weights if weights is not None else [1.0] * len(members), sources)  # geometry, weights
    infer = (options or InferOptions()).applied_to(cfg)
    pairs, codec = evaluation_pairs(cfg, data, split, images, masks)
    report = search_weights(list(zip(sources, members, strict=True)), pairs, codec, cfg.data.channels,
                            grid_step if search else None, infer, weights, progress)
    if search:
        saved, miou = report["best_weights"], report["best_miou"]
    elif weights is not None:
        saved, miou = report["weights"], report["weights_miou"]
    else:
        saved, miou = [1.0 / len(members)] * len(members), report["equal_weights_miou"]
    report.update(saved_weights=saved, saved_miou=miou, tta=infer.tta,
                  data=split if split else str(data or images))
    write_ensemble(out, loaded, sources, saved, scores=dict(report))
    report["ensemble"] = str(out)
    return report


def format_ensemble_report(report: dict[str, Any]) -> str:
    """The report as one plain-text table: each member, equal weights, given/searched weights; mIoU each."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    def listed(weights: Sequence[float]) -> str:
        return ", ".join(f"{w:.3g}" for w in weights)

    rows = [(m["checkpoint"], m["miou"]) for m in report["members"]]
    rows.append(("equal weights", report["equal_weights_miou"]))
    if "weights" in report:
        rows.append((f"weights {listed(report['weights'])}", report["weights_miou"]))
    if "best_weights" in report:
        rows.append((f"searched weights {listed(report['best_weights'])}", report["best_miou"]))
    width = max(len("member"), *(len(name) for name, _ in rows))
    lines = [f"{'member':<{width}}  {'mIoU':>7}"]
    lines += [f"{name:<{width}}  {num(miou):>7}" for name, miou in rows]
    if "best_weights" in report:
        lines.append(f"(grid step {report['grid_step']}: {report['combinations']} weightings tried "
                     f"on {report['images']} image(s))")
    if "ensemble" in report:
        lines.append(f"ensemble written to {report['ensemble']} with weights {listed(report['saved_weights'])}")
    return "\n".join(lines)
