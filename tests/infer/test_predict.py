"""Predicted masks come back in the training data's own encoding, at the input's size."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import Config, config_from_dict
from unetkit.infer.predict import predict
from unetkit.models.build import build_model


def _checkpoint(tmp_path: Path, data: dict, loss: dict | None = None, padding: str = "same") -> Path:
    """An untrained but complete checkpoint: enough to check shapes and encodings."""
    cfg: Config = config_from_dict({"data": data, "model": {"depth": 2, "base_channels": 4, "padding": padding},
                                    **({"loss": loss} if loss else {})})
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.channels, out_channels(cfg))
    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(model, cfg, epoch=0), path)
    return path


def _image(folder: Path, name: str, shape: tuple[int, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
    return folder / name


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_binary_masks_stay_0_255_at_any_size(tmp_path: Path, padding: str) -> None:
    ckpt = _checkpoint(tmp_path, {"classes": ["bg", "fg"], "mask": {"encoding": "binary", "foreground_value": 0}},
                       loss={"terms": [{"name": "bce"}]}, padding=padding)
    _image(tmp_path / "in", "odd.png", (37, 53))
    written = predict(ckpt, [tmp_path / "in"], tmp_path / "out", overlays=True, probabilities=True, progress=False)
    mask = np.asarray(Image.open(written[0]))
    assert mask.shape == (37, 53) and set(np.unique(mask).tolist()) <= {0, 255}
    probs = np.load(tmp_path / "out" / "odd_probs.npy")
    assert probs.shape == (2, 37, 53)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
    # class 1 (foreground) is written as 0, the declared foreground value
    assert np.array_equal(mask == 0, probs[1] > probs[0])
    assert np.asarray(Image.open(tmp_path / "out" / "odd_overlay.png")).shape == (37, 53, 3)


def test_palette_masks_stay_palette_rgb(tmp_path: Path) -> None:
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    ckpt = _checkpoint(tmp_path, {"channels": 3, "classes": ["a", "b", "c"],
                                  "mask": {"encoding": "palette", "palette": palette}})
    _image(tmp_path / "in", "rgb.png", (20, 30, 3))
    mask = np.asarray(Image.open(predict(ckpt, [tmp_path / "in" / "rgb.png"], tmp_path / "out", progress=False)[0]))
    assert mask.shape == (20, 30, 3)
    assert {tuple(c) for c in mask.reshape(-1, 3).tolist()} <= {tuple(c) for c in palette}


def test_gray_values_masks_use_the_declared_values(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, {"classes": ["a", "b", "c", "d"],
                                  "mask": {"encoding": "gray_values", "values": [33, 201, 231, 65]}})
    _image(tmp_path / "in", "g.png", (24, 24))
    mask = np.asarray(Image.open(predict(ckpt, [tmp_path / "in"], tmp_path / "out", progress=False)[0]))
    assert set(np.unique(mask).tolist()) <= {33, 201, 231, 65}


def test_real_isbi_slice_keeps_size_and_encoding(tmp_path: Path, shared_datasets: Path) -> None:
    ckpt = _checkpoint(tmp_path, {"classes": ["cell", "membrane"],
                                  "mask": {"encoding": "binary", "foreground_value": 0}}, padding="valid")
    source = shared_datasets / "isbi2012" / "test" / "images" / "3.png"
    mask = np.asarray(Image.open(predict(ckpt, [source], tmp_path / "out", progress=False)[0]))
    assert mask.shape == (512, 512) and set(np.unique(mask).tolist()) <= {0, 255}
