"""Augmentation built from albumentations' serialized form; masks never get invented values."""

import numpy as np
import pytest

from unetkit.config import DataConfig
from unetkit.data.transforms import default_augment, eval_transform, train_transform
from unetkit.errors import UnetkitError


def test_default_pipeline_is_serialized_albumentations() -> None:
    names = [t["__class_fullname__"] for t in default_augment()]
    assert names == ["HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine", "RandomBrightnessContrast",
                     "unetkit.data.elastic.GridElastic"]


def test_masks_keep_their_labels_under_every_default_transform() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((48, 48, 1), dtype=np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:30, 5:40] = 1
    mask[20:45, 20:25] = 2
    cfg = DataConfig(classes=["a", "b", "c"], crop_size=40,
                     augment=[{**t, "p": 1.0} for t in default_augment()])  # every transform, every time
    transform = train_transform(cfg)
    for _ in range(10):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (40, 40, 1)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 1, 2}


def test_small_images_are_mirror_padded_to_the_crop() -> None:
    image = np.linspace(0, 1, 20 * 20, dtype=np.float32).reshape(20, 20, 1)
    cfg = DataConfig(crop_size=32, augment=[])
    out = train_transform(cfg)(image=image, mask=np.zeros((20, 20), np.uint8))
    assert out["image"].shape == (32, 32, 1)


def test_eval_transform_normalizes_exactly() -> None:
    cfg = DataConfig(mean=[0.5], std=[0.25])
    image = np.array([[[0.0], [0.5]], [[0.75], [1.0]]], np.float32)
    out = eval_transform(cfg)(image=image)["image"]
    np.testing.assert_allclose(out[..., 0], [[-2.0, 0.0], [1.0, 2.0]], atol=1e-6)


def test_unknown_transform_is_named() -> None:
    cfg = DataConfig(augment=[{"__class_fullname__": "HorizontalFlip", "p": 0.5},
                              {"__class_fullname__": "NoSuchFlip", "p": 0.5}])
    with pytest.raises(UnetkitError, match=r"data.augment\[1\] \(NoSuchFlip\)"):
        train_transform(cfg)


def test_valid_network_crops_reach_border_pixels_with_mirrored_context() -> None:
    # a 40x40 image whose border pixels are labelled 1; crops of 24 with margin 8 have an 8x8 output centre.
    # With the mirror-extrapolated context that centre can sit on the border (crop start 0 or 32 on an axis of
    # the 56-pixel padded image: 4 chances in 33 per draw); without it the centre spans rows 8..31 only.
    mask = np.ones((40, 40), np.uint8)
    mask[1:-1, 1:-1] = 0
    image = np.zeros((40, 40, 1), np.float32)
    cfg = DataConfig(crop_size=24, augment=[])

    def corner_hits(margin: int) -> int:
        transform = train_transform(cfg, margin)
        return sum(int(transform(image=image, mask=mask)["mask"][8:16, 8:16].any()) for _ in range(400))

    assert corner_hits(8) > 0
    assert corner_hits(0) == 0


def test_crops_on_objects_give_a_rare_class_its_share() -> None:
    # class 1 fills the left half of a 128x128 mask, class 2 is one 3x3 patch far to the right (9 of ~8200
    # object pixels). A crop placed on a random object pixel would hold class 2 about once in 900 draws; with
    # the class drawn first, half the crops are put on it.
    mask = np.zeros((128, 128), np.uint8)
    mask[:, :64] = 1
    mask[100:103, 100:103] = 2
    image = np.zeros((128, 128, 1), np.float32)
    cfg = DataConfig(classes=["a", "b", "c"], crop_size=16, augment=[], foreground_crops=1.0)
    transform = train_transform(cfg)
    outs = [transform(image=image, mask=mask)["mask"] for _ in range(400)]
    with_rare = sum(int((out == 2).any()) for out in outs)
    assert 140 <= with_rare <= 260
    assert all((out > 0).any() for out in outs)  # every crop holds an object


def test_crops_on_objects_can_choose_class_zero_when_another_class_is_background() -> None:
    mask = np.full((64, 64), 1, np.uint8)  # class 1 is the background here
    mask[5:8, 5:8] = 0
    image = np.zeros((64, 64, 1), np.float32)
    cfg = DataConfig(classes=["a", "b"], crop_size=8, augment=[], foreground_crops=1.0, background_class=1)
    transform = train_transform(cfg)
    assert all((transform(image=image, mask=mask)["mask"] == 0).any() for _ in range(50))
