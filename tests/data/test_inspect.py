import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from unetkit.config import DataConfig
from unetkit.data.dataset import pair_files
from unetkit.data.inspect import format_inspection, inspect_folder
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.writers import write_mask
from unetkit.errors import UnetkitError


def _dataset(root: Path, masks: dict[str, np.ndarray], image_channels: int = 1) -> Path:
    """`root/images` (8-bit gray or RGB zeros) and `root/masks`, one pair per entry of `masks`."""
    for stem, mask in masks.items():
        shape = mask.shape[:2] + ((3,) if image_channels == 3 else ())
        write_mask(root / "images" / f"{stem}.png", np.zeros(shape, np.uint8))
        write_mask(root / "masks" / f"{stem}.png", mask)
    return root


def _config_reads_masks(report: dict) -> DataConfig:
    """The suggested snippet is a valid `data:` section whose mask encoding decodes every mask."""
    data = DataConfig(**yaml.safe_load(report["suggestion"]["yaml"])["data"])
    codec = MaskCodec(data.mask, data.num_classes)
    for _, mask, _ in pair_files(Path(report["images_dir"]), Path(report["masks_dir"])):
        codec.decode(read_raw(mask), str(mask))
    return data


def _values(report: dict) -> dict:
    return {str(row["value"]): (row["pixels"], row["share"], row["masks"]) for row in report["mask_values"]}


def test_binary_masks_suggest_the_minority_as_foreground(tmp_path: Path) -> None:
    a = np.zeros((4, 5), np.uint8)
    a[0, :3] = 255  # 3 of 20 pixels
    b = np.zeros((4, 5), np.uint8)
    b[1:3, 1:3] = 255  # 4 of 20 pixels
    report = inspect_folder(_dataset(tmp_path, {"a": a, "b": b}))
    assert report["mask_kind"] == "gray" and report["num_mask_values"] == 2
    assert _values(report) == {"0": (33, 33 / 40, 2), "255": (7, 7 / 40, 2)}
    assert report["suggestion"]["mask"] == {"encoding": "binary", "foreground_value": 255}
    assert report["suggestion"]["channels"] == 1 and "17.5% of pixels" in report["suggestion"]["notes"][0]
    assert _config_reads_masks(report).num_classes == 2
    text = format_inspection(report)
    assert "Masks are gray: 2 distinct values" in text and "255    17.50%       2" in text
    assert "foreground_value: 255" in text and "Problems: none found" in text


def test_zero_one_masks_with_rare_zero(tmp_path: Path) -> None:
    mask = np.ones((2, 4), np.uint8)
    mask[0, 0] = 0  # 0 is the minority: 1 pixel of 8
    report = inspect_folder(_dataset(tmp_path, {"m": mask}))
    assert report["suggestion"]["mask"] == {"encoding": "binary", "foreground_value": 0}
    _config_reads_masks(report)


def test_consecutive_values_suggest_index(tmp_path: Path) -> None:
    mask = np.array([[0, 0, 1], [2, 2, 2]], np.uint8)
    report = inspect_folder(_dataset(tmp_path, {"m": mask}, image_channels=3))
    assert report["suggestion"]["mask"] == {"encoding": "index"}
    assert report["suggestion"]["channels"] == 3 and report["image_modes"] == {"RGB 8-bit": 1}
    assert _values(report)["2"] == (3, 0.5, 1)
    assert _config_reads_masks(report).classes == ["class_0", "class_1", "class_2"]


def test_other_gray_values_are_sorted(tmp_path: Path) -> None:
    a = np.array([[231, 33], [33, 33]], np.uint8)
    b = np.array([[65, 201], [201, 33]], np.uint8)
    report = inspect_folder(_dataset(tmp_path, {"a": a, "b": b}))
    assert report["suggestion"]["mask"] == {"encoding": "gray_values", "values": [33, 65, 201, 231]}
    # 33 covers 4 of 8 pixels and occurs in both masks; 201 two pixels in one mask
    assert _values(report)["33"] == (4, 0.5, 2) and _values(report)["201"] == (2, 0.25, 1)
    assert [row["value"] for row in report["mask_values"]][0] == 33  # most common first
    _config_reads_masks(report)


def test_rgb_masks_suggest_a_palette_and_gray_rgb_counts_as_gray(tmp_path: Path) -> None:
    mask = np.zeros((2, 4, 3), np.uint8)
    mask[0] = (255, 0, 0)
    mask[1, :3] = (0, 0, 255)  # black keeps 1 pixel
    report = inspect_folder(_dataset(tmp_path / "rgb", {"m": mask}))
    assert report["mask_kind"] == "rgb" and report["mask_modes"] == {"RGB 8-bit": 1}
    assert report["suggestion"]["mask"] == {"encoding": "palette", "palette": [[0, 0, 0], [0, 0, 255], [255, 0, 0]]}
    assert _values(report)["[255, 0, 0]"] == (4, 0.5, 1)
    _config_reads_masks(report)
    gray_in_rgb = np.repeat(np.array([[0, 1], [1, 1]], np.uint8)[..., None], 3, axis=2)
    report = inspect_folder(_dataset(tmp_path / "gray", {"m": gray_in_rgb}))
    assert report["mask_kind"] == "gray" and report["suggestion"]["mask"]["encoding"] == "binary"


