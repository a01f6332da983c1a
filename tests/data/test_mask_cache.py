"""Decoded masks are kept once per run: the scan fills the cache, training reads it, the budget holds."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.config import MaskConfig
from unetkit.data.dataset import FolderDataset, load_pair, pair_files, scan_pairs
from unetkit.data.mask_cache import DecodedMasks
from unetkit.data.masks import MaskCodec


def _pairs(tmp_path: Path, count: int) -> list[tuple[Path, Path]]:
    rng = np.random.default_rng(0)
    for folder in ("img", "msk"):
        (tmp_path / folder).mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (16, 20), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        labels = np.zeros((16, 20), np.uint8)
        labels[2:8, 2:10], labels[2:8, 10:18] = 5, 9  # two touching objects
        Image.fromarray(labels).save(tmp_path / "msk" / f"{i}.png")
    return pair_files(tmp_path / "img", tmp_path / "msk")


def test_scan_fills_the_cache_and_loading_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = _pairs(tmp_path, 3)
    codec = MaskCodec(MaskConfig(encoding="instances"), 3)
    masks = DecodedMasks()
    scan_pairs(pairs, 1, codec, masks)
    assert len(masks) == 3 and masks.used == 3 * 16 * 20
    decoded = masks.get(pairs[0][1])
    assert decoded is not None and set(np.unique(decoded)) == {0, 1, 2}  # background, interior, boundary
    assert (decoded[2:8, 9] == 2).all() and (decoded[2:8, 10] == 2).all()  # each object's own ring where they touch

    def no_decoding(*args: object) -> None:
        raise AssertionError("a cached mask was decoded again")

    monkeypatch.setattr(codec, "decode", no_decoding)
    dataset = FolderDataset(pairs=pairs, channels=1, codec=codec, masks=masks)
    assert np.array_equal(dataset[0]["mask"].numpy(), decoded)
    _, again = load_pair(pairs[0], 1, codec, masks)
    assert again is decoded and not again.flags.writeable  # a transform writing in place fails loudly


def test_budget_keeps_the_first_masks_and_decodes_the_rest(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path, 3)
    codec = MaskCodec(MaskConfig(encoding="instances"), 3)
    masks = DecodedMasks(budget=2 * 16 * 20)
    scan_pairs(pairs, 1, codec, masks)
    assert len(masks) == 2 and masks.get(pairs[2][1]) is None
    _, third = load_pair(pairs[2], 1, codec, masks)
    assert third.flags.writeable and np.array_equal(third, masks.get(pairs[0][1]))  # same labels, decoded anew
