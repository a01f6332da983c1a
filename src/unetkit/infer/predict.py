"""Apply a trained model to image files and write masks the way the training data was encoded.

Outputs per input `NAME.ext`: `NAME.png` (the mask in the dataset's own encoding: 0/255 stays 0/255, a
palette stays a palette; or with `mask_format` a pyramid of class indices, `NAME.ome.zarr` / `NAME.ome.tif`,
carrying the input's physical pixel size, `data/ome_writers.py`), optionally `NAME_overlay.png` (class colours
over the image, or object outlines), `NAME_probs.npy` (float16 class probabilities, (K, H, W), written as tiles
finish), and with `infer.instances` `NAME_instances.png` + `NAME_objects.csv` (one label per object,
`infer/instances.py`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from unetkit.config import Config
from unetkit.data.io import channel_warning, image_stem, list_images, set_pixel_limit
from unetkit.data.lazy_image import is_zarr, pixel_size
from unetkit.data.masks import MaskCodec
from unetkit.data.ome_writers import write_ome_tiff, write_ome_zarr
from unetkit.data.pixel_size import PixelSize
from unetkit.data.source import open_image, to_unit
from unetkit.data.writers import write_image, write_mask_rows
from unetkit.distributed import barrier, distributed_session
from unetkit.errors import UnetkitError
from unetkit.infer.inference import Inference, InferOptions, load_predictor, open_inference
from unetkit.infer.instances import contour_overlay, objects_from, write_objects
from unetkit.infer.pictures import overlay


def _encoded(bands: Iterator[tuple[int, np.ndarray]], codec: MaskCodec, keep: np.ndarray | None
             ) -> Iterator[np.ndarray]:
    """The bands' class indices in the dataset's encoding; copied into `keep` (H, W) when given (overlays)."""
    for top, rows in bands:
        if keep is not None:
            keep[top : top + len(rows)] = rows
        yield codec.encode(rows)


MaskFormat = Literal["png", "ome-zarr", "ome-tiff"]
MASK_SUFFIXES = {"png": ".png", "ome-zarr": ".ome.zarr", "ome-tiff": ".ome.tif"}


def mask_path(out: Path, image: Path, mask_format: MaskFormat = "png") -> Path:
    """Where the mask of `image` goes: `NAME.png`, `NAME.ome.zarr` or `NAME.ome.tif` (NAME without `.ome`)."""
    if mask_format not in MASK_SUFFIXES:
        raise UnetkitError(f"mask format {mask_format!r} is unknown; use {', '.join(MASK_SUFFIXES)}")
    return Path(out) / f"{image_stem(image)}{MASK_SUFFIXES[mask_format]}"


def _indices(bands: Iterator[tuple[int, np.ndarray]], keep: np.ndarray | None) -> Iterator[np.ndarray]:
    """The bands' (rows, W) uint8 class indices; copied into `keep` (H, W) when given (overlays, objects)."""
    for top, rows in bands:
        if keep is not None:
            keep[top : top + len(rows)] = rows
        yield rows


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); duplicates dropped."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir() and not is_zarr(item):
            files.extend(list_images(item))
        elif is_zarr(item):  # an OME-Zarr folder is one image
            files.append(item)
        elif item.is_file():
            files.append(item)
        else:
            raise UnetkitError(f"input {item} does not exist")
    unique = list(dict.fromkeys(f.resolve() for f in files))
    if not unique:
        raise UnetkitError("no input images given")
    return unique


def existing_masks(inputs: list[str | Path], output_dir: str | Path, mask_format: MaskFormat = "png") -> list[Path]:
    """The inputs whose mask (`mask_path`) is already in `output_dir`: `predict` keeps them unless told to
    overwrite."""
    return [f for f in collect_inputs(inputs) if mask_path(Path(output_dir), f, mask_format).exists()]


