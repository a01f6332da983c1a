"""Writing masks and pictures atomically, whole or band by band.

Writes go to a temporary file in the target folder and are moved into place, so an interrupted run never
leaves a half-written mask that a later run would read as data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image

from unetkit.atomic import atomic_write
from unetkit.data.io import TIFF_SUFFIXES
from unetkit.errors import UnetkitError


def _atomic_write(path: Path, array: np.ndarray) -> None:
    """Write `array` as an image file through `atomic_write`, under a unique temporary name so that two
    processes writing the same output never share an unfinished file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".bmp", ".jpg", ".jpeg", *TIFF_SUFFIXES):
        raise UnetkitError(f"{path}: cannot write {suffix or 'files without an extension'}; use .png or .tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, unique=True) as file:
        if suffix in TIFF_SUFFIXES:
            tifffile.imwrite(file, array, photometric="rgb" if array.ndim == 3 else "minisblack")
        else:
            fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}[suffix]
            Image.fromarray(array).save(file, format=fmt)


def _check_mask(array: np.ndarray) -> None:
    gray = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    rgb = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (gray or rgb):
        raise ValueError(f"mask must be (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.shape} {array.dtype}")


def write_mask(path: Path, array: np.ndarray) -> None:
    """Write a mask losslessly: `(H, W)` uint8/uint16 or `(H, W, 3)` uint8, as PNG or TIFF."""
    path = Path(path)
    _check_mask(array)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise UnetkitError(f"{path}: JPEG is lossy and would change mask values; write masks as .png or .tif")
    if array.dtype == np.uint16 and path.suffix.lower() == ".bmp":
        raise UnetkitError(f"{path}: BMP cannot hold 16-bit masks; use .png or .tif")
    _atomic_write(path, np.ascontiguousarray(array))


def write_mask_rows(path: Path, height: int, bands: Iterable[np.ndarray]) -> None:
    """Write a PNG mask from consecutive row bands, so the whole mask never has to exist in memory.

    `bands` yields `(rows, W)` uint8/uint16 or `(rows, W, 3)` uint8 arrays, top to bottom, `height` rows in
    all. The file holds what `write_mask` writes for their concatenation: same size, colour type (gray or RGB),
    bit depth and pixels; only the compressed bytes may differ. Rows are compressed as they arrive (pypng).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: masks are written band by band only as .png")
    bands = iter(bands)
    first = next(bands, None)
    if first is None:
        raise ValueError(f"{path}: no rows to write")
    _check_mask(first)
    big_endian = first.dtype.newbyteorder(">")  # PNG stores 16-bit samples most significant byte first
    written = 0

    def packed_rows() -> Iterator[bytes]:
        nonlocal written
        for band in itertools.chain([first], bands):
            if band.shape[1:] != first.shape[1:] or band.dtype != first.dtype:
                raise ValueError(f"{path}: band {band.shape} {band.dtype} does not continue {first.shape} "
                                 f"{first.dtype}")
            written += len(band)
            yield from (row.tobytes() for row in band.astype(big_endian, copy=False))

    writer = png.Writer(first.shape[1], height, greyscale=first.ndim == 2, bitdepth=8 * first.dtype.itemsize)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, unique=True) as file:
        writer.write_packed(file, packed_rows())
        if written != height:
            raise ValueError(f"{path}: {written} rows were written for a height of {height}")


def write_image(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit picture (overlay, plot): `(H, W)` or `(H, W, 3)` uint8, as PNG, JPEG, BMP or TIFF."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3) uint8, got {array.shape} {array.dtype}")
    _atomic_write(Path(path), np.ascontiguousarray(array))
