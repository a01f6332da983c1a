from pathlib import Path

import numpy as np

from unetkit.config import MaskConfig
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.synthetic import DEMO_CLASSES, DEMO_PALETTE, make_synthetic_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_determinism(tmp_path: Path) -> None:
    first = make_synthetic_dataset(tmp_path / "a", n_train=3, n_val=2, size=64, seed=5)
    assert first == tmp_path / "a"
    files = _files(first)
    expected = ["SOURCE.md"] + [
        f"{split}/{kind}/sample_{i:03d}.png"
        for split, n in (("train", 3), ("val", 2))
        for kind in ("images", "masks")
        for i in range(n)
    ]
    assert sorted(files) == sorted(expected)
    assert files == _files(make_synthetic_dataset(tmp_path / "b", n_train=3, n_val=2, size=64, seed=5))
    other = _files(make_synthetic_dataset(tmp_path / "c", n_train=3, n_val=2, size=64, seed=6))
    assert other["train/images/sample_000.png"] != files["train/images/sample_000.png"]
    source = files["SOURCE.md"].decode()
    assert "seed 5" in source and "[230, 60, 60]" in source and "fibre" in source


def test_samples_do_not_depend_on_the_counts(tmp_path: Path) -> None:
    small = _files(make_synthetic_dataset(tmp_path / "a", n_train=1, n_val=1, size=64))
    large = _files(make_synthetic_dataset(tmp_path / "b", n_train=2, n_val=1, size=64))
    assert small["val/masks/sample_000.png"] == large["val/masks/sample_000.png"]


def test_images_are_gray_and_every_class_has_a_fair_share(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, n_train=12, n_val=4, size=128, seed=0)
    codec = MaskCodec(MaskConfig(encoding="palette", palette=DEMO_PALETTE), len(DEMO_CLASSES))
    counts = np.zeros(len(DEMO_CLASSES))
    for split in ("train", "val"):
        for mask_path in sorted((root / split / "masks").iterdir()):
            image = read_raw(root / split / "images" / mask_path.name)
            assert image.shape == (128, 128) and image.dtype == np.uint8
            raw = read_raw(mask_path)
            assert raw.shape == (128, 128, 3)
            counts += np.bincount(codec.decode(raw, str(mask_path)).ravel(), minlength=len(DEMO_CLASSES))
    shares = counts / counts.sum()
    assert (shares >= 0.05).all(), shares
