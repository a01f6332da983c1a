"""Cut large images (and their masks) into fixed-size patches on disk.

Some recipes train on small square patches cut once from big slices (micro-CT, satellite scenes), and some
annotation tools want small tiles. The patches keep the source pixels exactly (gray stays gray, 16-bit stays
16-bit, RGB masks stay RGB) and carry their origin in their name, `<stem>_y<top>_x<left>.png`, so any
patch can be traced back to the region it came from. Files PNG cannot hold (float or signed data, 16-bit
RGB) are written as TIFF under the same name pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.dataset import pair_files
from unetkit.data.io import list_images, open_picture, read_raw
from unetkit.data.writers import write_mask
from unetkit.errors import UnetkitError

_TIFF = (".tif", ".tiff")


def patch_starts(length: int, size: int, stride: int, keep_partial: bool) -> list[int]:
    """Offsets of the patches along one axis of `length` pixels.

    Worked example: length 10, size 4, stride 4 gives [0, 4] (pixels 8-9 are dropped); with `keep_partial`
    a last patch is shifted to end at the border, [0, 4, 6], so every patch stays full-size.
    """
    starts = list(range(0, length - size + 1, stride))
    if keep_partial and starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _read_picture(path: Path) -> np.ndarray:
    """An image's pixels as stored, `(H, W)` or `(H, W, 3)`; paletted and 1-bit images become what they show.

    Masks are read with `read_raw` (a paletted mask stores class indices); an image's palette is only a
    colour table, so its patches are written as the RGB colours it displays.
    """
    array = read_raw(path)
    if path.suffix.lower() not in _TIFF:
        with open_picture(path) as img:
            if img.mode == "P":
                return np.asarray(img.convert("RGB"))
            if img.mode == "1":
                return np.asarray(img.convert("L"))
    return array


def _write_patch(folder: Path, name: str, patch: np.ndarray) -> None:
    """PNG when it can hold the data losslessly (uint8 gray/RGB, uint16 gray), else TIFF."""
    pngable = patch.dtype == np.uint8 or (patch.dtype == np.uint16 and patch.ndim == 2)
    if pngable:
        write_mask(folder / f"{name}.png", patch)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"{name}.tif", np.ascontiguousarray(patch),
                         photometric="rgb" if patch.ndim == 3 else "minisblack")


def _check_output(output_dir: Path, inputs: list[Path]) -> None:
    out = output_dir.resolve()
    for target in (out, out / "images", out / "masks"):
        for folder in inputs:
            src = folder.resolve()
            if target == src or target.is_relative_to(src):
                raise UnetkitError(f"output folder {output_dir} would write into the input folder {folder}; "
                                   "choose an output folder outside the inputs")
    for sub in ("images", "masks"):
        existing = [p for p in (out / sub).glob("*") if p.is_file()] if (out / sub).is_dir() else []
        if existing:
            raise UnetkitError(f"{out / sub} already holds {len(existing)} files; choose an empty output folder "
                               "so old and new patches do not mix")


def make_patches(
    images_dir: Path,
    masks_dir: Path | None,
    output_dir: Path,
    size: int = 128,
    stride: int | None = None,
    keep_partial: bool = False,
) -> int:
    """Cut every image (and its mask, paired by file stem) into `size` x `size` patches; returns their number.

    Patches go to `output_dir/images` (and `output_dir/masks`) as `<stem>_y<top>_x<left>.png`, offsets in
    pixels. `stride` defaults to `size` (no overlap); a smaller stride overlaps patches. Partial tiles at the
    right and bottom edges are dropped unless `keep_partial`, which adds a last row/column of patches shifted
    to end at the border. An RGBA file loses its alpha channel, as everywhere in unetkit.
    """
    stride = size if stride is None else stride
    if size <= 0:
        raise UnetkitError(f"patch size must be a positive number of pixels, got {size}")
    if stride <= 0:
        raise UnetkitError(f"patch stride must be a positive number of pixels, got {stride}")
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    if masks_dir is None:
        pairs: list[tuple[Path, Path | None]] = [(p, None) for p in list_images(images_dir)]
        inputs = [images_dir]
    else:
        masks_dir = Path(masks_dir)
        pairs = list(pair_files(images_dir, masks_dir))
        inputs = [images_dir, masks_dir]
    _check_output(output_dir, inputs)

    count = 0
    for image_path, mask_path, *_ in pairs:
        image = _read_picture(image_path)
        height, width = image.shape[:2]
        if height < size or width < size:
            raise UnetkitError(f"{image_path}: image is {width}x{height} (width x height), smaller than the "
                               f"{size}x{size} patch; use a smaller size or remove the image")
        mask = None
        if mask_path is not None:
            mask = read_raw(mask_path)
            if mask.shape[:2] != image.shape[:2]:
                raise UnetkitError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
                                   f"{image_path.name} is {width}x{height} (width x height); masks must match")
        for top in patch_starts(height, size, stride, keep_partial):
            for left in patch_starts(width, size, stride, keep_partial):
                name = f"{image_path.stem}_y{top}_x{left}"
                window = (slice(top, top + size), slice(left, left + size))
                _write_patch(output_dir / "images", name, image[window])
                if mask is not None:
                    _write_patch(output_dir / "masks", name, mask[window])
                count += 1
    return count
