"""OME-TIFF and OME-Zarr in and out: the same pixels give the same mask whatever file they come in, pyramid
levels are read and written, and the physical pixel size travels from the input to every output."""

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from ome_zarr.writer import write_image as write_ome_zarr_image
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.cli import main
from unetkit.config import config_from_dict
from unetkit.data.io import read_raw
from unetkit.data.lazy_image import LazyImage
from unetkit.data.source import open_image
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import evaluate
from unetkit.infer.inference import InferOptions
from unetkit.infer.predict import predict
from unetkit.models.build import build_model

HEIGHT, WIDTH = 200, 300
TILES = InferOptions(tile=64)  # 300 x 200 px in tiles of 64: read band by band


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An untrained padded U-Net (3 classes, index masks) whose biases are zero, so its classes follow the pixels
    (about half and half of classes 1 and 2 on `_pixels`) instead of one bias winning everywhere."""
    cfg = config_from_dict({"data": {"classes": ["a", "b", "c"], "mask": {"encoding": "index"}},
                            "model": {"depth": 2, "base_channels": 4, "padding": "same", "init": "he"}})
    torch.manual_seed(3)
    model = build_model(cfg.model, 1, out_channels(cfg))
    with torch.no_grad():
        for bias in (p for p in model.parameters() if p.ndim == 1):
            bias.zero_()
    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(model, cfg, epoch=0), path)
    return path


def _pixels(height: int = HEIGHT, width: int = WIDTH, noise: int = 100) -> np.ndarray:
    """(H, W) uint8 blobs on noise, so the untrained network's classes change across the image."""
    yy, xx = np.mgrid[:height, :width]
    blobs = 120 * (np.sin(yy / 9.0) * np.cos(xx / 13.0) > 0.3)
    return (blobs + np.random.default_rng(0).integers(0, noise + 1, (height, width))).astype(np.uint8)


