"""A tiny synthetic training setup shared by the training tests (64x64 images, a 2-level U-Net)."""

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from unetkit.config import Config, load_config
from unetkit.data.synthetic import make_synthetic_dataset
from unetkit.demo import demo_config

TINY_MODEL = ["model.depth=2", "model.base_channels=8"]


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
        return load_config(path, [*TINY_MODEL, *overrides])

    return build
