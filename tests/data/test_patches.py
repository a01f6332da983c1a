from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data.io import read_raw
from unetkit.data.patches import make_patches, patch_starts
from unetkit.data.writers import write_mask
from unetkit.errors import UnetkitError


def _ramp(height: int, width: int, dtype: type = np.uint8, channels: int = 0) -> np.ndarray:
    """A distinct value per pixel (mod the dtype range), so any misplaced pixel shows."""
    values = np.arange(height * width * max(channels, 1), dtype=np.int64) * 7
    shape = (height, width, channels) if channels else (height, width)
    return (values % (np.iinfo(dtype).max + 1)).astype(dtype).reshape(shape)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("length, size, stride, keep, expected", [
    (10, 4, 4, False, [0, 4]),  # pixels 8-9 dropped
    (10, 4, 4, True, [0, 4, 6]),  # last patch shifted to end at pixel 10
    (8, 4, 4, True, [0, 4]),  # exact fit: nothing added
    (10, 4, 2, False, [0, 2, 4, 6]),  # overlap, ends exactly at 10
    (11, 4, 3, True, [0, 3, 6, 7]),
    (4, 4, 4, False, [0]),
])
def test_patch_starts(length: int, size: int, stride: int, keep: bool, expected: list[int]) -> None:
    assert patch_starts(length, size, stride, keep) == expected


def test_patches_copy_exact_regions_and_name_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    image = _ramp(10, 9)  # H=10, W=9
    mask = (_ramp(10, 9) % 3).astype(np.uint8)
    write_mask(src / "images" / "a.png", image)
    write_mask(src / "masks" / "a.tif", mask)  # paired by stem whatever the extension
    out = tmp_path / "out"
    assert make_patches(src / "images", src / "masks", out, size=4) == 4  # 2 rows x 2 columns
    expected = ["a_y0_x0.png", "a_y0_x4.png", "a_y4_x0.png", "a_y4_x4.png"]
    assert _names(out / "images") == expected and _names(out / "masks") == expected
    patch = read_raw(out / "images" / "a_y4_x0.png")
    np.testing.assert_array_equal(patch, image[4:8, 0:4])
    np.testing.assert_array_equal(read_raw(out / "masks" / "a_y0_x4.png"), mask[0:4, 4:8])


def test_keep_partial_shifts_last_patches_to_the_border(tmp_path: Path) -> None:
    image = _ramp(10, 9)
    write_mask(tmp_path / "in" / "b.png", image)
    out = tmp_path / "out"
    assert make_patches(tmp_path / "in", None, out, size=4, keep_partial=True) == 9  # rows [0,4,6] x cols [0,4,5]
    assert "b_y6_x5.png" in _names(out / "images") and not (out / "masks").exists()
    np.testing.assert_array_equal(read_raw(out / "images" / "b_y6_x5.png"), image[6:10, 5:9])


def test_overlapping_stride_count(tmp_path: Path) -> None:
    write_mask(tmp_path / "in" / "c.png", _ramp(10, 10))
    # size 4, stride 2: starts [0, 2, 4, 6] on both axes -> 16 patches
    assert make_patches(tmp_path / "in", None, tmp_path / "out", size=4, stride=2) == 16
    np.testing.assert_array_equal(read_raw(tmp_path / "out" / "images" / "c_y2_x6.png"), _ramp(10, 10)[2:6, 6:10])


def test_dtypes_are_preserved(tmp_path: Path) -> None:
    src = tmp_path / "src"
    image16 = _ramp(8, 8, np.uint16) * 1000  # values far above 255
    rgb_mask = np.zeros((8, 8, 3), np.uint8)
    rgb_mask[:, 4:] = (255, 255, 0)
    rgb_mask[4:, :4] = (0, 0, 255)
    (src / "images").mkdir(parents=True)
    tifffile.imwrite(src / "images" / "d.tif", image16)
    write_mask(src / "masks" / "d.png", rgb_mask)
    out = tmp_path / "out"
    assert make_patches(src / "images", src / "masks", out, size=4) == 4
    patch = read_raw(out / "images" / "d_y4_x4.png")
    assert patch.dtype == np.uint16 and patch.max() > 255
    np.testing.assert_array_equal(patch, image16[4:, 4:])
    mask_patch = read_raw(out / "masks" / "d_y4_x0.png")
    assert mask_patch.shape == (4, 4, 3) and mask_patch.dtype == np.uint8
    assert (mask_patch == (0, 0, 255)).all()


