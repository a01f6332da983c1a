"""Lazy reading: plain TIFFs are memory-mapped and prepared tile by tile exactly as whole images are."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit.config import DataConfig
from unetkit.data.source import make_prepare, open_image


def test_uncompressed_16bit_tiff_is_memory_mapped_and_prepared_like_a_decoded_image(tmp_path: Path) -> None:
    raw = np.random.default_rng(0).integers(0, 65535, (40, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    Image.fromarray(raw).save(tmp_path / "a.png")
    mapped = open_image(tmp_path / "a.tif", 1)
    decoded = open_image(tmp_path / "a.png", 1)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.uint16
    assert decoded.dtype == np.float32 and decoded.shape == (40, 30, 1)
    prepare = make_prepare(DataConfig(mean=[0.5], std=[0.25]))
    torch.testing.assert_close(prepare(mapped[5:20, 3:13]), prepare(decoded[5:20, 3:13]))
    expected = (raw[0, 0] / 65535 - 0.5) / 0.25
    assert prepare(mapped[:1, :1]).item() == pytest.approx(expected, rel=1e-5)


def test_rgb_tiff_region_becomes_gray_for_a_gray_model(tmp_path: Path) -> None:
    raw = np.zeros((8, 8, 3), np.uint8)
    raw[..., 1] = 255  # pure green: luminance 0.587
    tifffile.imwrite(tmp_path / "g.tif", raw)
    out = make_prepare(DataConfig(channels=1, mean=[0.0], std=[1.0]))(open_image(tmp_path / "g.tif", 1))
    assert out.shape == (1, 8, 8)
    np.testing.assert_allclose(out.numpy(), 0.587, atol=2e-3)
