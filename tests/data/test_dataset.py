"""Pairing, splitting, scanning and loading of image/mask folders."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.config import IGNORE_INDEX, DataConfig, MaskConfig
from unetkit.data.dataset import FolderDataset, dataset_pairs, pair_files, scan_pairs, split_by_name, split_pairs
from unetkit.data.masks import MaskCodec
from unetkit.data.transforms import train_transform
from unetkit.errors import UnetkitError


def _write(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    return path


def test_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    _write(tmp_path / "img", "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "img", "b.tif", np.zeros((4, 4), np.uint16))
    _write(tmp_path / "msk", "a.tif", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "msk", "b.png", np.zeros((4, 4), np.uint8))
    pairs = pair_files(tmp_path / "img", tmp_path / "msk")
    assert [(p.image.name, p.mask.name) for p in pairs] == [("a.png", "a.tif"), ("b.tif", "b.png")]


def test_split_is_deterministic_and_disjoint() -> None:
    pairs = [(Path(f"{i}.png"), Path(f"{i}.png")) for i in range(10)]
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert len(train) == 8 and len(val) == 2
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(pairs)
    assert split_pairs(pairs, 0.2, seed=3) == (train, val)
    assert any(split_pairs(pairs, 0.2, seed=s)[1] != val for s in range(4, 10))


def test_split_by_name_holds_out_exactly_those() -> None:
    pairs = [(Path(f"{i}.png"), Path(f"{i}.png")) for i in range(30)]
    train, val = split_by_name(pairs, ["25", "26", "27", "28", "29"])
    assert [p[0].stem for p in val] == ["25", "26", "27", "28", "29"]
    assert len(train) == 25
    with pytest.raises(UnetkitError, match="31"):
        split_by_name(pairs, ["31"])


def test_dataset_pairs_needs_both_val_folders(tmp_path: Path) -> None:
    _write(tmp_path / "train/images", "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "train/masks", "a.png", np.zeros((4, 4), np.uint8))
    cfg = DataConfig(root=str(tmp_path), val_images="val/images")
    with pytest.raises(UnetkitError, match="go together"):
        dataset_pairs(cfg)


def test_scan_counts_pixels_per_class(tmp_path: Path) -> None:
    # two 2x3 binary masks, 255 = foreground: 1 + 4 foreground pixels, 5 + 2 background
    _write(tmp_path / "img", "a.png", np.zeros((2, 3), np.uint8))
    _write(tmp_path / "img", "b.png", np.zeros((2, 3), np.uint8))
    _write(tmp_path / "msk", "a.png", np.array([[255, 0, 0], [0, 0, 0]], np.uint8))
    _write(tmp_path / "msk", "b.png", np.array([[255, 255, 0], [255, 255, 0]], np.uint8))
    codec = MaskCodec(MaskConfig(encoding="binary", foreground_value=255), 2)
    counts = scan_pairs(pair_files(tmp_path / "img", tmp_path / "msk"), 1, codec)
    assert counts.counts.tolist() == [7, 5]


def test_folder_dataset_items_16bit_tiff_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write(tmp_path / "img", "a.tif", rng.integers(0, 65535, (40, 50), dtype=np.uint16))
    _write(tmp_path / "img", "b.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    for stem in "ab":
        _write(tmp_path / "msk", f"{stem}.png", rng.integers(0, 3, (40, 50), dtype=np.uint8))
    cfg = DataConfig(channels=3, classes=["a", "b", "c"], crop_size=32, mean=[0.5], std=[0.25])
    ds = FolderDataset(tmp_path / "img", tmp_path / "msk", channels=3, codec=MaskCodec(cfg.mask, 3),
                       transform=train_transform(cfg), repeats=3)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        image, mask = item["image"], item["mask"]
        assert image.shape == (3, 32, 32) and image.dtype.is_floating_point
        assert mask.shape == (32, 32)
        assert set(mask.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}
        # normalized from [0, 1] with mean 0.5, std 0.25
        assert image.min() >= -2.0 - 1e-5 and image.max() <= 2.0 + 1e-5
