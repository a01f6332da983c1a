"""Folder datasets: a folder of images and a folder of masks, paired by file stem.

Pairing, splitting and a pre-flight scan live here so that every problem with the user's files is found
before a run folder is created: an image without a mask, a size mismatch or an undeclared mask value stops
`train` with one line naming the file, not an hour into training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from unetkit.config import DataConfig
from unetkit.data.class_weights import ClassPixelCounts
from unetkit.data.intensity import stretch_whole
from unetkit.data.io import image_stem, list_images, read_image, read_raw
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MAX_MASK_VALUES, MaskCodec, near_binary_threshold
from unetkit.data.pairs import Pair, band_pairs, crop_rows, rows_of
from unetkit.data.resample import shrink_image, shrink_mask
from unetkit.data.sampler import seed_pipeline
from unetkit.data.weightmap import WeightMapCache
from unetkit.errors import UnetkitError


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in files:
        stem = image_stem(f)  # `a.ome.tif` pairs with `a.png`
        if stem in found:
            raise UnetkitError(f"{folder}: two files share the name {stem!r} ({found[stem].name}, {f.name}); "
                               "rename one so images and masks pair up unambiguously")
        found[stem] = f
    return found


def _names(stems: list[str]) -> str:
    shown = ", ".join(sorted(stems)[:5])
    return shown + (f" and {len(stems) - 5} more" if len(stems) > 5 else "")


def pair_files(images_dir: Path, masks_dir: Path) -> list[Pair]:
    """Pair images and masks by file stem (`7.png` <-> `7.tif` is fine); every file must have a partner."""
    images = _by_stem(list_images(images_dir), images_dir)
    masks = _by_stem(list_images(masks_dir), masks_dir)
    lonely_images = [s for s in images if s not in masks]
    if lonely_images:
        raise UnetkitError(f"{images_dir}: no mask in {masks_dir} for image(s) {_names(lonely_images)}; "
                           "add the masks or move those images out")
    lonely_masks = [s for s in masks if s not in images]
    if lonely_masks:
        raise UnetkitError(f"{masks_dir}: no image in {images_dir} for mask(s) {_names(lonely_masks)}; "
                           "add the images or move those masks out")
    return [Pair(images[s], masks[s]) for s in sorted(images)]


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/validation split: the same files, seed and fraction give the same split."""
    if len(pairs) < 2:
        raise UnetkitError(f"only {len(pairs)} image/mask pair found: need at least 2 to hold out validation, "
                           "or give data.val_images / data.val_masks")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [pairs[i] for i in train], [pairs[i] for i in val]


def split_by_name(pairs: list[Pair], val_files: list[str]) -> tuple[list[Pair], list[Pair]]:
    """A fixed split: the pairs whose image stem is listed go to validation."""
    stems = {p[0].stem for p in pairs}
    missing = [s for s in val_files if s not in stems]
    if missing:
        raise UnetkitError(f"data.val_files names {_names(missing)}, not found among the training images")
    chosen = set(val_files)
    train = [p for p in pairs if p[0].stem not in chosen]
    if not train:
        raise UnetkitError("data.val_files holds out every image; leave some for training")
    return train, [p for p in pairs if p[0].stem in chosen]


def dataset_pairs(cfg: DataConfig) -> tuple[list[Pair], list[Pair]]:
    """The training and validation pairs a config describes (separate folders, else a split)."""
    train = pair_files(cfg.path(cfg.train_images), cfg.path(cfg.train_masks))
    if (cfg.val_images is None) != (cfg.val_masks is None):
        raise UnetkitError("data.val_images and data.val_masks go together: give both or neither")
    if cfg.val_images is not None and cfg.val_masks is not None:
        return train, pair_files(cfg.path(cfg.val_images), cfg.path(cfg.val_masks))
    if cfg.val_files is not None:
        return split_by_name(train, cfg.val_files)
    if cfg.val_split == "bands":
        return band_pairs(train, cfg.val_fraction)
    return split_pairs(train, cfg.val_fraction, cfg.split_seed)


def test_pairs(cfg: DataConfig) -> list[Pair]:
    """The test pairs a config names (`data.test_images`, `data.test_masks`)."""
    if cfg.test_images is None or cfg.test_masks is None:
        raise UnetkitError("this run's config has no data.test_images / data.test_masks; give --data DIR instead")
    return pair_files(cfg.path(cfg.test_images), cfg.path(cfg.test_masks))