def prepare_outputs(files: list[Path], output_dir: Path, overwrite: bool = False,
                    mask_format: MaskFormat = "png") -> list[Path]:
    """Check and create the output folder before any work; returns the inputs still to predict.

    Refused: an output folder holding inputs, two inputs with one name, an output file that is an input
    (the same path, or a link to it), a folder that cannot be written. Inputs whose mask exists are skipped
    unless `overwrite`, so an interrupted or repeated run does not redo finished images.
    """
    out = Path(output_dir)
    if any(out.resolve() == f.parent for f in files):
        raise UnetkitError(f"output folder {out} holds input images; choose another -o so no input is overwritten")
    stems = [image_stem(f) for f in files]
    if len(set(stems)) != len(stems):
        clash = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise UnetkitError(f"inputs share the names {', '.join(clash)}; their masks would overwrite each other")
    inputs = {_identity(f): f for f in files}
    for f in files:
        stem = image_stem(f)
        for target in (mask_path(out, f, mask_format), out / f"{stem}_overlay.png", out / f"{stem}_probs.npy"):
            same = inputs.get(_identity(target))
            if same is not None:
                raise UnetkitError(f"output {target} is the input image {same}; choose another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".unetkit-", suffix=".tmp", dir=out)  # fail now, not after the work
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UnetkitError(f"cannot write to output folder {out}: {err.strerror or err}; choose another -o") from None
    if overwrite:
        return files
    return [f for f in files if not mask_path(out, f, mask_format).exists()]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` leads to (links followed: a link to an input is that input)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    options: InferOptions | None = None,
    overlays: bool = False,
    probabilities: bool = False,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    mask_format: MaskFormat = "png",
) -> list[Path]:
    """Predict every input image and write its mask (and extras) to `output_dir`; returns the mask paths.

    `options` override the checkpoint's inference settings (tile, overlap, TTA, threshold, precision, ...).

    Inputs whose mask is already in `output_dir` are kept as they are unless `overwrite` (`existing_masks`
    lists them). `mask_format` "ome-zarr" / "ome-tiff" writes each mask as a pyramid of class indices instead
    of a PNG; `options.level` reads that pyramid level of the inputs (0: full resolution). Images over the
    checkpoint config's `data.max_image_pixels` are refused. Under torchrun the images are shared out
    between the processes; every rank returns the paths of all masks.
    """
    with distributed_session(device) as (world, device):
        predictor, cfg = load_predictor(checkpoint, device)
        set_pixel_limit(cfg.data.max_image_pixels)
        inference = open_inference(predictor, cfg, (options or InferOptions()).applied_to(cfg))
        codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
        out = Path(output_dir)
        files = prepare_outputs(collect_inputs(inputs), out, overwrite, mask_format)
        level = (options or InferOptions()).level or 0
        warning = channel_warning(files, cfg.data.channels)
        if warning and world.main:
            print(warning, file=sys.stderr)
        barrier()  # every rank lists the work before any rank writes, so all agree on which masks to keep
        shard = files[world.rank :: world.size]  # under torchrun each rank predicts every N-th image
        for path in tqdm(shard, desc="predict", disable=not (progress and world.main), dynamic_ncols=True):
            _predict_one(inference, path, out, cfg, codec, Outputs(overlays, probabilities, mask_format, level))
        barrier()  # every shard is written before any rank reports
        return [mask_path(out, path, mask_format) for path in files]


SCRATCH_PIXELS = 16 * 2**20  # an instance model's probabilities over this many pixels go to a temporary file


def _scratch(shape: tuple[int, int, int], out: Path) -> np.ndarray:
    """(K, H, W) probabilities for growing objects: float32 in memory, float16 in a temporary file (deleted
    when released) for images over SCRATCH_PIXELS, so large images keep the memory bound."""
    if shape[1] * shape[2] <= SCRATCH_PIXELS:
        return np.empty(shape, np.float32)
    return np.memmap(tempfile.TemporaryFile(dir=out), dtype=np.float16, mode="w+", shape=shape)


def _objects_and_overlay(inference: Inference, shown: np.ndarray, index: np.ndarray, probs: np.ndarray | None,
                         stem: Path, codec: MaskCodec, overlays: bool, size: PixelSize | None = None) -> None:
    """With `infer.instances` write STEM_instances + STEM_objects.csv; with `overlays` STEM_overlay.png (object
    outlines, or class colours). `shown` (H, W, C) in [0, 1], `index` (H, W) classes, `probs` (K, H, W); with the
    physical pixel `size` the object table adds areas and diameters in its unit."""
    infer = inference.infer
    labels = objects_from(inference.objects, index, probs, infer.seed_threshold,
                          infer.min_object_px) if infer.instances else None
    if labels is not None:
        write_objects(labels, shown, stem.parent, stem.name, size)
    if overlays:
        picture = contour_overlay(shown, labels) if labels is not None else overlay(shown, index, codec.colors())
        write_image(stem.parent / f"{stem.name}_overlay.png", picture)


@dataclass(frozen=True)
class Outputs:
    """What `predict` writes for each image besides its mask, the mask's format and the level read."""

    overlays: bool = False
    probabilities: bool = False
    mask_format: MaskFormat = "png"
    level: int = 0


def _predict_one(inference: Inference, path: Path, out: Path, cfg: Config, codec: MaskCodec, outputs: Outputs
                 ) -> None:
    """Write the mask (and with the options `NAME_probs.npy`, `NAME_overlay.png`) for one image; a failed write
    (full disk, read-only folder) ends with one line and leaves no half-written probabilities behind."""
    image = open_image(path, cfg.data.channels, outputs.level)  # (H, W[, C]), memory-mapped or read by regions
    size = pixel_size(path, outputs.level)
    stem = image_stem(path)
    probs_path = out / f"{stem}_probs.npy"
    try:
        probs = None
        if outputs.probabilities:
            shape = (cfg.data.num_classes, *image.shape[:2])
            probs = np.lib.format.open_memmap(probs_path, mode="w+", dtype=np.float16, shape=shape)
        # the mask is encoded and written band by band; the whole index map is kept only for an overlay or
        # objects (labelled after the bands are stitched, so no object is cut at a band border)
        objects = inference.infer.instances
        index = np.empty(image.shape[:2], np.uint8) if outputs.overlays or objects else None
        grows = objects and inference.task == "instances"  # an instance model grows them from probabilities
        work = probs if probs is not None or not grows else _scratch((cfg.data.num_classes, *image.shape[:2]), out)
        bands = inference.bands(image, work)
        target = mask_path(out, path, outputs.mask_format)
        if outputs.mask_format == "png":
            write_mask_rows(target, image.shape[0], _encoded(bands, codec, index))
        else:
            write = write_ome_zarr if outputs.mask_format == "ome-zarr" else write_ome_tiff
            write(target, image.shape[0], image.shape[1], _indices(bands, index), size)
        if probs is not None:
            probs.flush()
        if index is not None:
            _objects_and_overlay(inference, to_unit(image, cfg.data.channels), index, work, out / stem, codec,
                                 outputs.overlays, size)
    except OSError as err:
        if outputs.probabilities:
            probs_path.unlink(missing_ok=True)
        raise UnetkitError(f"cannot write the outputs of {path.name} to {out}: {err.strerror or err}; "
                           "free space or choose another -o (masks already written are complete)") from None
