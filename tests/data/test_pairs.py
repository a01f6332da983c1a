"""Band splits: every image trained on above its cut and validated below it, the two parts never overlapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset

from unetkit.config import DataConfig, MaskConfig
from unetkit.data.dataset import dataset_pairs, load_pair, scan_pairs
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec
from unetkit.data.pairs import Pair, band_height, band_pairs, row_slice
from unetkit.errors import UnetkitError


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5, 0.9])
def test_the_two_bands_of_an_image_tile_it_exactly(fraction: float) -> None:
    train, val = band_pairs([(Path("a.png"), Path("a.png"))], fraction)
    for height in range(1, 300):
        top, bottom = row_slice(height, train[0].rows), row_slice(height, val[0].rows)
        assert (top.start, top.stop, bottom.stop) == (0, bottom.start, height)
        assert abs(band_height(height, val[0].rows) - height * fraction) <= 1


def _config(root: Path, **extra: object) -> DataConfig:
    return DataConfig(root=str(root), train_images="images", train_masks="masks",
                      mask=MaskConfig(encoding="binary"), **extra)


def test_a_band_split_trains_and_validates_on_disjoint_rows_of_every_image(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "d", count=3, size=50)
    cfg = _config(root, val_split="bands", val_fraction=0.2)
    train, val = dataset_pairs(cfg)
    assert [p.image.name for p in train] == [p.image.name for p in val] == ["img_0.png", "img_1.png", "img_2.png"]
    codec = MaskCodec(cfg.mask, cfg.num_classes)
    masks = DecodedMasks()  # one decoded mask serves both bands of its image
    for top, bottom in zip(train, val, strict=True):
        whole_image, whole_mask = load_pair(Pair(top.image, top.mask), 1, codec)
        image_a, mask_a = load_pair(top, 1, codec, masks)
        image_b, mask_b = load_pair(bottom, 1, codec, masks)
        assert (image_a.shape[0], image_b.shape[0], mask_a.shape[0], mask_b.shape[0]) == (40, 10, 40, 10)
        np.testing.assert_array_equal(np.concatenate([image_a, image_b]), whole_image)
        np.testing.assert_array_equal(np.concatenate([mask_a, mask_b]), whole_mask)
    assert len(masks) == 3
    sizes: list[tuple[int, int]] = []
    scan_pairs(val, 1, codec, sizes=sizes)
    assert sizes == [(10, 50)] * 3


def test_one_image_can_be_split_into_bands_though_not_into_images(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "d", count=1, size=40)
    with pytest.raises(UnetkitError, match="need at least 2"):
        dataset_pairs(_config(root))
    train, val = dataset_pairs(_config(root, val_split="bands"))
    assert (len(train), len(val)) == (1, 1)