def load_pair(pair: Pair, channels: int, codec: MaskCodec, masks: DecodedMasks | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair: image (H, W, channels) float32 in [0, 1], mask (H, W) uint8 class indices, both cut to
    the pair's band of rows. With `masks` the whole mask is decoded once and kept there (read-only) for the
    next call, for either band of its image."""
    image = read_image(pair[0], channels)
    mask = masks.get(pair[1]) if masks is not None else None
    if mask is None:
        mask = load_mask(pair, codec, image.shape[:2])
        mask = masks.put(pair[1], mask) if masks is not None else mask
    rows = rows_of(pair)
    return crop_rows(image, rows), crop_rows(mask, rows)


def load_mask(pair: Pair, codec: MaskCodec, size: tuple[int, ...]) -> np.ndarray:
    """The (H, W) uint8 class indices of a pair's whole mask (not cut to its band), checked against its
    image's (H, W) `size`."""
    raw = read_raw(pair[1])
    try:
        mask = codec.decode(raw, str(pair[1]))
    except UnetkitError as err:
        raise UnetkitError(swap_hint(pair, raw) or str(err)) from None
    if tuple(size[:2]) != mask.shape[:2]:
        raise UnetkitError(f"{pair[1]}: mask is {mask.shape[1]}x{mask.shape[0]} but image {pair[0].name} is "
                           f"{size[1]}x{size[0]} (width x height); masks must match their images (and --level)")
    return mask


def _distinct(raw: np.ndarray, limit: int) -> int:
    """Distinct values (gray) or colours (RGB) of `raw`, counted exactly up to `limit` + 1."""
    flat = raw.reshape(-1, raw.shape[2]) if raw.ndim == 3 else raw.reshape(-1, 1)
    sample = flat[:: max(1, len(flat) // 200_000)]  # a strided sample is enough to tell an image from a mask
    return min(len(np.unique(sample, axis=0)), limit + 1)


def swap_hint(pair: Pair, raw_mask: np.ndarray) -> str | None:
    """A one-line diagnosis when the "mask" looks like a photograph: many values or colours. When the "image"
    has few values (it looks like a mask), the folders are most likely swapped; say which settings to exchange."""
    many = _distinct(raw_mask, MAX_MASK_VALUES)
    if many <= MAX_MASK_VALUES:
        return None
    if raw_mask.ndim == 2 and np.issubdtype(raw_mask.dtype, np.integer):
        values, counts = np.unique(raw_mask, return_counts=True)
        if near_binary_threshold(values, counts) is not None:
            return None  # a compressed binary mask: the codec's message suggests data.mask.threshold
    kind = "colours" if raw_mask.ndim == 3 and raw_mask.shape[2] >= 3 else "values"
    few = _distinct(read_raw(pair[0]), MAX_MASK_VALUES)
    if few <= MAX_MASK_VALUES:
        return (f"{pair[1]}: this mask holds more than {MAX_MASK_VALUES} distinct {kind} and its image "
                f"{pair[0].name} only {few}: the image and mask folders look swapped; exchange data.train_images "
                "and data.train_masks (or --images and --masks)")
    return (f"{pair[1]}: this mask holds more than {MAX_MASK_VALUES} distinct {kind}: it looks like an image, not "
            "a mask; check the masks folder (unetkit data inspect DIR shows what it holds)")


def scan_pairs(pairs: list[Pair], channels: int, codec: MaskCodec, masks: DecodedMasks | None = None,
               sizes: list[tuple[int, int]] | None = None) -> ClassPixelCounts:
    """Read every pair once, so bad files fail before training starts; returns the masks' class statistics,
    from which class weights are computed without reading the masks a second time. With `masks` the decoded
    masks are kept there for training; `sizes`, when given, receives each pair's (H, W) (the run report's
    data summary)."""
    total = ClassPixelCounts.zeros(codec.num_classes)
    for pair in pairs:
        _, mask = load_pair(pair, channels, codec, masks)
        total = total + ClassPixelCounts.of_mask(mask, codec.num_classes)
        if sizes is not None:
            sizes.append(mask.shape)
    return total


class FolderDataset(Dataset):
    """Image/mask pairs from two folders, transformed by an albumentations pipeline.

    Items are dicts: `image` (C, H, W) float32 normalized, `mask` (H, W) int64 class indices with
    IGNORE_INDEX for ignored pixels, and with `weights` given, `weight` (H, W) float32: the paper's border
    weight map, computed once per mask and transformed with it. With `repeats > 1` each image is visited
    that many times per epoch, which is how several random crops per image are drawn. `masks` keeps the
    decoded masks between epochs (`DecodedMasks`). `per_image` stretches
    each whole image by its own intensity range before the transform (`data.normalize: image`); `scale` < 1
    shrinks image and mask first (`data.scale`).
    """

    def __init__(
        self,
        images_dir: Path | None = None,
        masks_dir: Path | None = None,
        *,
        pairs: list[Pair] | None = None,
        channels: int = 1,
        codec: MaskCodec,
        transform: Callable[..., dict] | None = None,
        repeats: int = 1,
        weights: WeightMapCache | None = None,
        masks: DecodedMasks | None = None,
        per_image: bool = False,
        scale: float = 1.0,
    ) -> None:
        if pairs is None:
            if images_dir is None or masks_dir is None:
                raise ValueError("give images_dir and masks_dir, or pairs")
            pairs = pair_files(Path(images_dir), Path(masks_dir))
        self.pairs = pairs
        self.channels = channels
        self.codec = codec
        self.transform = transform
        self.repeats = repeats
        self.weights = weights
        self.masks = masks
        self.per_image = per_image
        self.scale = scale

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Item `index`; given `(index, seed)` (from EpochSampler) the augmentation is drawn from `seed`."""
        seed = None
        if isinstance(index, tuple):
            index, seed = index
        pair = self.pairs[index % len(self.pairs)]
        image, mask = load_pair(pair, self.channels, self.codec, self.masks)
        image, mask = shrink_image(image, self.scale), shrink_mask(mask, self.scale)
        targets = {"image": stretch_whole(image) if self.per_image else image, "mask": mask}
        if self.weights is not None:
            targets["weight"] = self.weights.get(pair[1], mask)
        if self.transform is not None:
            if seed is not None and isinstance(self.transform, A.BaseCompose):
                seed_pipeline(self.transform, seed)
            targets = self.transform(**targets)
        item = {"image": torch.from_numpy(np.ascontiguousarray(targets["image"].transpose(2, 0, 1), np.float32)),
                "mask": torch.from_numpy(np.asarray(targets["mask"]).astype(np.int64))}  # a new array
        if "weight" in targets:
            item["weight"] = torch.from_numpy(np.ascontiguousarray(targets["weight"], np.float32))
        return item
