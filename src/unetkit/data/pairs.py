"""An image file, its mask file, and optionally the band of rows that stands for the pair.

A dataset of a few large images loses a whole acquisition, a slice or a patient, for every image held out for
validation: 2 of 9 images is a fifth of everything the network could learn from. Holding out a band of rows of
every image instead (`data.val_split: bands`) keeps every image in training, and gives the choices after
training one validation piece per image to compare settings on. A pair's `rows` says which band it stands for,
as shares of the image's height; every reader of a pair's pixels crops through `crop_rows`, so the training
part and the validation band never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

Rows = tuple[float, float]  # (first, last) share of an image's height, e.g. (0.0, 0.8) = the top 80%
Cropped = TypeVar("Cropped")


class Pair(NamedTuple):
    """One training or validation item: `image` and `mask` files, and `rows` (None = the whole image)."""

    image: Path
    mask: Path
    rows: Rows | None = None


def rows_of(pair: Sequence) -> Rows | None:
    """The band a pair stands for; plain (image, mask) tuples stand for the whole image."""
    return pair[2] if len(pair) > 2 else None


def row_slice(height: int, rows: Rows | None) -> slice:
    """The rows of an image `height` pixels tall that `rows` covers. Both bands of one image round their cut
    the same way, so they tile the image exactly."""
    if rows is None:
        return slice(0, height)
    return slice(round(height * rows[0]), round(height * rows[1]))


def band_height(height: int, rows: Rows | None) -> int:
    """How many rows of an image `height` pixels tall the band covers."""
    span = row_slice(height, rows)
    return span.stop - span.start


def crop_rows(array: Cropped, rows: Rows | None) -> Cropped:
    """`array` ((H, W[, C]) numpy array or lazily read image) cut to the band; the array itself when whole."""
    if rows is None:
        return array
    return array[row_slice(array.shape[0], rows)]  # type: ignore[index, attr-defined]


def band_pairs(pairs: Sequence[Sequence], fraction: float) -> tuple[list[Pair], list[Pair]]:
    """Every image trained on above the cut, and validated on its bottom `fraction` of rows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = 1.0 - fraction
    train = [Pair(Path(p[0]), Path(p[1]), (0.0, cut)) for p in pairs]
    val = [Pair(Path(p[0]), Path(p[1]), (cut, 1.0)) for p in pairs]
    return train, val

