"""Per-image stretching (`data.normalize: image`) is taken over the whole image, so tiles, training crops and
whole images see the same values; and `data.foreground_crops` puts crops on objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetkit.config import DataConfig, MaskConfig
from unetkit.data.dataset import FolderDataset
from unetkit.data.masks import MaskCodec
from unetkit.data.source import make_prepare
from unetkit.data.transforms import train_transform

PER_IMAGE = DataConfig(normalize="image", mean=[0.5], std=[0.25])


def _image(gain: float, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip((rng.random((size, size, 1)) * 0.5 + 0.1) * gain, 0, 1).astype(np.float32)


def test_a_tile_is_stretched_by_its_whole_image() -> None:
    image = _image(1.0)
    image[:8] = 1.0  # a bright band in the top rows only: a tile without it would stretch differently
    whole = make_prepare(PER_IMAGE, image)(image)  # (1, 64, 64)
    tile = make_prepare(PER_IMAGE, image)(image[32:, 16:48])
    assert torch.equal(tile, whole[:, 32:, 16:48])


def test_images_of_different_gain_look_alike_after_stretching() -> None:
    dark, bright = _image(0.5), _image(1.5)
    apart = (make_prepare(DataConfig(), dark)(dark) - make_prepare(DataConfig(), bright)(bright)).abs().max()
    alike = (make_prepare(PER_IMAGE, dark)(dark) - make_prepare(PER_IMAGE, bright)(bright)).abs().max()
    assert apart > 1.0 and alike < 1e-4


def test_training_items_are_stretched_like_inference_inputs(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    pixels = (_image(0.7)[..., 0] * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "masks" / "a.png")
    cfg = PER_IMAGE.model_copy(update={"crop_size": 64, "augment": []})
    dataset = FolderDataset(tmp_path / "images", tmp_path / "masks", codec=MaskCodec(MaskConfig(), 2),
                            transform=train_transform(cfg), per_image=True)
    raw = pixels[..., None]
    assert torch.allclose(dataset[0]["image"], make_prepare(cfg, raw)(raw), atol=1e-6)


def test_foreground_crops_land_on_objects() -> None:
    mask = np.zeros((256, 256), np.uint8)
    mask[200:208, 10:18] = 1  # one small object: a 32 px crop holds it ~2% of the time
    image = np.random.default_rng(0).random((256, 256, 1)).astype(np.float32)

    def share(foreground_crops: float) -> float:
        transform = train_transform(DataConfig(crop_size=32, augment=[], foreground_crops=foreground_crops))
        return float(np.mean([transform(image=image, mask=mask)["mask"].any() for _ in range(200)]))

    assert share(0.0) < 0.1
    assert 0.35 < share(0.5) < 0.7
    assert share(1.0) == 1.0
