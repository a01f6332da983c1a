"""Band-by-band prediction: the streamed mask PNG holds what `write_mask` wrote from the whole map."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import Config, InferConfig, MaskConfig, config_from_dict
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.source import make_prepare
from unetkit.data.writers import write_mask, write_mask_rows
from unetkit.infer import tiled
from unetkit.infer.inference import InferOptions
from unetkit.infer.predict import load_predictor, predict
from unetkit.infer.predictor import predict_whole
from unetkit.infer.tiling import release_pages
from unetkit.models.build import build_model

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]
# encoding -> (data section, PNG bit depth, PNG colour type: 0 gray, 2 RGB), as write_mask (Pillow) writes them
ENCODINGS = {
    "binary": ({"classes": ["bg", "fg"], "mask": {"encoding": "binary"}}, 8, 0),
    "index": ({"classes": ["a", "b", "c"], "mask": {"encoding": "index"}}, 8, 0),
    "gray_values": ({"classes": ["a", "b", "c"], "mask": {"encoding": "gray_values", "values": [0, 1000, 40000]}},
                    16, 0),
    "palette": ({"classes": ["a", "b", "c"], "mask": {"encoding": "palette", "palette": PALETTE}}, 8, 2),
}


def _header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the PNG's IHDR chunk (bytes 16..25 of the file)."""
    width, height, depth, colour = struct.unpack(">IIBB", path.read_bytes()[16:26])
    return width, height, depth, colour


def _same_file_content(streamed: Path, whole: Path) -> None:
    assert _header(streamed) == _header(whole)
    with Image.open(streamed) as a, Image.open(whole) as b:
        assert a.mode == b.mode
    np.testing.assert_array_equal(read_raw(streamed), read_raw(whole))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_rows_written_in_uneven_bands_give_the_file_write_mask_writes(tmp_path: Path, encoding: str) -> None:
    data, depth, colour = ENCODINGS[encoding]
    num_classes = len(data["classes"])
    codec = MaskCodec(MaskConfig(**data["mask"]), num_classes)
    index = np.random.default_rng(0).integers(0, num_classes, (50, 23)).astype(np.uint8)
    write_mask(tmp_path / "whole.png", codec.encode(index))
    bands = (codec.encode(index[a:b]) for a, b in [(0, 7), (7, 8), (8, 40), (40, 50)])
    write_mask_rows(tmp_path / "streamed.png", 50, bands)
    assert _header(tmp_path / "streamed.png") == (23, 50, depth, colour)
    _same_file_content(tmp_path / "streamed.png", tmp_path / "whole.png")


def test_a_wrong_row_count_fails_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.png"
    write_mask(target, np.full((4, 3), 7, np.uint8))
    with pytest.raises(ValueError, match="5 rows were written for a height of 6"):
        write_mask_rows(target, 6, [np.zeros((2, 3), np.uint8), np.zeros((3, 3), np.uint8)])
    with pytest.raises(ValueError, match="does not continue"):
        write_mask_rows(target, 4, [np.zeros((2, 3), np.uint8), np.zeros((2, 4), np.uint8)])
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    np.testing.assert_array_equal(read_raw(target), np.full((4, 3), 7, np.uint8))


def _checkpoint(tmp_path: Path, data: dict) -> Path:
    cfg: Config = config_from_dict({"data": data, "model": {"depth": 2, "base_channels": 4, "padding": "valid"}})
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(build_model(cfg.model, 1, out_channels(cfg)), cfg, epoch=0), path)
    return path


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_predicted_mask_streamed_over_many_bands_equals_the_whole_map_written_at_once(
        tmp_path: Path, encoding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = ENCODINGS[encoding][0]
    checkpoint = _checkpoint(tmp_path, data)
    pixels = np.random.default_rng(1).integers(0, 255, (60, 40), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(pixels).save(tmp_path / "in" / "big.png")
    monkeypatch.setattr(tiled, "CHUNK_PIXELS", 120)  # pieces of 3 rows, 6 per band of 16-pixel tiles (4 bands)
    written = predict(checkpoint, [tmp_path / "in"], tmp_path / "out", options=InferOptions(tile=16),
                      probabilities=True, progress=False)
    # before streaming: one pass over the mirror-padded image (what the valid network's tiling equals), then
    # the whole map encoded and written by write_mask
    fn, cfg = load_predictor(checkpoint, "cpu")
    probs = predict_whole(fn, make_prepare(cfg.data)(pixels[..., None])[None])[0]  # (K, 60, 40)
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    write_mask(tmp_path / "whole.png", codec.encode(probs.argmax(0).numpy().astype(np.uint8)))
    assert _header(written[0]) == (40, 60, *ENCODINGS[encoding][1:])
    _same_file_content(written[0], tmp_path / "whole.png")
    # the probabilities memory map had its pages released after every piece: nothing written is lost
    saved = np.load(tmp_path / "out" / "big_probs.npy").astype(np.float32)
    np.testing.assert_allclose(saved, probs.numpy(), atol=1e-3)


def test_released_pages_read_back_the_file_and_copy_on_write_maps_keep_their_changes(tmp_path: Path) -> None:
    values = np.arange(3 * 4096, dtype=np.uint8).reshape(3, 4096)  # 3 pages of 4 KiB
    values.tofile(tmp_path / "a.raw")
    mapped = np.memmap(tmp_path / "a.raw", dtype=np.uint8, mode="r", shape=(3, 4096))
    assert int(mapped[2].sum()) == int(values[2].sum())
    release_pages(mapped)
    np.testing.assert_array_equal(mapped, values)  # pages come back from the file
    private = np.memmap(tmp_path / "a.raw", dtype=np.uint8, mode="c", shape=(3, 4096))
    private[1, 5] = 77
    release_pages(private)  # must not drop the private change
    assert private[1, 5] == 77 and values[1, 5] == 5
    release_pages(values)  # an ordinary array: nothing to release


class Ones:
    """A 'network' without margin that gives class 1 everywhere and notes each batch size it is given."""

    margin, stride = 0, 1

    def __init__(self) -> None:
        self.batches: list[int] = []

    def input_size_for(self, size: int) -> int:
        return size

    def output_size(self, size: int) -> int:
        return size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return torch.stack([torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0])], dim=1)


def test_large_tiles_go_fewer_at_a_time_and_pieces_cover_every_row_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiled, "PASS_PIXELS", 2 * 32 * 32)  # two 32x32 tiles per pass
    monkeypatch.setattr(tiled, "CHUNK_PIXELS", 3 * 150)  # pieces of 3 rows of a 150-pixel-wide image
    fn = Ones()
    image = np.zeros((40, 150, 1), np.float32)
    pieces = list(tiled.index_bands(fn, image, lambda r: torch.from_numpy(r.transpose(2, 0, 1).copy()),
                                    InferConfig(tile=32, overlap=0, batch_size=4)))
    # 32-pixel tiles: 2 rows (0, 32) x 5 columns (0, 32, 64, 96, 128) -> batches 2, 2, 1 per row
    assert fn.batches == [2, 2, 1, 2, 2, 1]
    # rows 0..31 in pieces of 3 (the last of 2), then rows 32..39
    assert [(top, len(rows)) for top, rows in pieces][:2] == [(0, 3), (3, 3)]
    assert [top for top, _ in pieces] == [*range(0, 32, 3), 32, 35, 38]
    assert sum(len(rows) for _, rows in pieces) == 40 and all((rows == 1).all() for _, rows in pieces)
