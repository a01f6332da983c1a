"""Augmentation and normalization pipelines, built with albumentations only.

The config holds the training augmentation in albumentations' own serialized form (what `A.to_dict`
writes), so any albumentations transform works without a name registry of ours, and the resolved config
records exactly which pipeline a run used. Masks always follow with nearest-neighbour interpolation
(albumentations' default `mask_interpolation`), so class indices never blend.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2

from unetkit.config import IGNORE_INDEX, DataConfig
from unetkit.data.class_crop import ClassBalancedCrop
from unetkit.data.elastic import GridElastic  # importing it registers it with albumentations' deserializer
from unetkit.errors import UnetkitError


def default_augment() -> list[dict[str, Any]]:
    """The default training augmentation as serialized transforms: flips, 90-degree rotations,
    shift-scale-rotate, brightness/contrast and the paper's elastic deformation. Borders are mirrored."""
    pipeline = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                translate_percent=(-0.0625, 0.0625),
                scale=(0.9, 1.1),
                rotate=(-30, 30),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            GridElastic(grid=3, sigma=10.0, p=0.3),  # the paper's: 3x3 grid, 10 px std, bicubic displacements
        ]
    )
    return A.to_dict(pipeline)["transform"]["transforms"]


def _deserialize(transforms: list[dict[str, Any]]) -> list[A.BasicTransform]:
    """Rebuild transforms from their serialized dicts, naming the entry that albumentations rejects."""
    built = []
    for i, spec in enumerate(transforms):
        name = spec.get("__class_fullname__", "?") if isinstance(spec, dict) else "?"
        try:
            built.append(A.from_dict({"transform": spec}))
        except Exception as err:  # albumentations raises several types for bad specs
            raise UnetkitError(
                f"data.augment[{i}] ({name}): not a valid albumentations transform ({err}); "
                "write entries as A.to_dict does, e.g. {__class_fullname__: HorizontalFlip, p: 0.5}"
            ) from None
    return built


def _normalize(cfg: DataConfig) -> A.Normalize:
    # Images arrive scaled to [0, 1] (see data.io.read_image), hence max_pixel_value=1.
    return A.Normalize(mean=tuple(cfg.mean), std=tuple(cfg.std), max_pixel_value=1.0)


def _crop(cfg: DataConfig) -> A.BasicTransform:
    """A uniformly random crop, or with `foreground_crops` f: with probability f a crop holding a pixel of a
    class other than the background (and not ignored), the class drawn uniformly from those in the image, as
    nnU-Net oversamples foreground."""
    size, share = cfg.crop_size, cfg.foreground_crops
    uniform = A.RandomCrop(height=size, width=size)
    if share == 0:
        return uniform
    uniform.p = 1.0 - share
    on_objects = ClassBalancedCrop(height=size, width=size, skip_values=[cfg.background_class, IGNORE_INDEX],
                                   p=share)
    return A.OneOf([uniform, on_objects], p=1.0)


def train_transform(cfg: DataConfig, margin: int = 0) -> A.Compose:
    """Random crop of `crop_size` (mirror-padded when the image is smaller), augmentation, normalization.

    For a valid network (`margin` > 0) the image is first mirror-extrapolated by `margin` on every side, so
    the crop's output region (its centre, `margin` in from each edge) can fall on any labelled pixel,
    border pixels included, with mirrored context around it, as in the paper. Cropping before augmenting
    keeps the costly transforms (elastic, affine) on the small patch. A weight map passed as `weight`
    follows the mask (nearest-neighbour interpolation). With `foreground_crops` some crops are put on objects.
    """
    size = cfg.crop_size
    augment = default_augment() if cfg.augment is None else cfg.augment
    context = [A.Pad(padding=margin, border_mode=cv2.BORDER_REFLECT_101)] if margin > 0 else []
    return A.Compose(
        [
            *context,
            A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
            _crop(cfg),
            *_deserialize(augment),
            _normalize(cfg),
        ],
        additional_targets={"weight": "mask"},
    )


def eval_transform(cfg: DataConfig) -> A.Compose:
    """Whole images, normalization only: the predictor pads to a size the network accepts."""
    return A.Compose([_normalize(cfg)], additional_targets={"weight": "mask"})

