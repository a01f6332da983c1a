"""The U-Net paper's elastic deformation (Ronneberger et al. 2015, section 3.1) as an albumentations transform.

"Random displacement vectors on a coarse 3 by 3 grid, sampled from a Gaussian with 10 pixels standard
deviation; per-pixel displacements are then computed using bicubic interpolation." No albumentations 2.0
transform does this: `ElasticTransform` gaussian-smooths a per-pixel random field, `GridDistortion` moves grid
lines along one axis at a time, and `PiecewiseAffine` is piecewise linear between its nodes.

Conventions, all fixed here so that tests can check them by hand:
- Grid nodes span the image, corners included: node k of a `g`-node axis of length n sits at pixel
  k * (n - 1) / (g - 1) (align-corners). The field equals the sampled vector exactly at every node that
  falls on a pixel.
- Between nodes the field is Keys' cubic convolution (a = -0.5, the classic "bicubic"), separable in y and
  x. The node row/column just outside the grid is extrapolated linearly (2 v[0] - v[1]), so a field whose
  node vectors are linear in the grid index is linear at every pixel, edges included.
- A displacement d moves content by +d: output(p) = input(p - d(p)). A constant (+3, 0) shifts the
  picture 3 px to the right.
- Images are resampled with `interpolation` (default bilinear: no overshoot outside the input's range);
  masks and any extra mask-type target (a loss weight map) with `mask_interpolation` (default nearest) so
  labels and weights are moved, never blended. Borders are mirrored (reflect-101) as in the paper; with
  `cv2.BORDER_CONSTANT`, `fill_mask=255` (IGNORE_INDEX) keeps the invented border out of the loss.

Serialized name: `A.to_dict` writes `__class_fullname__: unetkit.data.elastic.GridElastic`, and
`A.from_dict` finds the class under exactly that name once this module has been imported, e.g. in a config:
`{__class_fullname__: unetkit.data.elastic.GridElastic, grid: 3, sigma: 10.0, p: 0.5}`. The short name
`GridElastic` is not found: albumentations only shortens names of its own transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from albumentations.core.type_definitions import Targets
from pydantic import Field

_A = -0.5  # Keys' cubic convolution parameter; interpolating and exact for quadratics

_Interpolation = Literal[cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4]
_Border = Literal[
    cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE, cv2.BORDER_REFLECT, cv2.BORDER_WRAP, cv2.BORDER_REFLECT_101
]


def _keys_kernel(s: np.ndarray) -> np.ndarray:
    """Cubic convolution weight at signed distance `s` (in node steps): 1 at 0, 0 at every other integer."""
    s = np.abs(s)
    near = (_A + 2) * s**3 - (_A + 3) * s**2 + 1
    far = _A * s**3 - 5 * _A * s**2 + 8 * _A * s - 4 * _A
    return np.where(s <= 1, near, np.where(s < 2, far, 0.0))


def _cubic_weights(length: int, nodes: int) -> np.ndarray:
    """(length, nodes) matrix taking node values along one axis to its `length` pixels (align-corners)."""
    # Integer product before the division keeps node positions exact, e.g. 6 * 2 / 12 == 1.0.
    u = np.arange(length) * (nodes - 1) / max(length - 1, 1)  # pixel positions in node units
    base = np.clip(np.floor(u).astype(int), 0, nodes - 2)
    t = u - base
    rows = np.arange(length)
    padded = np.zeros((length, nodes + 2))  # columns: the extrapolated node -1, nodes 0..g-1, node g
    for offset in (-1, 0, 1, 2):
        padded[rows, base + offset + 1] = _keys_kernel(t - offset)
    extend = np.zeros((nodes + 2, nodes))  # node values -> padded node values (linear extrapolation)
    extend[1:-1] = np.eye(nodes)
    extend[0, :2] = (2.0, -1.0)
    extend[-1, -2:] = (-1.0, 2.0)
    return padded @ extend


def displacement_field(vectors: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-pixel displacements (height, width, 2) from node vectors (gy, gx, 2) by bicubic interpolation.

    `vectors[i, j]` is the (dx, dy) displacement, in pixels, of the node in grid row i and column j; the
    result keeps that (dx, dy) order. Float64, so values at nodes equal `vectors` exactly.
    """
    if vectors.ndim != 3 or vectors.shape[2] != 2 or min(vectors.shape[:2]) < 2:
        raise ValueError(f"vectors must have shape (gy >= 2, gx >= 2, 2), got {vectors.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    wy = _cubic_weights(height, vectors.shape[0])  # (H, gy)
    wx = _cubic_weights(width, vectors.shape[1])  # (W, gx)
    return np.stack([wy @ vectors[..., c].astype(np.float64) @ wx.T for c in range(2)], axis=-1)


def _remap(array: np.ndarray, map_xy: np.ndarray, interpolation: int, border: int, fill: Any) -> np.ndarray:
    """cv2.remap for (H, W) or (H, W, C) arrays of any C: cv2 takes at most 4 channels and drops a last 1."""
    fills = list(fill) if isinstance(fill, Sequence) else None
    if array.ndim == 2:
        value = fills[0] if fills else fill
        return cv2.remap(array, map_xy, None, interpolation, borderMode=border, borderValue=(value,) * 4)
    chunks = []
    for start in range(0, array.shape[2], 4):
        part = np.ascontiguousarray(array[..., start : start + 4])
        # A scalar borderValue fills channel 0 only, hence one value per channel.
        value = fills[start : start + 4] if fills else [fill] * part.shape[2]
        out = cv2.remap(part, map_xy, None, interpolation, borderMode=border, borderValue=tuple(value))
        chunks.append(out.reshape(*out.shape[:2], part.shape[2]))
    return np.concatenate(chunks, axis=2)


class GridElastic(A.DualTransform):
    """Smooth random deformation: N(0, sigma^2) vectors on a grid x grid lattice, bicubic in between.

    Args:
        grid: nodes per axis (paper: 3).
        sigma: standard deviation of each displacement component in pixels (paper: 10).
        interpolation: cv2 flag for images.
        mask_interpolation: cv2 flag for masks and weight maps; keep nearest so labels never blend.
        border_mode: cv2 border for pixels pulled from outside the image (paper: mirrored).
        fill, fill_mask: values for `cv2.BORDER_CONSTANT` (scalar or one per channel).
        p: probability of applying the transform.

    Targets: image, mask. Image types: uint8, float32.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    class InitSchema(BaseTransformInitSchema):
        grid: int = Field(ge=2)
        sigma: float = Field(ge=0.0)
        interpolation: _Interpolation
        mask_interpolation: _Interpolation
        border_mode: _Border
        fill: tuple[float, ...] | float
        fill_mask: tuple[float, ...] | float

    def __init__(
        self,
        grid: int = 3,
        sigma: float = 10.0,
        interpolation: _Interpolation = cv2.INTER_LINEAR,
        mask_interpolation: _Interpolation = cv2.INTER_NEAREST,
        border_mode: _Border = cv2.BORDER_REFLECT_101,
        fill: tuple[float, ...] | float = 0,
        fill_mask: tuple[float, ...] | float = 0,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.grid = grid
        self.sigma = sigma
        self.interpolation = interpolation
        self.mask_interpolation = mask_interpolation
        self.border_mode = border_mode
        self.fill = fill
        self.fill_mask = fill_mask

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("grid", "sigma", "interpolation", "mask_interpolation", "border_mode", "fill", "fill_mask")

    def get_params(self) -> dict[str, Any]:
        # The transform's own generator, which A.Compose(..., seed=...) seeds, makes runs reproducible.
        return {"vectors": self.random_generator.normal(0.0, self.sigma, size=(self.grid, self.grid, 2))}

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        field = displacement_field(params["vectors"], height, width)  # (H, W, 2) as (dx, dy)
        ys, xs = np.mgrid[:height, :width]
        # Sampling at p - d(p) moves content by +d.
        map_xy = np.stack([xs - field[..., 0], ys - field[..., 1]], axis=-1).astype(np.float32)
        return {"map_xy": map_xy}

    def apply(self, img: np.ndarray, map_xy: np.ndarray, **params: Any) -> np.ndarray:
        return _remap(img, map_xy, self.interpolation, self.border_mode, self.fill)

    def apply_to_mask(self, mask: np.ndarray, map_xy: np.ndarray, **params: Any) -> np.ndarray:
        return _remap(mask, map_xy, self.mask_interpolation, self.border_mode, self.fill_mask)
