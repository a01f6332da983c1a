"""The datasets of `budget.py`: the same splits, the same ground truth and the same scores for every method.

The benchmark (not unetkit) knows each dataset's layout and mask encoding from its SOURCE.md; unetkit's own
runs get only a folder and must find everything out themselves. Ground truth is a (H, W) int64 class map with
255 = ignored (CamVid's void). Scores come from unetkit's confusion matrix (one over all test images) and, for
ISBI 2012, from scikit-image's adapted Rand error and variation of information on the 4-connected cells.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import DATASETS

from unetkit.data.io import read_image, read_raw
from unetkit.em_scores import em_scores
from unetkit.metrics import ConfusionMatrix, scores

IGNORE = 255
SANDSTONE_TRAIN = {(0, 0, 255): 0, (0, 255, 0): 1, (255, 0, 0): 2, (255, 255, 0): 3}  # SOURCE.md table
SANDSTONE_TEST = {33: 0, 201: 1, 231: 2, 65: 3}


@dataclass
class Split:
    images: list[Path]
    masks: list[Path]


@dataclass
class Dataset:
    name: str
    channels: int
    classes: list[str]
    train: Split
    test: Split
    extra_train: Split | None = None  # a validation folder unetkit may use for its choices (CamVid's val/)

    def truth(self, mask: Path, split: str) -> np.ndarray:
        raw = read_raw(mask)
        if self.name == "isbi2012":
            return (raw == 0).astype(np.int64)  # 0 (black) = membrane = class 1
        if self.name == "kvasir_seg":
            return (raw > 127).astype(np.int64)
        if self.name == "camvid":
            out = raw.astype(np.int64)
            out[out == 11] = IGNORE
            return out
        table = SANDSTONE_TRAIN if split == "train" else SANDSTONE_TEST
        out = np.full(raw.shape[:2], IGNORE, dtype=np.int64)
        for key, cls in table.items():
            hit = (raw == np.array(key)).all(-1) if isinstance(key, tuple) else raw == key
            out[hit] = cls
        return out

    def image(self, path: Path) -> np.ndarray:
        """(H, W, C) float32 in [0, 1]."""
        return read_image(path, self.channels)


def _split(folder: Path, stems: set[str] | None = None) -> Split:
    images = sorted(p for p in (folder / "images").iterdir() if stems is None or p.stem in stems)
    masks_by_stem = {p.stem: p for p in (folder / "masks").iterdir()}
    return Split(images, [masks_by_stem[p.stem] for p in images])


def load(name: str, root: Path = DATASETS) -> Dataset:
    base = root / name
    if not base.is_dir():
        raise SystemExit(f"{base} is missing (set UNETKIT_DATASETS)")
    if name == "isbi2012":  # no public test labels: slices 0-24 train, 25-29 test
        return Dataset(name, 1, ["cell", "membrane"], _split(base / "train", {str(i) for i in range(25)}),
                       _split(base / "train", {str(i) for i in range(25, 30)}))
    if name == "kvasir_seg":
        return Dataset(name, 3, ["background", "polyp"], _split(base / "train"), _split(base / "test"))
    if name == "sandstone":
        return Dataset(name, 1, ["phase0", "phase1", "phase2", "phase3"], _split(base / "train"),
                       _split(base / "test"))
    if name == "camvid":
        classes = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                   "bicyclist"]
        return Dataset(name, 3, classes, _split(base / "train"), _split(base / "test"), _split(base / "val"))
    raise SystemExit(f"unknown dataset {name}")


def folder_view(dataset: Dataset, where: Path) -> Path:
    """A DATA folder for `unetkit train DATA`: train/ (and val/) as symbolic links to the shared files."""
    for split, sub in ((dataset.train, "train"), (dataset.extra_train, "val")):
        if split is None:
            continue
        for kind, files in (("images", split.images), ("masks", split.masks)):
            folder = where / sub / kind
            folder.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = folder / f.name
                if not link.exists():
                    os.symlink(f.resolve(), link)
    return where


def score(dataset: Dataset, predictions: list[np.ndarray]) -> dict:
    """Scores of (H, W) class maps, one per test image in order, against the test ground truth."""
    names = dataset.classes + ["(other)"]  # a prediction of a class the benchmark does not score, e.g. void
    confusion = ConfusionMatrix(len(names), ignore_index=IGNORE)
    truths = [dataset.truth(m, "test") for m in dataset.test.masks]
    for pred, truth in zip(predictions, truths, strict=True):
        pred = np.minimum(pred.astype(np.int64), len(dataset.classes))
        confusion.update(torch.from_numpy(pred), torch.from_numpy(truth))
    result = scores(confusion.matrix, names)
    iou = {name: result["per_class"][name]["iou"] for name in dataset.classes}
    known = [v for v in iou.values() if v is not None]
    out: dict = {"miou": sum(known) / len(known), "iou": iou,
                 "shares": _shares(result, confusion.matrix, dataset.classes)}
    if len(dataset.classes) == 2:
        fg = result["per_class"][dataset.classes[1]]
        out.update(dice=fg["dice"], fg_iou=fg["iou"])
    if dataset.name == "isbi2012":
        out.update(_isbi(predictions, truths))
    return out


def _shares(result: dict, matrix: torch.Tensor, classes: list[str]) -> dict:
    """Per class: its share of the scored test pixels in the truth and in the prediction, with the precision and
    recall of `scores` (`result`). A class predicted much less often than the truth holds it, at high precision,
    was labelled more generously in the test masks than the model learnt from the training masks (or was missed)."""
    total = max(result["num_pixels"], 1)
    predicted = matrix.sum(0).tolist()  # (C,) pixels predicted as each class
    return {name: {"truth": result["per_class"][name]["support"] / total, "predicted": predicted[i] / total,
                   "precision": result["per_class"][name]["precision"], "recall": result["per_class"][name]["recall"]}
            for i, name in enumerate(classes)}


def _isbi(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    from skimage.measure import label
    from skimage.metrics import adapted_rand_error, variation_of_information

    pixel, are, vi, own = [], [], [], []
    for pred, truth in zip(predictions, truths, strict=True):
        pixel.append(float((pred != truth).mean()))
        gt_cells = label(truth == 0, connectivity=1)
        pred_cells = label(pred == 0, connectivity=1)
        are.append(float(adapted_rand_error(gt_cells, pred_cells, ignore_labels=(0,))[0]))
        vi.append(float(sum(variation_of_information(gt_cells, pred_cells, ignore_labels=(0,)))))
        em = em_scores(truth == 1, pred == 1)
        own.append({"rand_error": em.rand_error, "v_info": em.v_info})
    n = len(pixel)
    return {"pixel_error": sum(pixel) / n, "adapted_rand_error": sum(are) / n, "vi": sum(vi) / n,
            "unetkit_rand_error": sum(o["rand_error"] for o in own) / n,
            "unetkit_v_info": sum(o["v_info"] for o in own) / n}
