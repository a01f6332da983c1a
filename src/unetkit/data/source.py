"""Images to predict, read lazily where the file allows, and the per-tile preparation of their pixels.

An uncompressed 8/16-bit TIFF is memory-mapped (tifffile), so a 16384x16384 slide is read tile by tile
instead of into memory; a tiled, compressed or pyramidal TIFF / OME-TIFF and an OME-Zarr folder are read region
by region through zarr (`unetkit.data.lazy_image`); every other file is decoded whole (PNG and JPEG decoders
cannot seek to a region).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch

from unetkit.config import DataConfig
from unetkit.data.intensity import SAMPLE_PIXELS, image_range, stretch
from unetkit.data.io import TIFF_SUFFIXES, check_pixel_limit, convert_channels, read_image, to_unit_float
from unetkit.data.lazy_image import LazyImage, is_zarr, open_tiff, open_zarr
from unetkit.data.transforms import eval_transform
from unetkit.errors import UnetkitError

Prepare = Callable[[np.ndarray], torch.Tensor]  # raw (h, w, C) region -> normalized (C, h, w) float32 tensor
MAPPABLE = (np.dtype(np.uint8), np.dtype(np.uint16))  # TIFF pixel types served as a raw memory map


def open_image(path: Path, channels: int, level: int = 0) -> np.ndarray | LazyImage:
    """(H, W[, C]) pixels of pyramid level `level` (0: full resolution): raw uint8/uint16 for TIFF and OME-Zarr
    (a memory map of a plain TIFF, a region-by-region `LazyImage` of a tiled, compressed or pyramidal one and of
    OME-Zarr), else (H, W, channels) float32 in [0, 1] decoded whole.

    Either way an image over the pixel limit (`unetkit.data.io.set_pixel_limit`) is refused, naming the file.
    """
    path = Path(path)
    if is_zarr(path):
        return _in_range(open_zarr(path, level), channels)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        if level:
            raise UnetkitError(f"{path}: --level {level} needs a pyramidal TIFF or OME-Zarr; this file has one level")
        return read_image(path, channels)
    if level == 0:
        try:
            mapped = tifffile.memmap(path, mode="r")
        except (ValueError, OSError, tifffile.TiffFileError):  # compressed or unusual layout: read by regions
            mapped = None
        if mapped is not None and mapped.dtype in MAPPABLE and (mapped.ndim == 2 or mapped.ndim == 3
                                                              and mapped.shape[2] in (1, 3, 4)):
            check_pixel_limit(path, mapped.shape[1], mapped.shape[0])
            return mapped
        if importlib.util.find_spec("zarr") is None:  # without the `ome` extra: decoded whole, as before it
            return read_image(path, channels)
    try:
        lazy = open_tiff(path, level)
    except (ValueError, OSError, tifffile.TiffFileError, IndexError) as err:
        if level:
            raise UnetkitError(f"{path}: cannot read level {level} ({str(err).splitlines()[0]})") from None
        return read_image(path, channels)  # a layout the zarr store does not serve: let the decoder judge it
    return _in_range(lazy, channels)


def _in_range(image: LazyImage, channels: int) -> np.ndarray | LazyImage:
    """`image` itself for 8/16-bit pixels (scaled by their dtype's range region by region, as `to_unit` does);
    other types (float, 32-bit) are scaled by the whole image's own range, so they are read whole."""
    if image.dtype in MAPPABLE:
        return image
    whole = np.asarray(image)
    return convert_channels(to_unit_float(whole[..., :3] if whole.ndim == 3 else whole, image.path), channels)


def to_unit(region: np.ndarray, channels: int) -> np.ndarray:
    """A region of `open_image`'s array as (h, w, channels) float32 in [0, 1]: raw memory-mapped pixels go
    through `read_image`'s own scaling (`to_unit_float`, by the dtype's range); decoded images pass through."""
    region = np.asarray(region)  # a LazyImage is read here; a memory map stays a view
    if region.dtype not in MAPPABLE:
        return region
    region = region[..., :3] if region.ndim == 3 else region  # drop alpha
    return convert_channels(to_unit_float(region), channels)


def make_prepare(cfg: DataConfig, whole: np.ndarray | LazyImage | None = None) -> Prepare:
    """A function turning a region of `open_image`'s array `whole` into a normalized (C, h, w) tensor; with
    `data.normalize: image` every region is stretched by the range of `whole` (so tiles match the image)."""
    normalize = eval_transform(cfg)
    extent = None
    if cfg.normalize == "image":
        if whole is None:
            raise ValueError("per-image normalization needs the whole image to take its range from")
        step = max(1, int(np.ceil(np.sqrt(whole.shape[0] * whole.shape[1] / SAMPLE_PIXELS))))
        extent = image_range(to_unit(np.asarray(whole[::step, ::step]), cfg.channels))

    def prepare(region: np.ndarray) -> torch.Tensor:
        unit = to_unit(region, cfg.channels)  # (h, w, C) in [0, 1]
        image = normalize(image=unit if extent is None else stretch(unit, *extent))["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    return prepare
