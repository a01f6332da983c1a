"""The U-Net paper's pixel-wise loss weight map (Ronneberger et al. 2015, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

`w_c` balances class frequencies; `d1` and `d2` are the distances from pixel x to the nearest and the
second-nearest object. The border term makes the network pay for the thin background gaps between touching
objects (the membranes between cells), which a plain per-pixel loss barely notices.

Choices made here, where the paper leaves room:
- Objects are the 4-connected regions of the `object_classes` (for ISBI 2012 the cells), unless the caller
  passes its own instance map.
- A distance is measured from the pixel centre to the nearest object pixel centre (exact Euclidean,
  `cv2.distanceTransform` with DIST_MASK_PRECISE), so a background pixel next to an object has d = 1.
- The border term is added to non-object pixels only (pixels in no object), as in the paper's Fig. 3d: the
  weight sits on the background between objects, never inside one. With fewer than 2 objects it is 0.
- Ignored pixels (IGNORE_INDEX) get weight 0: they are never objects and never count in the loss.
- Speed: an object only matters for pixels within `cutoff` of it, because d1 + d2 <= cutoff needs both
  distances <= cutoff. So each object's distance transform runs on its bounding box grown by `cutoff`
  (default 6 sigma), and a pixel whose two nearest objects are not both within `cutoff` gets no border term.
  That changes no weight by more than w0 * exp(-cutoff^2 / (2 sigma^2)) (= w0 * 1.5e-8 for 6 sigma).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import cv2
import numpy as np

from unetkit.atomic import atomic_write
from unetkit.config import IGNORE_INDEX, Config, DataConfig, WeightMapConfig
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.writers import write_image
from unetkit.errors import UnetkitError

CUTOFF_SIGMAS = 6.0  # default cutoff radius in units of sigma: the term beyond it is below w0 * 1.5e-8


def objects_from_mask(mask: np.ndarray, object_classes: list[int]) -> np.ndarray:
    """Instance labels (H, W) int32 of a class-index mask (H, W): 0 = no object, 1..n = objects.

    Objects are the 4-connected regions of pixels whose class is in `object_classes`; diagonal contact does
    not join two regions, so cells touching only at a corner stay two cells. Ignored pixels are never objects.
    """
    inside = np.isin(mask, [c for c in object_classes if c != IGNORE_INDEX])
    _, labels = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    return labels


def class_balance_weights(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """w_c per class (num_classes,) float32, so each class present in `mask` (H, W) adds up to the same weight.

    w_c = total / (K * count_c) over the non-ignored pixels, with K the number of classes present; a mask of
    one class gets 1. Classes absent from the mask get 1 (neutral; no pixel of this mask uses it).
    """
    valid = mask[mask != IGNORE_INDEX].ravel()
    if valid.size and int(valid.max()) >= num_classes:
        raise ValueError(f"mask holds class {int(valid.max())} but num_classes is {num_classes}")
    counts = np.bincount(valid, minlength=num_classes).astype(np.float64)
    weights = np.ones(num_classes, dtype=np.float64)
    present = counts > 0
    if present.any():
        weights[present] = valid.size / (present.sum() * counts[present])
    return weights.astype(np.float32)


def _two_nearest(instances: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances (H, W) float32 to the nearest and second-nearest object; inf where none lies within `cutoff`."""
    height, width = instances.shape
    d1 = np.full((height, width), np.inf, dtype=np.float32)
    d2 = np.full((height, width), np.inf, dtype=np.float32)
    ys, xs = np.nonzero(instances)
    if ys.size == 0:
        return d1, d2
    labels, inverse = np.unique(instances[ys, xs], return_inverse=True)
    # Bounding box of every object (n,), from one pass over its pixels.
    top = np.full(labels.size, height, dtype=np.int64)
    left = np.full(labels.size, width, dtype=np.int64)
    bottom = np.zeros(labels.size, dtype=np.int64)
    right = np.zeros(labels.size, dtype=np.int64)
    np.minimum.at(top, inverse, ys)
    np.minimum.at(left, inverse, xs)
    np.maximum.at(bottom, inverse, ys)
    np.maximum.at(right, inverse, xs)
    # Pixels outside the grown box are farther than `cutoff` from every pixel of the object.
    pad = math.ceil(cutoff) if math.isfinite(cutoff) else max(height, width)
    for k, label in enumerate(labels):
        y0, x0 = max(int(top[k]) - pad, 0), max(int(left[k]) - pad, 0)
        y1, x1 = min(int(bottom[k]) + pad + 1, height), min(int(right[k]) + pad + 1, width)
        outside = np.where(instances[y0:y1, x0:x1] == label, 0, 255).astype(np.uint8)
        dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # (h, w) float32
        near, second = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]  # views: updated in place
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def border_weight_map(
    mask: np.ndarray,
    instances: np.ndarray | None = None,
    *,
    object_classes: list[int],
    num_classes: int,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: np.ndarray | None = None,
    cutoff: float | None = None,
) -> np.ndarray:
    """The weight map (H, W) float32 of eq. 2 for a class-index mask (H, W).

    `instances` (H, W) labels the objects (0 = none); by default the 4-connected regions of `object_classes`.
    `class_weights` (num_classes,) is w_c; by default `class_balance_weights(mask, num_classes)`; pass ones
    for no balancing. `cutoff` (pixels, default 6 sigma) bounds the search, see the module docstring.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if instances is None:
        instances = objects_from_mask(mask, object_classes)
    elif instances.shape != mask.shape:
        raise ValueError(f"instances {instances.shape} and mask {mask.shape} differ in shape")
    if class_weights is None:
        class_weights = class_balance_weights(mask, num_classes)
    ignored = mask == IGNORE_INDEX
    lookup = np.zeros(256, dtype=np.float32)  # class index -> w_c; IGNORE_INDEX stays 0
    lookup[:num_classes] = class_weights
    weights = lookup[mask.astype(np.uint8)]
    if w0 > 0 and len(np.unique(instances[instances > 0])) >= 2:
        d1, d2 = _two_nearest(instances, CUTOFF_SIGMAS * sigma if cutoff is None else cutoff)
        border = w0 * np.exp(-np.square(d1 + d2) / (2.0 * sigma**2))  # 0 where d2 is inf
        background = (instances == 0) & ~ignored
        weights[background] += border[background]
    return weights.astype(np.float32)


class WeightMapCache:
    """Computes each mask's weight map once and keeps it: in memory, and as .npy under `cache_dir` if given.

    A map is keyed by the mask file's path and modification time, the parameters, and a digest of the decoded
    mask (so a changed mask encoding in the config never reuses a stale map from disk). Data loader workers
    each hold their own memory cache; the disk cache is what they share, written atomically.
    """

    def __init__(self, *, object_classes: list[int], num_classes: int, w0: float = 10.0, sigma: float = 5.0,
                 class_balance: bool = True, cache_dir: str | Path | None = None) -> None:
        self.object_classes = list(object_classes)
        self.num_classes = num_classes
        self.w0 = w0
        self.sigma = sigma
        self.class_balance = class_balance
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._maps: dict[str, np.ndarray] = {}

    def _key(self, path: Path, mask: np.ndarray) -> str:
        stat = os.stat(path)
        params = (str(Path(path).resolve()), stat.st_mtime_ns, self.object_classes, self.num_classes, self.w0,
                  self.sigma, self.class_balance, mask.shape, str(mask.dtype))
        digest = hashlib.sha1(repr(params).encode())
        digest.update(np.ascontiguousarray(mask).tobytes())
        return digest.hexdigest()

    def _compute(self, mask: np.ndarray) -> np.ndarray:
        class_weights = None if self.class_balance else np.ones(self.num_classes, dtype=np.float32)
        return border_weight_map(mask, object_classes=self.object_classes, num_classes=self.num_classes,
                                 w0=self.w0, sigma=self.sigma, class_weights=class_weights)

    def get(self, path: Path, mask: np.ndarray) -> np.ndarray:
        """The weight map (H, W) float32 of `mask` (H, W), read from file `path`; a copy the caller may modify."""
        key = self._key(path, mask)
        weights = self._maps.get(key)
        if weights is None:
            weights = self._load(key)
        if weights is None:
            weights = self._compute(mask)
            self._store(key, weights)
        self._maps[key] = weights
        return weights.copy()

    def _load(self, key: str) -> np.ndarray | None:
        if self.cache_dir is None or not (self.cache_dir / f"{key}.npy").is_file():
            return None
        return np.load(self.cache_dir / f"{key}.npy")

    def _store(self, key: str, weights: np.ndarray) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # atomic, under a unique temporary name: loader workers may store the same map at once
            with atomic_write(self.cache_dir / f"{key}.npy", unique=True) as file:
                np.save(file, weights)
        except OSError as err:
            raise UnetkitError(f"cannot write weight maps to {self.cache_dir}: {err.strerror}; set "
                               "data.weight_map.cache_dir to a writable folder") from None


def weight_cache(data: DataConfig) -> WeightMapCache | None:
    """The border weight maps of the paper, computed once per mask, when the config asks for them."""
    wm = data.weight_map
    if wm is None:
        return None
    return WeightMapCache(object_classes=wm.object_classes, num_classes=data.num_classes, w0=wm.w0, sigma=wm.sigma,
                          class_balance=wm.class_balance, cache_dir=wm.cache_dir)


def weight_map_picture(weights: np.ndarray) -> np.ndarray:
    """A (H, W, 3) uint8 picture of a weight map (H, W): matplotlib's 'viridis', 0 = dark blue, max = yellow."""
    from matplotlib import colormaps  # imported here: only `unetkit weightmap` draws pictures

    top = float(weights.max()) if weights.size else 0.0
    scaled = weights / top if top > 0 else np.zeros_like(weights)
    return colormaps["viridis"](np.clip(scaled, 0.0, 1.0), bytes=True)[..., :3]


def write_weight_maps(cfg: Config, masks: list[Path], output_dir: Path) -> list[Path]:
    """`unetkit weightmap`: the weight map of each mask file as a picture (`NAME_weights.png`) and as
    numbers (`NAME_weights.npy`, float32), with the settings of `cfg.data.weight_map` (paper defaults if unset)."""
    settings = cfg.data.weight_map or WeightMapConfig()
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in masks:
        mask = codec.decode(read_raw(path), str(path))
        balance = None if settings.class_balance else np.ones(cfg.data.num_classes, np.float32)
        weights = border_weight_map(mask, object_classes=settings.object_classes, num_classes=cfg.data.num_classes,
                                    w0=settings.w0, sigma=settings.sigma, class_weights=balance)
        picture = output_dir / f"{path.stem}_weights.png"
        write_image(picture, weight_map_picture(weights))
        np.save(output_dir / f"{path.stem}_weights.npy", weights)
        written.append(picture)
    return written
