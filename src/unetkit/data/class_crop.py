"""A crop put on an object of a class drawn uniformly from the classes the mask holds.

albumentations' `CropNonEmptyMaskIfExists` centres the crop near a random non-background pixel, so a class
gets crops in proportion to its pixels: with road, sky and buildings covering most of a street scene, a
pole or a cyclist (under 1% of the pixels) is almost never the reason a crop was placed. nnU-Net's sampler
draws the class first, uniformly among the foreground classes present in the image, then a pixel of that
class; every rare class then gets its share of the oversampled crops. For a binary mask the two are the
same. This transform draws the class and leaves the crop placement to albumentations.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field


class ClassBalancedCrop(A.CropNonEmptyMaskIfExists):
    """Crop of `height` x `width` holding a pixel of a class drawn uniformly from those present in the mask,
    `skip_values` (background, void) excepted; a uniformly random crop when no other class is present.

    The mask is `(H, W)` of class indices; the crop falls inside the image, as albumentations places it."""

    class InitSchema(BaseTransformInitSchema):
        height: int = Field(ge=1)
        width: int = Field(ge=1)
        skip_values: list[int]

    def __init__(self, height: int, width: int, skip_values: list[int], p: float = 1.0) -> None:
        super().__init__(height=height, width=width, ignore_values=None, p=p)
        self.skip_values = [int(v) for v in skip_values]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Pick the class, then let the parent put the crop on a random pixel of it."""
        mask = np.asarray(data["mask"])
        present = [int(v) for v in np.unique(mask) if int(v) not in self.skip_values]
        if present:
            chosen = (mask == self.py_random.choice(present)).astype(np.uint8)
        else:
            chosen = np.zeros(mask.shape[:2], np.uint8)
        return super().get_params_dependent_on_data(params, {"mask": chosen})

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "skip_values")