def test_float_images_go_to_tiff(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    image = np.linspace(-1.0, 1.0, 36, dtype=np.float32).reshape(6, 6)
    tifffile.imwrite(tmp_path / "in" / "f.tif", image)
    assert make_patches(tmp_path / "in", None, tmp_path / "out", size=3) == 4
    patch = tifffile.imread(tmp_path / "out" / "images" / "f_y3_x0.tif")
    assert patch.dtype == np.float32
    np.testing.assert_array_equal(patch, image[3:, :3])


def test_paletted_image_becomes_its_colours(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.save(tmp_path / "in" / "p.png")
    make_patches(tmp_path / "in", None, tmp_path / "out", size=2)
    patch = read_raw(tmp_path / "out" / "images" / "p_y0_x0.png")
    assert patch.shape == (2, 2, 3) and tuple(patch[0, 1]) == (200, 100, 50)


@pytest.mark.parametrize("size, stride, message", [(0, None, "patch size"), (4, 0, "stride"), (-2, 4, "size")])
def test_bad_sizes_raise(tmp_path: Path, size: int, stride: int | None, message: str) -> None:
    write_mask(tmp_path / "in" / "e.png", _ramp(8, 8))
    with pytest.raises(UnetkitError, match=message):
        make_patches(tmp_path / "in", None, tmp_path / "out", size=size, stride=stride)


def test_small_image_is_named(tmp_path: Path) -> None:
    write_mask(tmp_path / "in" / "big.png", _ramp(8, 8))
    write_mask(tmp_path / "in" / "tiny.png", _ramp(3, 8))
    with pytest.raises(UnetkitError, match=r"tiny\.png.*8x3"):
        make_patches(tmp_path / "in", None, tmp_path / "out", size=4)


@pytest.mark.parametrize("where", ["in", "in/images", "in/images/sub", "in/masks"])
def test_output_inside_inputs_raises(tmp_path: Path, where: str) -> None:
    write_mask(tmp_path / "in" / "images" / "g.png", _ramp(8, 8))
    write_mask(tmp_path / "in" / "masks" / "g.png", _ramp(8, 8))
    # "in" itself: its images/ subfolder is the input folder, so patches would land among the sources
    with pytest.raises(UnetkitError, match="input folder"):
        make_patches(tmp_path / "in" / "images", tmp_path / "in" / "masks", tmp_path / where, size=4)


def test_non_empty_output_and_mask_mismatch_raise(tmp_path: Path) -> None:
    write_mask(tmp_path / "in" / "images" / "h.png", _ramp(8, 8))
    write_mask(tmp_path / "in" / "masks" / "h.png", _ramp(8, 6))
    with pytest.raises(UnetkitError, match=r"h\.png: mask is 6x8"):
        make_patches(tmp_path / "in" / "images", tmp_path / "in" / "masks", tmp_path / "out", size=4)
    write_mask(tmp_path / "old" / "images" / "x.png", _ramp(4, 4))
    with pytest.raises(UnetkitError, match="already holds 1 files"):
        make_patches(tmp_path / "in" / "images", None, tmp_path / "old", size=4)


def test_sandstone_slice_gives_56_whole_patches(shared_datasets: Path, tmp_path: Path) -> None:
    root = shared_datasets / "sandstone" / "test"
    out = tmp_path / "patches"
    # 996 wide x 1024 high: 7 columns x 8 rows of whole 128-patches (the 100-pixel right strip is dropped)
    assert make_patches(root / "images", root / "masks", out, size=128) == 56
    stem = "Sandstone_Versa0180"
    assert len(_names(out / "images")) == 56 and f"{stem}_y896_x768.png" in _names(out / "masks")
    image, mask = read_raw(root / "images" / f"{stem}.png"), read_raw(root / "masks" / f"{stem}.png")
    np.testing.assert_array_equal(read_raw(out / "images" / f"{stem}_y896_x768.png"), image[896:1024, 768:896])
    patch = read_raw(out / "masks" / f"{stem}_y128_x256.png")
    np.testing.assert_array_equal(patch, mask[128:256, 256:384])
    assert set(np.unique(patch).tolist()) <= {33, 65, 201, 231}
