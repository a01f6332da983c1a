"""Per-image intensity stretching (`data.normalize: image`), the same in training, validation and prediction.

When images come from different acquisitions (exposure, gain, staining, scanner), one dataset mean and std
leave some images far brighter or darker than anything the network saw in training. Stretching each image's
own 0.5th..99.5th percentile range per channel to [0, 1] removes those differences before the dataset
normalization. The range is taken over the whole image (a strided sample of at most ~1 Mpx, so a memory-mapped
slide is not read whole), never over a crop or a tile: a tile of an image is stretched exactly like its image.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 0.5, 99.5  # percentiles mapped to 0 and 1
SAMPLE_PIXELS = 1 << 20


def image_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (C,) float32: the percentiles of an (H, W, C) float image in [0, 1], per channel."""
    height, width = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(height * width / SAMPLE_PIXELS))))
    sample = np.asarray(image[::step, ::step], dtype=np.float32).reshape(-1, image.shape[2] if image.ndim == 3 else 1)
    low, high = np.percentile(sample, [LOW, HIGH], axis=0).astype(np.float32)
    return low, np.maximum(high, low + 1e-6)  # a flat channel maps to 0, not to a division by zero


def stretch(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(h, w, C) float32 in [0, 1] -> the same with [low, high] per channel mapped to [0, 1], clipped."""
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def stretch_whole(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image in [0, 1] stretched by its own range (training images, read whole)."""
    return stretch(image, *image_range(image))
