"""Tiled, compressed and pyramidal images read region by region: TIFF / OME-TIFF and OME-Zarr.

The tiled predictor only ever asks for `image[y0:y1, x0:x1]` (a band of tiles) and, for per-image
normalization, a strided sample `image[::step, ::step]`; `LazyImage` answers both from a chunked zarr array
without decoding the rest. A TIFF is opened through tifffile's own zarr store (`TiffPageSeries.aszarr`, one
zarr chunk per TIFF tile or strip), an OME-Zarr folder with zarr. A strided read of the whole image comes from
the coarsest pyramid level that holds every `step`-th pixel's neighbourhood (a level `f` times smaller read
with step `step / f`), so sampling a 16384^2 slide touches a few megapixels instead of all of it.

Axes: (Y, X), (Y, X, C) and (C, Y, X) TIFFs, and OME-Zarr's (t, c, z, y, x) or any subset, are served as
(H, W) or (H, W, C); singleton t and z are dropped, a time series or a 3D stack (z > 1) is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import tifffile

from unetkit.data.io import check_pixel_limit
from unetkit.data.pixel_size import PixelSize, from_ngff, from_ome_xml, from_tiff_tags
from unetkit.errors import UnetkitError, require_extra

INSTALL_HINT = "pip install 'unetkit[ome]'"
ZARR_SUFFIX = ".zarr"  # `NAME.zarr` and `NAME.ome.zarr` folders
_NGFF_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def require_ome(module: str, what: str) -> ModuleType:
    """Import an optional dependency of the OME formats, or say in one line how to install it."""
    return require_extra(module, "ome", f"{what} needs")


def is_zarr(path: Path) -> bool:
    """True for an OME-Zarr image folder (`NAME.zarr`, `NAME.ome.zarr`): one image, not a folder of them."""
    return Path(path).suffix.lower() == ZARR_SUFFIX and Path(path).is_dir()


class LazyImage:
    """(H, W) or (H, W, C) view of one level of a chunked image whose stored axes may be in any order.

    `levels` holds the zarr arrays of the level read and every coarser one after it (all with the stored
    `axes`, e.g. "CYX" or "TCZYX"); only slicing reads pixels. Regions come back as numpy arrays.
    """

    def __init__(self, levels: list[Any], axes: str, path: Path, keep: Any = None) -> None:
        self.levels, self.axes, self.path = levels, axes.upper(), Path(path)
        self._keep = keep  # the open TiffFile a tifffile store reads from
        sizes = dict(zip(self.axes, levels[0].shape, strict=True))
        extra = {a: n for a, n in sizes.items() if a not in "YXCS" and n > 1}
        if extra:
            what = "a 3D stack" if "Z" in extra else "a series of images"
            raise UnetkitError(f"{path}: {what} ({', '.join(f'{a.lower()}={n}' for a, n in extra.items())}); "
                               "unetkit segments 2D images: save one plane per file")
        channel_axes = [a for a in self.axes if a in "CS" and sizes[a] > 1]
        if len(channel_axes) > 1 or (channel_axes and sizes[channel_axes[0]] not in (3, 4)):
            raise UnetkitError(f"{path}: image axes {self.axes} of shape {tuple(levels[0].shape)}; unetkit reads "
                               "gray or RGB(A) images: save one channel or three")
        self._channel = channel_axes[0] if channel_axes else None
        height, width = sizes["Y"], sizes["X"]
        self.shape: tuple[int, ...] = (height, width, sizes[self._channel]) if self._channel else (height, width)
        self.dtype = np.dtype(levels[0].dtype)
        check_pixel_limit(path, width, height)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:, :]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key: tuple[slice, slice] | slice) -> np.ndarray:
        """`image[y0:y1, x0:x1]` (steps allowed) as an (h, w[, C]) numpy array."""
        rows, cols = (key, slice(None)) if isinstance(key, slice) else key
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise TypeError(f"LazyImage takes [rows, columns] slices, got {key!r}")
        level, rows, cols = self._source(rows, cols)
        order = {"Y": rows, "X": cols}
        selection = tuple(order.get(a, slice(None) if a == self._channel else 0) for a in self.axes)
        region = np.asarray(level[selection])
        kept = [a for a in self.axes if a in order or a == self._channel]
        return np.ascontiguousarray(np.moveaxis(region, [kept.index(a) for a in "YX"], [0, 1]))

    def _source(self, rows: slice, cols: slice) -> tuple[Any, slice, slice]:
        """The array to read and the slices into it: a strided read of the whole image from the coarsest
        level whose size ratio `f` divides the step (then read with step / f), anything else from level 0."""
        step = rows.step or 1
        whole = all(s.start in (None, 0) and s.stop is None for s in (rows, cols))
        if step > 1 and cols.step == step and whole:
            height, width = self.shape[:2]
            for level in reversed(self.levels[1:]):
                sizes = dict(zip(self.axes, level.shape, strict=True))
                factor = round(height / sizes["Y"])
                if factor > 1 and step % factor == 0 and round(width / sizes["X"]) == factor:
                    return level, slice(None, None, step // factor), slice(None, None, step // factor)
        return self.levels[0], rows, cols


def open_tiff(path: Path, level: int = 0) -> LazyImage:
    """Level `level` of a TIFF's first series (level 0: full resolution) through tifffile's zarr store."""
    zarr = require_ome("zarr", "reading tiled or pyramidal TIFF region by region")
    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        levels = series.levels
        _check_level(path, level, len(levels))
        _check_codec(path, levels[level].keyframe)
        arrays = [zarr.open_array(series.aszarr(level=k), mode="r") for k in range(level, len(levels))]
        return LazyImage(arrays, levels[level].axes, path, keep=tif)
    except BaseException:
        tif.close()
        raise


def open_zarr(path: Path, level: int = 0) -> LazyImage:
    """Level `level` of an OME-Zarr image (its multiscales' datasets, finest first)."""
    zarr = require_ome("zarr", "reading OME-Zarr")
    multiscale, group = _multiscale(path, zarr)
    datasets = multiscale["datasets"]
    _check_level(path, level, len(datasets))
    axes = _ngff_axes(path, multiscale, group[datasets[0]["path"]].ndim)
    return LazyImage([group[d["path"]] for d in datasets[level:]], axes, path)


def pixel_size(path: Path, level: int = 0) -> PixelSize | None:
    """The physical pixel size of level `level` of an image file, from its OME or TIFF metadata, else None."""
    path = Path(path)
    if is_zarr(path):
        multiscale, _ = _multiscale(path, require_ome("zarr", "reading OME-Zarr"))
        dataset = multiscale["datasets"][level]
        scale = _scale(dataset) * _scale(multiscale, len(_scale(dataset)))
        return from_ngff(multiscale.get("axes") or list("tczyx"[-len(scale):]), list(scale))
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        base = levels[0].keyframe
        found = None
        if tif.is_ome and tif.ome_metadata:
            image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
            found = from_ome_xml((image[0] if isinstance(image, list) else image).get("Pixels", {}))
        if found is None:
            found = from_tiff_tags(base.get_resolution(), int(base.resolutionunit))
        if found is None or level == 0 or level >= len(levels):
            return found
        page = levels[level].keyframe
        return found.scaled(level_factor(base.imagelength, page.imagelength),
                            level_factor(base.imagewidth, page.imagewidth))


def level_factor(full: int, size: int) -> float:
    """How many times coarser a pyramid level of `size` pixels is than one of `full`: the whole number a halving
    pyramid used (530 -> 133 is 4, rounded up) when the sizes say so, else their ratio."""
    factor = max(1, round(full / size))
    return float(factor) if size in (full // factor, -(-full // factor)) else full / size


def _check_level(path: Path, level: int, count: int) -> None:
    if not 0 <= level < count:
        raise UnetkitError(f"{path}: --level {level} does not exist; the image has {count} level(s), "
                           f"0 to {count - 1} (0 = full resolution)")


def _check_codec(path: Path, page: Any) -> None:
    """Refuse now, in one line, a compression tifffile cannot decode here (not halfway through the tiles)."""
    try:
        tifffile.TIFF.DECOMPRESSORS[page.compression]
    except KeyError as err:
        if "imagecodecs" in str(err):
            raise UnetkitError(f"{path}: {page.compression.name} compressed TIFF needs the imagecodecs package; "
                               f"{INSTALL_HINT}") from None
        raise UnetkitError(f"{path}: cannot read image ({err.args[0]}); replace or remove the file") from None


def _multiscale(path: Path, zarr: ModuleType) -> tuple[dict[str, Any], Any]:
    """The first multiscales entry of an OME-Zarr group (0.4: in the attributes, 0.5: under `ome`)."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # a folder zarr cannot open: not a zarr group, damaged metadata
        raise UnetkitError(f"{path}: cannot open as OME-Zarr ({str(err).splitlines()[0]})") from None
    attrs = dict(group.attrs)
    found = attrs.get("ome", attrs).get("multiscales")
    if not found or not found[0].get("datasets"):
        raise UnetkitError(f"{path}: a zarr folder without OME multiscales metadata; write it as OME-Zarr "
                           "(ome-zarr's write_image) or as a TIFF")
    return found[0], group


def _ngff_axes(path: Path, multiscale: dict[str, Any], ndim: int) -> str:
    """Stored axes as letters ("TCZYX"): from the axes metadata (0.3 names, 0.4+ objects), else the last `ndim`
    of t, c, z, y, x, which versions 0.1 and 0.2 imply."""
    axes = multiscale.get("axes") or list("tczyx"[-ndim:])
    names = [str(a["name"] if isinstance(a, dict) else a).lower() for a in axes]
    unknown = [n for n in names if n not in _NGFF_AXES]
    if unknown or "y" not in names or "x" not in names:
        raise UnetkitError(f"{path}: OME-Zarr axes {names} are not a subset of t, c, z, y, x with y and x")
    return "".join(_NGFF_AXES[n] for n in names)


def _scale(entry: dict[str, Any], ndim: int | None = None) -> np.ndarray:
    """The `scale` of an entry's coordinateTransformations (ones when it has none)."""
    for transform in entry.get("coordinateTransformations") or []:
        if transform.get("type") == "scale" and "scale" in transform:
            return np.asarray(transform["scale"], np.float64)
    return np.ones(ndim if ndim is not None else len(entry.get("axes", [])) or 5)
