"""One label per object: the objects of a prediction, their table, and the true objects to score them.

A semantic model's objects are the 4-connected components of its non-background classes (class 0 is the
background): the baseline a user has without an instance model. Two objects that touch in the prediction
become one, which is what the instance scores (`instance_metrics`) then show. A boundary map (binary masks
whose class 1 is a thin network, as EM membranes; `train.choose_by: regions`) is the other way round: its
objects are the regions the network encloses, the 4-connected components of class 0.

An instance model (`model.task: instances`) predicts background / interior / boundary. Its objects are grown
from seeds: the 4-connected regions where p(interior) > `infer.seed_threshold`, each grown by watershed
(scikit-image) downhill in p(interior) over the foreground (p(background) < 0.5), so the boundary pixels
between two touching objects are shared out between them instead of merging them. Objects under
`infer.min_object_px` are dropped. Both run on the whole stitched image, so a tile or band border never
cuts an object in two.

True objects for scoring come from an instance label image when the dataset has one: `instances/NAME.*`
beside the `masks/` folder (0 = background, every other value one object; ids need not be contiguous).
Without one, they are the connected components of the true mask's non-background classes, which is right
when the true objects do not touch.

Outputs of `predict --instances`: `NAME_instances.png` (16-bit labels; `NAME_instances.tif` when there are
more than 65,535 objects) and `NAME_objects.csv` (one row per object: scikit-image's `regionprops_table`; when
the input's physical pixel size is known, also `physical_area` in unit², `physical_diameter` (of the circle of
that area) in unit, and `unit`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
from skimage.measure import label, regionprops_table
from skimage.segmentation import find_boundaries, relabel_sequential, watershed

from unetkit.atomic import atomic_write
from unetkit.config import Config
from unetkit.data.io import read_raw
from unetkit.data.pairs import Rows, crop_rows
from unetkit.data.pixel_size import PixelSize
from unetkit.data.writers import write_mask_rows
from unetkit.errors import UnetkitError

INSTANCE_SUFFIXES = (".png", ".tif", ".tiff")
TABLE = ("label", "area", "centroid", "bbox", "equivalent_diameter_area", "eccentricity", "intensity_mean")


def objects_of(classes: np.ndarray) -> np.ndarray:
    """(H, W) int32 object labels (0 = background) of an (H, W) class map: its 4-connected components of any
    class other than 0; a component of one class only (two touching classes are two objects)."""
    shifted = classes.astype(np.int32) + 1  # label() treats 0 as background: class 0 -> 1 is cut out below
    shifted[classes == 0] = 0
    return label(shifted, connectivity=1).astype(np.int32)


def grow_objects(probs: np.ndarray, seed_threshold: float = 0.5, min_object_px: int = 0) -> np.ndarray:
    """(H, W) int32 labels 1..N from (3, H, W) background / interior / boundary probabilities (see above)."""
    interior, foreground = probs[1], probs[0] < 0.5
    seeds = label((interior > seed_threshold) & foreground, connectivity=1)
    labels = watershed(-interior, markers=seeds, mask=foreground, connectivity=1)
    if min_object_px:
        sizes = np.bincount(labels.ravel())
        labels[(sizes < min_object_px)[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


ObjectRule = Literal["grown", "regions", "components"]


def object_rule(cfg: Config) -> ObjectRule:
    """How a model's predictions become objects: grown from seeds (an instance model), the regions its class 1
    encloses (a boundary map, `train.choose_by: regions`: membranes between cells, whose objects are the
    cells), else the components of its non-background classes."""
    if cfg.model.task == "instances":
        return "grown"
    return "regions" if cfg.train.choose_by == "regions" and cfg.data.num_classes == 2 else "components"


def objects_from(rule: ObjectRule, classes: np.ndarray, probs: np.ndarray | None, seed_threshold: float = 0.5,
                 min_object_px: int = 0) -> np.ndarray:
    """The predicted objects of one image (see `object_rule`): grown from `probs` (K, H, W), the 4-connected
    regions of class 0 of the (H, W) class map (as `evaluate --em` counts them), or its components."""
    if rule == "grown":
        if probs is None:
            raise ValueError("an instance model's objects are grown from its probabilities")
        return grow_objects(probs, seed_threshold, min_object_px)
    if rule == "regions":
        return label(classes == 0, connectivity=1).astype(np.int32)
    return objects_of(classes)


def true_objects(mask_path: Path, classes: np.ndarray, encoding: str = "", rule: ObjectRule = "components",
                 rows: Rows | None = None) -> np.ndarray:
    """The true (H, W) object labels of one image: the mask itself when it is an instance label image
    (`encoding` "instances"), its instance label image when the dataset has one (`instances/` beside
    `masks/`, same stem), else the objects of its class map `classes` by `rule` (regions or components).
    With `rows`, `classes` is that band of the image's rows and the label images are cut to it too."""
    if encoding == "instances":
        return crop_rows(read_raw(Path(mask_path)), rows).astype(np.int64)
    folder = Path(mask_path).parent.parent / "instances"
    for suffix in INSTANCE_SUFFIXES:
        found = folder / f"{Path(mask_path).stem}{suffix}"
        if found.is_file():
            labels = crop_rows(read_raw(found), rows)
            if labels.ndim != 2 or labels.shape != classes.shape:
                raise UnetkitError(f"{found}: an instance label image must be one channel of the mask's size "
                                   f"{classes.shape[1]}x{classes.shape[0]}")
            return labels.astype(np.int64)
    return objects_from("regions", classes, None) if rule == "regions" else objects_of(classes)


