"""The test image of a model package: which image, cut to a size the network takes, and what the weights say.

bioimage.io checks a package by running its weights on the test input (after the described preprocessing)
and comparing with the test output. The input here is a real image of the run when one can be found (the
`--sample` given, else the first validation image, else the first training image, else a generated cell
image), kept in its file's pixel type so the package's preprocessing is tested from the raw pixels. The
output is computed by the exported TorchScript weights on unetkit's own preparation of those pixels
(`make_prepare`), so a package passes only when the spec's preprocessing ops equal unetkit's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from unetkit.config import Config
from unetkit.data.io import TIFF_SUFFIXES, list_images, read_image
from unetkit.data.masks import MaskCodec
from unetkit.data.source import make_prepare, to_unit
from unetkit.data.synthetic import make_sample
from unetkit.errors import UnetkitError
from unetkit.infer.pictures import colorize
from unetkit.infer.predictor import classes_of

MAX_SIDE = 256  # test tensors stay small: the package checks a few hundred kB, not a whole slide


def find_sample(cfg: Config, given: Path | None) -> Path | None:
    """The image to test with: `given`, else the first validation image of the run's data, else the first
    training image; None when the data folders are not on this machine."""
    if given is not None:
        if not given.is_file():
            raise UnetkitError(f"--sample {given} does not exist; give an image file")
        return given
    data = cfg.data
    for folder in (data.val_images, data.train_images):
        if folder is not None and data.path(folder).is_dir():
            found = list_images(data.path(folder))
            if data.val_files and folder == data.train_images:  # the fixed split's validation images first
                found = sorted(found, key=lambda p: p.stem not in data.val_files)
            if found:
                return found[0]
    return None


def raw_pixels(path: Path | None, channels: int) -> np.ndarray:
    """(H, W, channels) pixels in the file's own type (uint8, uint16), or float32 in [0, 1] when the file has
    another channel count or type (converted as unetkit reads it); a generated cell image when `path` is None."""
    if path is None:
        image, _ = make_sample(np.random.default_rng(0), size=96)  # (H, W) uint8
        return np.repeat(image[..., None], channels, axis=2)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = tifffile.imread(path)
        else:
            with Image.open(path) as img:
                array = np.asarray(img if img.mode in ("L", "I;16", "RGB") else img.convert("RGB"))
    except (OSError, ValueError, UnidentifiedImageError):
        return read_image(path, channels)  # says in one line what is wrong with the file
    array = array[..., None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[2] != channels or array.dtype not in (np.uint8, np.uint16):
        return read_image(path, channels)
    return np.ascontiguousarray(array)


def fit_to_network(image: np.ndarray, net: nn.Module) -> np.ndarray:
    """(H, W, C) -> (h, w, C) with h, w sizes the network takes: the centre cut to the largest valid size up to
    `MAX_SIDE`, or mirrored out to the smallest one when the image is smaller."""
    sides = []
    for side in image.shape[:2]:
        below, above = net.nearest_valid_sizes(min(side, MAX_SIDE))
        sides.append(below if below is not None else above)
    pads = [(0, max(0, want - have)) for want, have in zip(sides, image.shape[:2], strict=True)]
    image = np.pad(image, [*pads, (0, 0)], mode="symmetric")
    top, left = ((have - want) // 2 for want, have in zip(sides, image.shape[:2], strict=True))
    return np.ascontiguousarray(image[top:top + sides[0], left:left + sides[1]])


def reference_tensors(image: np.ndarray, cfg: Config, torchscript: bytes, out_channels: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(input (1, C, h, w) raw pixels, output (1, K', h', w') float32 probabilities), the output computed by the
    TorchScript weights on unetkit's preparation of the pixels: softmax, or sigmoid (K' = 1) for one logit."""
    x = make_prepare(cfg.data, image)(image)[None]  # (1, C, h, w) normalized
    with torch.no_grad():
        logits = torch.jit.load(io.BytesIO(torchscript), map_location="cpu")(x)
    probs = torch.sigmoid(logits) if out_channels == 1 else torch.softmax(logits, dim=1)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None]), probs.numpy().astype(np.float32)


def cover(image: np.ndarray, probs: np.ndarray, cfg: Config, margin: int) -> np.ndarray:
    """(h', 2 w', 3) uint8 picture: the input where the output lies | the predicted classes in their colours."""
    unit = to_unit(image, cfg.data.channels)  # (h, w, C) in [0, 1]
    unit = unit[margin:unit.shape[0] - margin, margin:unit.shape[1] - margin]
    low, high = float(unit.min()), float(unit.max())
    shown = (unit - low) / max(high - low, 1e-8)
    shown = np.repeat(shown, 3, axis=2) if shown.shape[2] == 1 else shown
    full = torch.from_numpy(probs[0])  # (K', h', w')
    full = torch.cat([1 - full, full]) if full.shape[0] == 1 else full  # p(foreground) -> both classes
    classes = classes_of(full, cfg.infer.threshold).numpy()  # (h', w')
    colors = MaskCodec(cfg.data.mask, cfg.data.num_classes).colors()
    return np.concatenate([(shown * 255).round().astype(np.uint8), colorize(classes, colors)], axis=1)
