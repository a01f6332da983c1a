"""The built-in demo dataset: synthetic microscopy-like scenes, generated here from a seed.

Each image shows round "cells" and elongated "fibres" on a textured background. The classes are built so
that a single intensity threshold cannot separate them: fibre intensities overlap the cells' range, cells
have a dark rim and touch their neighbours (the separating boundary is the hard part, as in the U-Net
paper), and everything sits on a slowly varying, noisy background. Shape and texture decide the class, which
is what a small U-Net learns in a couple of CPU minutes. Everything is drawn with numpy and OpenCV from
`np.random.default_rng(seed)`, so the same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from unetkit.data.writers import write_image, write_mask

DEMO_CLASSES = ["background", "cell", "fibre"]
DEMO_PALETTE = [(0, 0, 0), (230, 60, 60), (60, 160, 230)]


def _smooth_noise(rng: np.random.Generator, size: int, grain: float) -> np.ndarray:
    """`(size, size)` float32 noise with features about `grain` pixels wide, scaled to zero mean, unit std."""
    coarse = max(2, round(size / grain))
    field = cv2.resize(
        rng.standard_normal((coarse, coarse)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    return (field - field.mean()) / (field.std() + 1e-6)


def _draw_cells(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, scale: float) -> None:
    """Elliptical cells with a textured bright interior and a dark rim; many grow next to a neighbour."""
    size = image.shape[0]
    texture = _smooth_noise(rng, size, 3.0 * scale)
    centres: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(6, 10))):
        radius = float(rng.uniform(9.0, 15.0)) * scale
        if centres and rng.random() < 0.6:
            # a neighbour at about the sum of radii: touching, sometimes slightly overlapping
            cx, cy, cr = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0.0, 2.0 * np.pi)
            dist = (cr + radius) * rng.uniform(0.85, 1.0)
            x, y = cx + dist * np.cos(angle), cy + dist * np.sin(angle)
        else:
            x, y = rng.uniform(0.1, 0.9, size=2) * size
        centres.append((x, y, radius))
        axes = (max(3, round(radius)), max(3, round(radius * rng.uniform(0.7, 1.0))))
        body = np.zeros_like(label)
        cv2.ellipse(body, (round(x), round(y)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1, cv2.LINE_8)
        inside = body.astype(bool)
        rim = inside & ~cv2.erode(body, np.ones((3, 3), np.uint8), iterations=max(1, round(2 * scale))).astype(bool)
        brightness = rng.uniform(0.62, 0.78)
        image[inside] = brightness + 0.10 * texture[inside]
        image[rim] = rng.uniform(0.18, 0.26)
        label[inside] = 1


def _draw_fibres(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, scale: float) -> None:
    """Long, gently curving strands with a smooth striated texture, drawn over the cells."""
    size = image.shape[0]
    steps = np.arange(0, int(1.6 * size), 2)
    for _ in range(int(rng.integers(3, 5))):
        x, y = rng.uniform(0.0, 1.0, size=2) * size
        heading = rng.uniform(0.0, 2.0 * np.pi)
        turn = np.cumsum(rng.normal(0.0, 0.06, size=len(steps)))  # random-walk curvature: smooth bends
        xs = x + np.cumsum(2.0 * np.cos(heading + turn))
        ys = y + np.cumsum(2.0 * np.sin(heading + turn))
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        strand = np.zeros_like(label)
        width = max(4, round(float(rng.uniform(5.0, 7.0)) * scale))
        cv2.polylines(strand, [points], False, 1, width, cv2.LINE_8)
        inside = strand.astype(bool)
        # bands across the strand: intensity oscillates with the distance from its first point
        phase = np.hypot(*np.nonzero(inside)[::-1] - points[:1].T)
        image[inside] = rng.uniform(0.45, 0.6) + 0.12 * np.sin(phase * 1.3)
        label[inside] = 2


def make_sample(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One scene: `(size, size)` uint8 gray image and `(size, size)` uint8 class indices (0/1/2)."""
    scale = size / 128.0
    image = 0.3 + 0.08 * _smooth_noise(rng, size, 40.0 * scale) + 0.04 * _smooth_noise(rng, size, 2.0)
    label = np.zeros((size, size), np.uint8)
    _draw_cells(rng, image, label, scale)
    _draw_fibres(rng, image, label, scale)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.8)
    image += rng.normal(0.0, 0.04, image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8), label


def make_synthetic_dataset(root: Path, n_train: int = 40, n_val: int = 10, size: int = 128, seed: int = 0) -> Path:
    """Write the demo dataset under `root` and return `root`.

    Layout: `{train,val}/images/sample_NNN.png` (8-bit gray) and `{train,val}/masks/sample_NNN.png` (RGB
    colours of `DEMO_PALETTE`), plus `SOURCE.md`. Every sample has its own generator seeded by
    `(seed, split, index)`, so a sample does not change when the counts do.
    """
    root = Path(root)
    colours = np.array(DEMO_PALETTE, dtype=np.uint8)
    for split_id, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        for i in range(count):
            image, label = make_sample(np.random.default_rng([seed, split_id, i]), size)
            write_image(root / split / "images" / f"sample_{i:03d}.png", image)
            write_mask(root / split / "masks" / f"sample_{i:03d}.png", colours[label])
    (root / "SOURCE.md").write_text(_source_text(n_train, n_val, size, seed))
    return root


def _source_text(n_train: int, n_val: int, size: int, seed: int) -> str:
    colours = "\n".join(
        f"| {i} | {name} | {list(c)} |" for i, (name, c) in enumerate(zip(DEMO_CLASSES, DEMO_PALETTE, strict=True))
    )
    return f"""# unetkit synthetic demo data

Generated by `unetkit.data.synthetic.make_synthetic_dataset` (numpy + OpenCV, no downloads) with
seed {seed}: {n_train} training and {n_val} validation images of {size}x{size} pixels.

Each image is a microscopy-like scene: a noisy, slowly varying background; elliptical cells with a bright
textured interior and a dark rim, many touching or overlapping a neighbour; and three or four long curving
fibres (at least 4 px wide) with a striped texture whose intensity overlaps the cells' range, drawn over the
cells. The whole scene is blurred and gets Gaussian noise. A threshold cannot separate the classes; shape and
texture can.

- `train/images`, `val/images`: 8-bit gray PNG.
- `train/masks`, `val/masks`: RGB PNG, one colour per class (`data.mask.encoding: palette`):

| index | class | colour (R, G, B) |
|---|---|---|
{colours}

The same seed gives byte-identical files.
"""
