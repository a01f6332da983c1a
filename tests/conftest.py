"""Shared fixtures: a tiny labelled dataset, a config that trains on it in about a second, a checkpoint.

Names start with `tiny_` so they do not collide with fixtures of the per-package test folders.
`shared_datasets` points at the real datasets next to the repository (skipped where absent, a failure in CI).

Dataset layout (`tiny_dataset`)::

    ROOT/images/img_0.png ... img_3.png   32x32 gray, a bright disk on a dark noisy background
    ROOT/masks/img_0.png  ... img_3.png   32x32, 255 inside the disk, 0 elsewhere (binary encoding)
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # tests split over processes: one thread each, so they do not contend
    os.environ.setdefault("OMP_NUM_THREADS", "1")
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from unetkit.config import Config, load_config
from unetkit.data.synthetic import make_synthetic_dataset
from unetkit.demo import demo_config

TINY_SIZE = 32  # side of every tiny image; a padded depth-2 U-Net accepts multiples of 4
TINY_COUNT = 4  # pairs; val_fraction 0.2 holds out round(0.8) = 1 of them
# Real datasets (isbi2012, camvid, sandstone) live beside the repository; UNETKIT_DATASETS points elsewhere.
DATASETS = Path(os.environ.get("UNETKIT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


class SameSize:
    """Base of the stand-in networks of the inference tests: padded (as many pixels out as in), no pooling grid;
    a subclass's `__call__` maps (N, C, h, w) to (N, K, h, w) probabilities of its choosing."""

    margin, stride = 0, 1

    def output_size(self, size: int) -> int:
        return size

    def input_size_for(self, size: int) -> int:
        return size

    def is_valid_input(self, size: int) -> bool:
        return True


def write_tiny_dataset(root: Path, count: int = TINY_COUNT, size: int = TINY_SIZE) -> Path:
    """Write `count` image/mask pairs under `root/images` and `root/masks`; returns `root`."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2  # (H, W) bool
        image = np.where(inside, 200, 40) + rng.integers(-20, 21, size=(size, size))
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"img_{i}.png")
        Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).save(root / "masks" / f"img_{i}.png")
    return root


def tiny_config_tree(root: Path, output_dir: Path) -> dict[str, Any]:
    """The tiny run as a YAML-ready tree: padded U-Net of depth 2 with 4 base channels, 1 epoch on CPU."""
    return {
        "data": {
            "root": str(root),
            "train_images": "images",
            "train_masks": "masks",
            "classes": ["background", "foreground"],
            "mask": {"encoding": "binary", "foreground_value": 255},
            "crop_size": TINY_SIZE,
            "batch_size": 2,
            "augment": [],
        },
        "model": {"padding": "same", "depth": 2, "base_channels": 4},
        "train": {"epochs": 1, "device": "cpu", "output_dir": str(output_dir), "run_name": "tiny",
                  "sample_images": 1},
    }


def write_tiny_config(path: Path, root: Path, output_dir: Path) -> Path:
    path.write_text(yaml.safe_dump(tiny_config_tree(root, output_dir), sort_keys=False))
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Folder with `images/` and `masks/`: 4 pairs of 32x32 gray PNGs, binary 0/255 masks."""
    return write_tiny_dataset(tmp_path / "tiny_data")


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_dataset: Path) -> Path:
    """YAML config training on `tiny_dataset` for 1 epoch; its runs go to `tmp_path / "runs"`."""
    return write_tiny_config(tmp_path / "tiny.yaml", tiny_dataset, tmp_path / "runs")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_config: Path) -> Path:
    """An untrained but well-formed checkpoint of the tiny model: enough to drive evaluate / predict."""
    from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
    from unetkit.config import load_config
    from unetkit.models.build import build_model

    cfg = load_config(tiny_config)
    model = build_model(cfg.model, cfg.data.channels, out_channels(cfg))
    path = tmp_path / "tiny_untrained.pt"
    save_checkpoint(make_checkpoint(model, cfg, epoch=0), path)
    return path


@pytest.fixture
def tiny_config_writer(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny config with changed sections: `tiny_config_writer(root, model={"depth": 3})`."""

    def write(root: Path, name: str = "tiny_custom.yaml", **sections: dict[str, Any]) -> Path:
        tree = tiny_config_tree(root, tmp_path / "runs")
        for section, values in sections.items():
            tree.setdefault(section, {}).update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Folder holding the real datasets (`isbi2012/`, `camvid/`, ...).

    Tests using it skip when it is missing on a developer's machine, but fail under CI (`CI=true`), where the
    datasets are always provided: a silently skipped real-data test would hide a broken path setting.
    """
    if not DATASETS.is_dir():
        message = f"real datasets not found at {DATASETS} (set UNETKIT_DATASETS)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return DATASETS


TINY_TRAIN_MODEL = ["model.depth=2", "model.base_channels=8"]


@pytest.fixture
def synthetic_config(tmp_path: Path) -> Callable[..., Config]:
    """Factory: a config training on 8 synthetic 64x64 images (3 for validation), with `overrides` applied."""
    make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=3, size=64, seed=1)
    tree = demo_config(tmp_path).model_dump(mode="json")
    tree["data"].update(crop_size=64, batch_size=4)
    tree["train"].update(epochs=4, sample_images=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))

    def build(*overrides: str) -> Config:
        return load_config(path, [*TINY_TRAIN_MODEL, *overrides])

    return build