def object_table(labels: np.ndarray, image: np.ndarray, pixel_size: PixelSize | None = None
                 ) -> dict[str, np.ndarray]:
    """One row per object of (H, W) `labels`: label, area, centroid, bounding box, equivalent diameter,
    eccentricity and the mean of each image channel ((H, W, C) `image` in [0, 1]); with `pixel_size` also the
    physical area (pixels times the pixel's area, right for non-square pixels too), the diameter of the circle of
    that area, and the unit."""
    table = regionprops_table(labels, intensity_image=image, properties=TABLE)
    if pixel_size is not None:
        area = table["area"] * pixel_size.y * pixel_size.x
        table["physical_area"] = area
        table["physical_diameter"] = np.sqrt(4 * area / np.pi)
        table["unit"] = np.full(len(area), pixel_size.unit)
    return table


def write_objects(labels: np.ndarray, image: np.ndarray, out: Path, stem: str,
                  pixel_size: PixelSize | None = None) -> list[Path]:
    """Write `STEM_instances.png` (or `.tif` over 65,535 objects) and `STEM_objects.csv` (`object_table`);
    returns both paths."""
    count = int(labels.max(initial=0))
    if count > 65535:
        import tifffile

        path = out / f"{stem}_instances.tif"
        with atomic_write(path, "wb") as f:
            tifffile.imwrite(f, labels.astype(np.uint32), compression="zlib")
    else:
        path = out / f"{stem}_instances.png"
        write_mask_rows(path, labels.shape[0], [labels.astype(np.uint16)])
    table = object_table(labels, image, pixel_size)
    columns = list(table)
    csv_path = out / f"{stem}_objects.csv"
    with atomic_write(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in zip(*(table[c] for c in columns), strict=True):
            writer.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else v if isinstance(v, str) else int(v)
                             for v in row])
    return [path, csv_path]


def contour_overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the (H, W, C) image in [0, 1] with every object's outline in its own colour."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    out = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    edges = find_boundaries(labels, mode="inner")
    hues = np.random.default_rng(0).integers(64, 256, size=(int(labels.max(initial=0)) + 1, 3), dtype=np.uint8)
    out[edges] = hues[labels[edges]]
    return out
