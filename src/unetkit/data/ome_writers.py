"""Label masks of any size as OME-Zarr or OME-TIFF pyramids, written band by band.

Both hold class indices (uint8, 0 .. K-1: a label image, as viewers and OME-Zarr labels expect) in 256-pixel
chunks or tiles, compressed (zarr's default codec; zlib for TIFF), at full resolution and at every
halving down to one chunk. A coarser level takes every 2nd, 4th, ... pixel of the full mask (nearest, never
interpolated: a label stays a label, and the level-k pixel (i, j) is exactly the full-resolution pixel
(i * 2^k, j * 2^k), so its scale is 2^k times the pixel size with no offset).

Rows arrive top to bottom in pieces of any height. Full-resolution rows go straight to the file; the coarser
levels are collected in temporary files beside the output (a third of the mask's size in all) and written
after it, so memory holds a few bands, never the mask. The physical pixel size, when known, is written
as OME metadata (OME-Zarr `scale` and axis units; OME-XML PhysicalSizeX/Y) and as TIFF resolution tags.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from unetkit.atomic import atomic_write
from unetkit.data.lazy_image import require_ome
from unetkit.data.pixel_size import PixelSize

CHUNK = 256  # chunk / tile side of every level; levels are added while the longer side exceeds it


def pyramid_shapes(height: int, width: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """(rows, columns) of each level: the full size, then halved (rounded up) until one chunk holds a side.

    300 x 200 with 256-pixel chunks: [(300, 200), (150, 100)]; 16384 x 16384: 7 levels, down to 256 x 256.
    """
    shapes = [(height, width)]
    while max(shapes[-1]) > chunk:
        rows, cols = shapes[-1]
        shapes.append(((rows + 1) // 2, (cols + 1) // 2))
    return shapes


def blocks(bands: Iterable[np.ndarray], rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Consecutive (h, W) bands regrouped as `(top, (rows, W))` blocks (the last may be shorter), so every write
    covers whole chunks or a whole row of tiles."""
    pending: list[np.ndarray] = []
    count = top = 0
    for band in bands:
        pending.append(band)
        count += len(band)
        while count >= rows:
            joined = np.concatenate(pending)
            yield top, joined[:rows]
            top, pending, count = top + rows, [joined[rows:]], count - rows
    if count:
        yield top, np.concatenate(pending)


class CoarseLevels:
    """Levels 1.. of a mask, filled from its full-resolution rows as they pass (every 2^k-th row and column)
    into temporary uint8 memory maps in `folder` (deleted when released)."""

    def __init__(self, shapes: list[tuple[int, int]], folder: Path) -> None:
        self.levels = [np.memmap(tempfile.TemporaryFile(dir=folder), dtype=np.uint8, mode="w+", shape=shape)
                       for shape in shapes[1:]]
        self.top = 0  # full-resolution row of the next rows to `add`

    def add(self, rows: np.ndarray) -> None:
        """Take (h, W) full-resolution rows starting at row `self.top`."""
        for k, level in enumerate(self.levels, start=1):
            factor = 2**k
            first = -self.top % factor  # the first of these rows that lies on level k's grid
            picked = rows[first::factor, ::factor]
            start = (self.top + first) // factor
            level[start : start + len(picked)] = picked
            level._mmap.madvise(mmap.MADV_DONTNEED)  # written pages stay in the file, not in this process
        self.top += len(rows)

    def bands(self, k: int, rows: int) -> Iterator[np.ndarray]:
        """Level k (1..) as (rows, w) bands, top to bottom."""
        level = self.levels[k - 1]
        for top in range(0, level.shape[0], rows):
            yield np.array(level[top : top + rows])
            level._mmap.madvise(mmap.MADV_DONTNEED)


