"""The `data` section: where the images and masks are, how masks encode classes, how images are read.

Also the base of every section, `Strict`: unknown keys are errors, and assignments are validated too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IGNORE_INDEX = 255  # internal label of pixels that count in neither loss nor metrics (padding, "void")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskConfig(Strict):
    """How the mask files encode classes; predictions are written back in the same encoding."""

    # binary: two raw values ({0,255} or {0,1}); `foreground_value` is class 1, the other value class 0.
    # index: the raw value is the class index. palette: RGB colour of class i is `palette[i]`.
    # gray_values: raw gray value of class i is `values[i]` (arbitrary, unordered values).
    # instances: label images (0 = background, every other value one object, 8/16-bit PNG or TIFF); with 2
    # classes the target is object vs background, with 3 background / interior / boundary (see boundary_px).
    encoding: Literal["binary", "index", "palette", "gray_values", "instances"] = "index"
    foreground_value: int = 255
    palette: list[tuple[int, int, int]] | None = None
    values: list[int] | None = None
    # Raw value (index / gray_values) or colour (palette) of pixels to ignore, e.g. CamVid's void = 11.
    ignore_value: int | None = None
    ignore_color: tuple[int, int, int] | None = None
    # binary only: masks that are almost binary (JPEG-compressed or anti-aliased, e.g. values 0-8 and 247-255)
    # are read as "raw value > threshold" = the high value (255), else the low value (0); e.g. threshold: 127
    threshold: int | None = Field(None, ge=0)
    boundary_px: int = Field(2, ge=1)  # instances, 3 classes: width of each object's boundary ring

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.threshold is not None and self.encoding != "binary":
            raise ValueError("data.mask.threshold is for encoding 'binary' only")
        if self.encoding == "palette" and not self.palette:
            raise ValueError("encoding 'palette' needs `palette`: one [R, G, B] colour per class")
        if self.encoding == "gray_values" and not self.values:
            raise ValueError("encoding 'gray_values' needs `values`: one gray value per class")
        return self


class WeightMapConfig(Strict):
    """The paper's pixel-wise weight map (eq. 2): w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))."""

    object_classes: list[int] = Field(default_factory=lambda: [1])  # classes whose connected regions are objects
    w0: float = Field(10.0, ge=0.0)  # weight of the border term (paper: 10)
    sigma: float = Field(5.0, gt=0.0)  # its width in pixels (paper: 5)
    class_balance: bool = True  # w_c balances class frequencies per image; false = 1 everywhere
    cache_dir: str | None = None  # also keep computed maps on disk here (.npy), not only in memory


class DataConfig(Strict):
    root: str = "."  # base folder for the relative paths below
    train_images: str = "train/images"
    train_masks: str = "train/masks"
    val_images: str | None = None  # separate validation folders; when absent a split of train is used
    val_masks: str | None = None
    test_images: str | None = None  # held-out test folders for `evaluate --split test`
    test_masks: str | None = None
    test_mask: MaskConfig | None = None  # encoding of the test masks when it differs from `mask`
    val_files: list[str] | None = None  # file stems held out for validation (a fixed split), e.g. ["25", "26"]
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of train files (or of each one's rows) held out
    # with no val folders: hold out whole images, or the bottom val_fraction of every image's rows ("bands")
    val_split: Literal["images", "bands"] = "images"
    split_seed: int = 0  # makes that split deterministic
    channels: Literal[1, 3] = 1  # 1 = gray, 3 = RGB; images are converted on read
    # larger images are refused (a tiny compressed file can unpack to gigabytes); None = no limit
    max_image_pixels: int | None = Field(1_073_741_824, gt=0)
    classes: list[str] = Field(default_factory=lambda: ["background", "foreground"], min_length=2)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    crop_size: int = Field(256, gt=0)  # training input size (random crops); valid U-Nets need a valid size
    crops_per_image: int = Field(1, gt=0)  # random crops drawn from each training image per epoch
    batch_size: int = Field(4, gt=0)
    num_workers: int = Field(0, ge=0)
    # Training augmentation as albumentations' own serialized transforms (A.to_dict format, list of
    # {"__class_fullname__": ..., params}). None = the built-in default pipeline; [] = no augmentation.
    augment: list[dict[str, Any]] | None = None
    weight_map: WeightMapConfig | None = None  # per-pixel loss weights for the `weighted_ce` loss term
    mean: list[float] = Field(default_factory=lambda: [0.5])  # per channel, on intensities scaled to [0, 1]
    std: list[float] = Field(default_factory=lambda: [0.25])
    # dataset: intensities scaled by their dtype's range only, then (x - mean) / std. image: each image's own
    # 0.5th..99.5th percentile range per channel is first stretched to [0, 1] (mixed acquisitions: exposure,
    # stain or gain that differ from image to image), computed over the whole image, never per tile or crop
    normalize: Literal["dataset", "image"] = "dataset"
    # share of training crops placed on a pixel of a class other than `background_class` (sparse objects
    # would otherwise be missed by most random crops); 0 = every crop uniformly random
    foreground_crops: float = Field(0.0, ge=0.0, le=1.0)
    # train and predict at this fraction of the resolution (objects much larger than a crop); predictions and
    # scores stay at the original size
    scale: float = Field(1.0, gt=0.0, le=1.0)
    background_class: int = Field(0, ge=0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def path(self, relative: str) -> Path:
        """Resolve a data path against `root` (absolute paths stay as they are)."""
        return Path(self.root) / relative