def test_many_colours_look_like_an_image_and_table_is_cut(tmp_path: Path) -> None:
    image_like = np.arange(40 * 3, dtype=np.uint8).reshape(5, 8, 3)  # 40 distinct colours
    report = inspect_folder(_dataset(tmp_path, {"m": image_like}), max_values=5)
    assert report["num_mask_values"] == 40 and len(report["mask_values"]) == 5
    assert report["suggestion"]["mask"] is None and "looks like an image" in report["suggestion"]["notes"][0]
    assert "the 5 most common shown" in format_inspection(report)


def test_problems_are_reported_not_raised(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"ok": np.zeros((4, 4), np.uint8), "wide": np.zeros((4, 4), np.uint8)})
    write_mask(root / "masks" / "wide.png", np.zeros((4, 6), np.uint8))  # image 4x4, mask 6x4
    write_mask(root / "images" / "lonely.png", np.zeros((4, 4), np.uint8))
    write_mask(root / "masks" / "orphan.png", np.zeros((4, 4), np.uint8))
    (root / "masks" / "broken.png").write_bytes(b"not a png")
    report = inspect_folder(root)
    assert report["num_images"] == 3 and report["num_masks"] == 4 and report["num_pairs"] == 2
    assert report["images_without_masks"] == ["lonely.png"]
    assert report["masks_without_images"] == ["broken.png", "orphan.png"]
    assert report["size_mismatches"] == ["wide.png is 4x4 but mask wide.png is 6x4"]
    assert [u.split(":")[0] for u in report["unreadable"]] == ["broken.png"]
    assert len(report["problems"]) == 4  # images without masks, masks without images, mismatch, unreadable
    text = format_inspection(report)
    assert "1 image(s) without a mask: lonely.png" in text and "size mismatch: wide.png" in text


def test_images_only_folder_with_16_bit_tiffs(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s0.tif", np.zeros((6, 7), np.uint16))
    tifffile.imwrite(tmp_path / "s1.tif", np.zeros((6, 7), np.uint16))
    report = inspect_folder(tmp_path)
    assert report["masks_dir"] is None and report["mask_kind"] is None and report["problems"] == []
    assert report["image_sizes"] == {"7x6": 2} and report["image_modes"] == {"gray 16-bit": 2}
    assert report["suggestion"]["yaml"] == "data:\n  channels: 1\n"
    assert "images only" in format_inspection(report)


def test_mixed_gray_and_rgb_masks_are_a_problem(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (0, 255, 0)
    report = inspect_folder(_dataset(tmp_path, {"g": np.array([[0, 1], [1, 1]], np.uint8), "c": rgb}))
    assert report["mask_kind"] == "mixed" and report["suggestion"]["mask"] is None
    assert any("mix gray and RGB" in p for p in report["problems"])
    # gray values are shown as colours (v, v, v): black 1 + 3 pixels, (1, 1, 1) 3, green 1, of 8
    assert _values(report) == {"[0, 0, 0]": (4, 0.5, 2), "[1, 1, 1]": (3, 0.375, 1), "[0, 255, 0]": (1, 0.125, 1)}


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(UnetkitError, match="not a folder"):
        inspect_folder(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(UnetkitError, match="holds no images"):
        inspect_folder(tmp_path / "empty")


def test_real_datasets(shared_datasets: Path) -> None:
    start = time.perf_counter()
    camvid = inspect_folder(shared_datasets / "camvid" / "train")
    assert time.perf_counter() - start < 10.0
    assert camvid["num_pairs"] == 245 and camvid["image_modes"] == {"RGB 8-bit": 245}
    assert camvid["suggestion"]["mask"] == {"encoding": "index"} and camvid["num_mask_values"] == 12
    assert camvid["suggestion"]["channels"] == 3 and _values(camvid)["11"][2] == 245  # void in every mask
    sandstone = inspect_folder(shared_datasets / "sandstone" / "train")
    palette = sandstone["suggestion"]["mask"]["palette"]
    assert palette == [[0, 0, 255], [0, 255, 0], [255, 0, 0], [255, 255, 0]]  # SOURCE.md's class order
    shares = {str(row["value"]): round(row["share"], 3) for row in sandstone["mask_values"]}
    assert shares == {"[0, 0, 255]": 0.484, "[0, 255, 0]": 0.04, "[255, 0, 0]": 0.457, "[255, 255, 0]": 0.018}
    isbi = inspect_folder(shared_datasets / "isbi2012" / "train")
    assert isbi["suggestion"]["mask"] == {"encoding": "binary", "foreground_value": 0}  # membranes, 22%
    assert round(isbi["mask_values"][1]["share"], 2) == 0.22
