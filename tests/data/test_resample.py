"""Training and predicting at a reduced resolution (`data.scale`): crops come from shrunk images and masks,
and predictions are made small but returned, written and scored at the original size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetkit.config import DataConfig, MaskConfig, config_from_dict
from unetkit.data.dataset import FolderDataset
from unetkit.data.masks import MaskCodec
from unetkit.data.resample import grow_probabilities, shrink_image, shrink_mask
from unetkit.infer.inference import model_predictor, open_inference
from unetkit.models.unet import UNet


def test_masks_shrink_without_blending_classes() -> None:
    mask = np.repeat(np.arange(4, dtype=np.uint8), 25)[None].repeat(100, 0)  # (100, 100) classes 0..3 in bands
    small = shrink_mask(mask, 0.3)
    assert small.shape == (30, 30) and set(np.unique(small)) == {0, 1, 2, 3}
    image = np.random.default_rng(0).random((100, 80, 3)).astype(np.float32)
    assert shrink_image(image, 0.5).shape == (50, 40, 3)
    probs = torch.softmax(torch.randn(3, 10, 8), 0)
    grown = grow_probabilities(probs, 40, 32)
    assert grown.shape == (3, 40, 32) and torch.allclose(grown.sum(0), torch.ones(40, 32), atol=1e-5)


def test_training_crops_come_from_the_shrunk_image(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((200, 120), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((200, 120), np.uint8)).save(tmp_path / "masks" / "a.png")
    seen = {}

    def record(image: np.ndarray, mask: np.ndarray) -> dict:
        seen["shape"] = image.shape[:2], mask.shape
        return {"image": image, "mask": mask}

    FolderDataset(tmp_path / "images", tmp_path / "masks", codec=MaskCodec(MaskConfig(), 2), transform=record,
                  scale=0.25)[0]
    assert seen["shape"] == ((50, 30), (50, 30))


def test_a_scaled_model_predicts_at_full_size_from_its_small_pass() -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="same", batch_norm=True).eval()
    cfg = config_from_dict({"data": {"scale": 0.5, "mean": [0.3], "std": [0.2]}})
    inference = open_inference(model_predictor(model, torch.device("cpu")), cfg, cfg.infer)
    image = np.random.default_rng(0).random((90, 70, 1)).astype(np.float32)
    probs = np.empty((2, 90, 70), np.float32)
    classes = inference.segment(image, probs)
    assert classes.shape == (90, 70)
    # the same as running the full-scale inference on the shrunk image and growing its probabilities
    full_scale = open_inference(model_predictor(model, torch.device("cpu")),
                                cfg.model_copy(update={"data": DataConfig(mean=[0.3], std=[0.2])}), cfg.infer)
    small = np.empty((2, 45, 35), np.float32)
    full_scale.segment(shrink_image(image, 0.5), small)
    expected = grow_probabilities(torch.from_numpy(small), 90, 70).numpy()
    assert np.array_equal(probs, expected)
    assert np.array_equal(classes, expected.argmax(0).astype(np.uint8))