def _full_rows(bands: Iterable[np.ndarray], height: int, coarse: CoarseLevels, path: Path
               ) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of CHUNK full-resolution rows, each also handed to the coarse levels; `height` rows in all."""
    for top, block in blocks(bands, CHUNK):
        coarse.add(block)
        yield top, block
    if coarse.top != height:
        raise ValueError(f"{path}: {coarse.top} rows were written for a height of {height}")


def write_ome_zarr(path: Path, height: int, width: int, bands: Iterable[np.ndarray],
                   pixel_size: PixelSize | None = None) -> None:
    """Write (rows, W) uint8 bands, `height` rows in all, as an OME-Zarr (0.5) multiscale label image (y, x).

    The folder is written under a temporary name beside `path` and renamed into place when complete.
    """
    zarr = require_ome("zarr", "writing OME-Zarr")
    ome_writer = require_ome("ome_zarr.writer", "writing OME-Zarr")
    path = Path(path)
    shapes = pyramid_shapes(height, width)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        group = zarr.open_group(str(tmp), mode="w")
        arrays = [group.create_array(str(k), shape=shape, chunks=(min(CHUNK, shape[0]), min(CHUNK, shape[1])),
                                     dtype=np.uint8, fill_value=0) for k, shape in enumerate(shapes)]
        coarse = CoarseLevels(shapes, path.parent)
        for top, block in _full_rows(bands, height, coarse, path):
            arrays[0][top : top + len(block)] = block
        for k in range(1, len(shapes)):
            for top, band in blocks(coarse.bands(k, CHUNK), CHUNK):
                arrays[k][top : top + len(band)] = band
        size = pixel_size or PixelSize(1.0, 1.0, "")
        unit = {"unit": size.ngff_unit} if pixel_size is not None and size.ngff_unit else {}
        datasets = [{"path": str(k), "coordinateTransformations": [{"type": "scale",
                                                                    "scale": [size.y * 2**k, size.x * 2**k]}]}
                    for k in range(len(shapes))]
        ome_writer.write_multiscales_metadata(group, datasets, axes=[{"name": "y", "type": "space", **unit},
                                                                     {"name": "x", "type": "space", **unit}],
                                              name=path.name)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tiles(row_blocks: Iterable[tuple[int, np.ndarray]], width: int) -> Iterator[np.ndarray]:
    """CHUNK x CHUNK tiles, row by row of tiles, from blocks of CHUNK rows (tifffile pads the edge tiles)."""
    for _, block in row_blocks:
        for left in range(0, width, CHUNK):
            yield block[:, left : left + CHUNK]


def write_ome_tiff(path: Path, height: int, width: int, bands: Iterable[np.ndarray],
                   pixel_size: PixelSize | None = None) -> None:
    """Write (rows, W) uint8 bands, `height` rows in all, as a tiled, zlib-compressed, pyramidal OME-TIFF:
    the full mask in the first image, the coarser levels in its SubIFDs (as QuPath, Bio-Formats read them)."""
    path = Path(path)
    shapes = pyramid_shapes(height, width)
    coarse = CoarseLevels(shapes, path.parent)
    metadata: dict[str, object] = {"axes": "YX", "Name": path.name}
    resolution: dict[str, object] = {}
    if pixel_size is not None:
        metadata.update(PhysicalSizeY=pixel_size.y, PhysicalSizeYUnit=pixel_size.unit,
                        PhysicalSizeX=pixel_size.x, PhysicalSizeXUnit=pixel_size.unit)
    per_cm = pixel_size.per_centimetre() if pixel_size is not None else None
    if per_cm is not None:
        resolution = {"resolution": per_cm, "resolutionunit": "CENTIMETER"}
    options = {"tile": (CHUNK, CHUNK), "compression": "zlib", "dtype": np.uint8, "photometric": "minisblack"}
    with atomic_write(path, unique=True) as file, tifffile.TiffWriter(file, bigtiff=True, ome=True) as tif:
        tif.write(_tiles(_full_rows(bands, height, coarse, path), width), shape=(height, width),
                  subifds=len(shapes) - 1, metadata=metadata, **resolution, **options)
        for k, shape in enumerate(shapes[1:], start=1):
            if per_cm is not None:
                resolution["resolution"] = (per_cm[0] / 2**k, per_cm[1] / 2**k)
            tif.write(_tiles(blocks(coarse.bands(k, CHUNK), CHUNK), shape[1]), shape=shape, subfiletype=1,
                      metadata=None, **resolution, **options)
