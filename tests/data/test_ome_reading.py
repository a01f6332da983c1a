"""Reading OME images lazily: the missing extra in one line, pixel sizes from TIFF tags, cheap strided samples."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from unetkit.data import lazy_image
from unetkit.data.lazy_image import open_tiff, pixel_size
from unetkit.data.pixel_size import PixelSize
from unetkit.errors import UnetkitError


def test_a_missing_zarr_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.ome.zarr").mkdir()
    real = importlib.import_module

    def without_zarr(name: str, *args: object) -> object:
        if name == "zarr":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_zarr)
    with pytest.raises(UnetkitError, match=r"^reading OME-Zarr needs the zarr package; pip install 'unetkit\[ome\]'$"):
        lazy_image.open_zarr(tmp_path / "a.ome.zarr")


def test_pixel_size_from_resolution_tags_and_screen_defaults_ignored(tmp_path: Path) -> None:
    pixels = np.zeros((20, 30), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", pixels, resolution=(4000.0, 2000.0), resolutionunit="CENTIMETER")
    assert pixel_size(tmp_path / "cm.tif") == PixelSize(5.0, 2.5, "µm")  # 1e4 µm / 2000, 1e4 µm / 4000
    tifffile.imwrite(tmp_path / "dpi.tif", pixels, resolution=(72.0, 72.0), resolutionunit="INCH")
    assert pixel_size(tmp_path / "dpi.tif") is None


def test_a_strided_sample_of_the_whole_image_comes_from_a_coarser_level(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (128, 192), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "p.ome.tif") as tif:
        tif.write(pixels, subifds=2, tile=(32, 32), compression="zlib")
        tif.write(pixels[::2, ::2], subfiletype=1, tile=(32, 32), compression="zlib")
        tif.write(pixels[::4, ::4], subfiletype=1, tile=(32, 32), compression="zlib")
    image = open_tiff(tmp_path / "p.ome.tif")
    source, rows, cols = image._source(slice(None, None, 8), slice(None, None, 8))
    assert source.shape == (32, 48) and rows.step == cols.step == 2  # level 2, every 2nd pixel
    np.testing.assert_array_equal(image[::8, ::8], pixels[::8, ::8])
    np.testing.assert_array_equal(image[5:70, 33:101], pixels[5:70, 33:101])