def _ome_tiff(path: Path, pixels: np.ndarray, size: tuple[float, float] = (0.5, 0.25), levels: int = 2) -> Path:
    """A tiled, zlib-compressed, pyramidal OME-TIFF: level k holds every 2^k-th pixel."""
    options = {"tile": (64, 64), "compression": "zlib"}
    meta = {"axes": "YX", "PhysicalSizeY": size[0], "PhysicalSizeYUnit": "µm", "PhysicalSizeX": size[1],
            "PhysicalSizeXUnit": "µm"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(pixels, subifds=levels, metadata=meta, **options)
        for k in range(1, levels + 1):
            tif.write(pixels[:: 2**k, :: 2**k], subfiletype=1, **options)
    return path


def _ome_zarr(path: Path, pixels: np.ndarray, size: tuple[float, float] = (0.5, 0.25)) -> Path:
    """An OME-Zarr (0.5) image of axes (t, c, z, y, x) with singleton t, c, z, written by ome-zarr."""
    write_ome_zarr_image(pixels[None, None, None], zarr.open_group(str(path), mode="w"), axes="tczyx",
                         scale={"t": 1.0, "c": 1.0, "z": 1.0, "y": size[0], "x": size[1]},
                         axes_units={"y": "micrometer", "x": "micrometer"})
    return path


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _predicted(checkpoint: Path, image: Path, out: Path, **kwargs: object) -> Path:
    return predict(checkpoint, [image], out, options=kwargs.pop("options", TILES), progress=False, **kwargs)[0]


def test_ome_tiff_and_ome_zarr_give_exactly_the_mask_of_the_same_pixels_in_a_png(tmp_path: Path,
                                                                                  checkpoint: Path) -> None:
    pixels = _pixels()
    inputs = [_png(tmp_path / "png.png", pixels), _ome_tiff(tmp_path / "tif.ome.tif", pixels),
              _ome_zarr(tmp_path / "zarr.ome.zarr", pixels)]
    assert isinstance(open_image(inputs[1], 1), LazyImage) and isinstance(open_image(inputs[2], 1), LazyImage)
    masks = [read_raw(_predicted(checkpoint, image, tmp_path / f"out{i}")) for i, image in enumerate(inputs)]
    assert masks[0].shape == (HEIGHT, WIDTH) and len(np.unique(masks[0])) >= 2  # a mask that can tell them apart
    np.testing.assert_array_equal(masks[1], masks[0])
    np.testing.assert_array_equal(masks[2], masks[0])
    assert [m.name for m in (tmp_path / "out1").iterdir()] == ["tif.png"]  # NAME.ome.tif -> NAME.png


def test_level_1_reads_the_second_pyramid_level(tmp_path: Path, checkpoint: Path) -> None:
    pixels = _pixels()
    tif, zarr_image = _ome_tiff(tmp_path / "a.ome.tif", pixels), _ome_zarr(tmp_path / "b.ome.zarr", pixels)
    second = zarr.open_group(str(zarr_image), mode="r")["s1"][0, 0, 0]  # ome-zarr's own downsampled level
    expected_tif = read_raw(_predicted(checkpoint, _png(tmp_path / "a1.png", pixels[::2, ::2]), tmp_path / "p1"))
    expected_zarr = read_raw(_predicted(checkpoint, _png(tmp_path / "b1.png", second), tmp_path / "p2"))
    level1 = InferOptions(tile=64, level=1)
    np.testing.assert_array_equal(read_raw(_predicted(checkpoint, tif, tmp_path / "o1", options=level1)),
                                  expected_tif)
    np.testing.assert_array_equal(read_raw(_predicted(checkpoint, zarr_image, tmp_path / "o2", options=level1)),
                                  expected_zarr)
    with pytest.raises(UnetkitError, match=r"--level 3 does not exist; the image has 3 level\(s\), 0 to 2"):
        _predicted(checkpoint, tif, tmp_path / "o3", options=InferOptions(level=3))


def test_ome_outputs_hold_the_mask_pyramid_with_the_inputs_axes_and_pixel_size(tmp_path: Path,
                                                                               checkpoint: Path) -> None:
    pixels = _pixels()
    tif = _ome_tiff(tmp_path / "in.ome.tif", pixels, size=(0.5, 0.25))
    mask = read_raw(_predicted(checkpoint, tif, tmp_path / "png"))  # index encoding: the PNG holds class indices
    tiff_out = _predicted(checkpoint, tif, tmp_path / "tiff", mask_format="ome-tiff")
    assert tiff_out.name == "in.ome.tif"
    with tifffile.TiffFile(tiff_out) as out:
        levels = out.series[0].levels
        assert [level.shape for level in levels] == [(200, 300), (100, 150)] and levels[0].axes == "YX"
        for k, level in enumerate(levels):
            np.testing.assert_array_equal(level.asarray(), mask[:: 2**k, :: 2**k])
        page = out.pages[0]
        assert page.is_tiled and page.tile == (256, 256) and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        ome = tifffile.xml2dict(out.ome_metadata)["OME"]["Image"]["Pixels"]
        assert (ome["PhysicalSizeY"], ome["PhysicalSizeX"], ome["PhysicalSizeXUnit"]) == (0.5, 0.25, "µm")
        np.testing.assert_allclose(page.get_resolution("CENTIMETER"), (1e4 / 0.25, 1e4 / 0.5))
    zarr_out = _predicted(checkpoint, tif, tmp_path / "zarr", mask_format="ome-zarr")
    group = zarr.open_group(str(zarr_out), mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert multiscale["axes"] == [{"name": "y", "type": "space", "unit": "micrometer"},
                                  {"name": "x", "type": "space", "unit": "micrometer"}]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[0.5, 0.25], [1.0, 0.5]]
    for k, dataset in enumerate(multiscale["datasets"]):
        np.testing.assert_array_equal(group[dataset["path"]][:], mask[:: 2**k, :: 2**k])
    assert group["0"].chunks == (200, 256)


def test_pixel_size_lands_in_the_objects_table(tmp_path: Path, checkpoint: Path) -> None:
    pixels = _pixels(64, 96, noise=0)  # a few dozen blobs, not thousands of noise specks
    options = InferOptions(tile=64, instances=True)
    _predicted(checkpoint, _ome_zarr(tmp_path / "cells.ome.zarr", pixels, size=(0.5, 0.25)), tmp_path / "z",
               options=options)
    with open(tmp_path / "z" / "cells_objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {row["unit"] for row in rows} == {"µm"}
    for row in rows:
        area = float(row["area"]) * 0.5 * 0.25
        assert float(row["physical_area"]) == pytest.approx(area, rel=1e-5)
        assert float(row["physical_diameter"]) == pytest.approx(np.sqrt(4 * area / np.pi), rel=1e-5)
    _predicted(checkpoint, _png(tmp_path / "plain.png", pixels), tmp_path / "p", options=options)
    with open(tmp_path / "p" / "plain_objects.csv") as f:
        assert "physical_area" not in next(csv.reader(f))  # no size known: pixels only


def test_evaluate_scores_level_1_against_masks_of_its_size(tmp_path: Path, checkpoint: Path) -> None:
    pixels = _pixels()
    for folder, image in (("ome", lambda p: _ome_tiff(p / "images" / "a.ome.tif", pixels)),
                          ("png", lambda p: _png(p / "images" / "a.png", pixels[::2, ::2]))):
        root = tmp_path / folder
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        image(root)
        _png(root / "masks" / "a.png", (pixels[::2, ::2] > 100).astype(np.uint8))
    level1 = evaluate(checkpoint, tmp_path / "ome", options=InferOptions(tile=64, level=1), progress=False,
                      output=tmp_path / "ome.json")
    plain = evaluate(checkpoint, tmp_path / "png", options=InferOptions(tile=64), progress=False,
                     output=tmp_path / "png.json")
    assert np.sum(level1["confusion_matrix"]) == 100 * 150
    assert level1["confusion_matrix"] == plain["confusion_matrix"]


def test_cli_predicts_an_ome_tiff_into_an_ome_zarr(tmp_path: Path, checkpoint: Path) -> None:
    pixels = _pixels()
    tif = _ome_tiff(tmp_path / "in.ome.tif", pixels)
    expected = read_raw(_predicted(checkpoint, tif, tmp_path / "png"))
    assert main(["predict", str(checkpoint), str(tif), "-o", str(tmp_path / "out"), "--format", "ome-zarr",
                 "--tile", "64", "-q"]) == 0
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out" / "in.ome.zarr"), mode="r")["0"][:], expected)


def test_a_3d_stack_is_refused_in_one_line(tmp_path: Path, checkpoint: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "stack.ome.tif"
    tifffile.imwrite(stack, np.zeros((3, 40, 50), np.uint8), metadata={"axes": "ZYX"}, tile=(16, 16),
                     compression="zlib")
    assert main(["predict", str(checkpoint), str(stack), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a 3D stack (z=3)" in err and "save one plane per file" in err
