import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data import io
from unetkit.data.io import list_images, read_image, read_raw
from unetkit.data.writers import write_image, write_mask
from unetkit.errors import UnetkitError

GRAY8 = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
GRAY16 = np.array([[0, 1, 1000], [32768, 65534, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("array, full", [(GRAY8, 255.0), (GRAY16, 65535.0)])
def test_gray_round_trip_scales_by_dtype_range(tmp_path: Path, suffix: str, array: np.ndarray, full: float) -> None:
    path = tmp_path / f"m{suffix}"
    write_mask(path, array)
    raw = read_raw(path)
    assert raw.dtype == array.dtype
    np.testing.assert_array_equal(raw, array)
    image = read_image(path, channels=1)
    assert image.shape == (2, 3, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], array.astype(np.float32) / np.float32(full))
    assert image[1, 2, 0] == 1.0 and image[0, 0, 0] == 0.0


def test_gray_to_rgb_repeats_the_channel(tmp_path: Path) -> None:
    write_mask(tmp_path / "g.png", GRAY8)
    image = read_image(tmp_path / "g.png", channels=3)
    assert image.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], GRAY8 / np.float32(255))


def test_rgb_to_gray_uses_luminance_and_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 10)  # pure red -> 0.299
    rgba[0, 1] = (0, 255, 0, 255)  # pure green -> 0.587
    rgba[0, 2] = (255, 255, 255, 0)  # white -> 1 whatever the alpha
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    assert read_raw(tmp_path / "c.png").shape == (1, 3, 3)
    np.testing.assert_allclose(read_image(tmp_path / "c.png", 3)[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(read_image(tmp_path / "c.png", 1)[0, :, 0], [0.299, 0.587, 1.0], atol=1e-3)


def test_multi_page_tiff_reads_the_first_page(tmp_path: Path) -> None:
    pages = np.stack([GRAY16, GRAY16[::-1]])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")  # 2 pages of (2, 3)
    np.testing.assert_array_equal(read_raw(tmp_path / "stack.tif"), GRAY16)


def test_paletted_png_gives_indices_raw_and_colours_as_image(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_raw(tmp_path / "p.png"), [[0, 1], [2, 1]])
    np.testing.assert_array_equal(read_image(tmp_path / "p.png", 3)[1, 0], [0.0, 0.0, 1.0])


def _truncated_png(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # incompressible: big IDAT
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not an image at all\n"), "cannot read image"),
        (_truncated_png, "cannot read image"),
    ],
)
@pytest.mark.parametrize("reader", [read_raw, lambda p: read_image(p, 1)])
def test_broken_files_raise_naming_the_path(tmp_path: Path, make, reason: str, reader) -> None:
    path = tmp_path / "broken.png"
    make(path)
    with pytest.raises(UnetkitError, match="cannot read image") as err:
        reader(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert "replace or remove the file" in str(err.value)


def test_broken_tiff_raises(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(UnetkitError, match="x.tif: cannot read image"):
        read_raw(tmp_path / "x.tif")


def test_list_images_sorted_case_insensitive_non_recursive(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.tif", "c.JPEG", "notes.txt", "._a.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.PNG", "c.JPEG"]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(UnetkitError, match="holds no images"):
        list_images(tmp_path)
    with pytest.raises(UnetkitError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_write_mask_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mask(tmp_path / "ok.png", GRAY8)
    write_mask(tmp_path / "ok.png", GRAY8 // 2)  # replacing an existing file works too
    np.testing.assert_array_equal(read_raw(tmp_path / "ok.png"), GRAY8 // 2)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(io.tifffile, "imwrite", fail)
    with pytest.raises(OSError, match="disk full"):
        write_mask(tmp_path / "bad.tif", GRAY8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]


def test_write_checks_dtype_and_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mask(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint16))
    with pytest.raises(UnetkitError, match="lossy"):
        write_mask(tmp_path / "m.jpg", GRAY8)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 1] = 200
    write_image(tmp_path / "o.png", rgb)
    np.testing.assert_array_equal(read_raw(tmp_path / "o.png"), rgb)


def test_written_masks_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from unetkit.data.writers import write_mask

    write_mask(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.png").stat().st_mode) == 0o666 & ~umask


@pytest.fixture
def pixel_limit() -> Iterator[None]:
    """Restore unetkit's pixel limit after a test that changes it."""
    previous = io.set_pixel_limit(None)
    io.set_pixel_limit(previous)
    yield
    io.set_pixel_limit(previous)


def test_pixel_limit_leaves_pillows_own_alone(tmp_path: Path, pixel_limit: None) -> None:
    before = Image.MAX_IMAGE_PIXELS
    write_mask(tmp_path / "m.png", np.zeros((40, 30), np.uint8))
    io.set_pixel_limit(1000)
    assert Image.MAX_IMAGE_PIXELS == before
    with pytest.raises(UnetkitError, match=r"m\.png: image of 30x40 = 1,200 pixels is over the limit of 1,000"):
        read_raw(tmp_path / "m.png")
    assert io.file_channels(tmp_path / "m.png") is None  # over the limit: reported when it is read
    io.set_pixel_limit(None)
    assert Image.MAX_IMAGE_PIXELS == before and read_raw(tmp_path / "m.png").shape == (40, 30)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_our_limit_decides_whatever_pillows_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str,
                                               pixel_limit: None) -> None:
    rgb = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / f"a{suffix}", rgb)
    expected = read_raw(tmp_path / f"a{suffix}")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as another library in the process might set it
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / f"a{suffix}")  # over twice Pillow's limit: Image.open itself refuses it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning reaches the user either
        np.testing.assert_array_equal(read_raw(tmp_path / f"a{suffix}"), expected)
        assert read_image(tmp_path / f"a{suffix}", 3).shape == (40, 30, 3)
        assert io.file_channels(tmp_path / f"a{suffix}") == 3
    io.set_pixel_limit(1000)
    with pytest.raises(UnetkitError, match=r"30x40 = 1,200 pixels is over the limit of 1,000"):
        read_raw(tmp_path / f"a{suffix}")
