"""Broken datasets and images: each gives one error line naming the file, before anything is written.

Training cases stop in the pre-flight scan (no run folder); prediction and evaluation cases stop before
their first output. Pixel-limit cases use checkpoints whose config sets a tiny `data.max_image_pixels`
(the 32x32 images have 1,024 pixels): 1,000 exercises unetkit's own header check, 100 Pillow's refusal
beyond twice the limit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from bad_inputs.builders import Scene


def mask_value_7_in_binary(s: Scene) -> list[str]:
    mask = np.zeros((32, 32), np.uint8)
    mask[5, 5] = 7  # binary 0/255 masks hold no 7
    s.image("img_2.png", mask, "masks")
    return s.train


def rgb_mask_declared_index(s: Scene) -> list[str]:
    for i in range(4):  # index masks 0/1, then one saved as a colour picture
        s.image(f"img_{i}.png", (np.asarray(Image.open(s.data / "masks" / f"img_{i}.png")) > 0).astype(np.uint8),
                "masks")
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[:10, :10] = (255, 0, 0)
    s.image("img_1.png", colour, "masks")
    return [*s.train, "--set", "data.mask.encoding=index"]


def mask_16_bit(s: Scene) -> list[str]:
    s.image("img_3.png", np.full((32, 32), 65535, np.uint16), "masks")  # 16-bit PNG: 65535 is not 0 or 255
    return s.train


def size_mismatch(s: Scene) -> list[str]:
    s.image("img_0.png", np.zeros((24, 32), np.uint8), "masks")
    return s.train


def duplicate_stems(s: Scene) -> list[str]:
    tifffile.imwrite(s.data / "images" / "img_0.tif", np.zeros((32, 32), np.uint8))  # beside img_0.png
    return s.train


def zero_byte_image(s: Scene) -> list[str]:
    (s.data / "images" / "img_1.png").write_bytes(b"")
    return s.train


def text_with_image_extension(s: Scene) -> list[str]:
    (s.data / "images" / "img_2.png").write_text("label,x,y\n1,2,3\n")
    return s.train


def empty_images_folder(s: Scene) -> list[str]:
    for f in (s.data / "images").iterdir():
        f.unlink()
    return s.train


def nested_folders(s: Scene) -> list[str]:
    nested = s.data / "images" / "batch1"
    nested.mkdir()
    for f in (s.data / "images").glob("*.png"):
        f.rename(nested / f.name)
    return s.train


def truncated_png(s: Scene) -> list[str]:
    path = s.data / "images" / "img_3.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return s.train


def garbage_tiff(s: Scene) -> list[str]:
    (s.data / "images" / "img_1.png").unlink()
    (s.data / "images" / "img_1.tif").write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(400))
    return s.train


def tiff_with_garbage_data(s: Scene) -> list[str]:
    (s.data / "images" / "img_1.png").unlink()
    path = s.data / "images" / "img_1.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = np.random.default_rng(1).bytes(count)  # header intact, pixels not zlib
    path.write_bytes(bytes(data))
    return s.train


def png_over_pixel_limit(s: Scene) -> list[str]:
    return s.predict(s.checkpoint_with("limited.pt", data={"max_image_pixels": 1000}))


def png_far_over_pixel_limit(s: Scene) -> list[str]:
    return s.evaluate(s.checkpoint_with("limited.pt", data={"max_image_pixels": 100}))


def tiff_over_pixel_limit(s: Scene) -> list[str]:
    tifffile.imwrite(s.tmp / "big.tif", np.zeros((40, 30), np.uint8))  # plain TIFF: memory-mapped by predict
    return s.predict(s.checkpoint_with("limited.pt", data={"max_image_pixels": 1000}), inputs=s.tmp / "big.tif")


def compressed_tiff_over_pixel_limit(s: Scene) -> list[str]:
    tifffile.imwrite(s.tmp / "big.tif", np.zeros((40, 30), np.uint8), compression="zlib")  # decoded, not mapped
    return s.predict(s.checkpoint_with("limited.pt", data={"max_image_pixels": 1000}), inputs=s.tmp / "big.tif")


def predict_text_as_image(s: Scene) -> list[str]:
    (s.tmp / "notes.png").write_text("not a picture\n")
    return s.predict(s.checkpoint, inputs=s.tmp / "notes.png")


def predict_truncated_png(s: Scene) -> list[str]:
    data = (s.data / "images" / "img_0.png").read_bytes()
    (s.tmp / "cut.png").write_bytes(data[: len(data) // 2])
    return s.predict(s.checkpoint, inputs=s.tmp / "cut.png")


def predict_empty_folder(s: Scene) -> list[str]:
    (s.tmp / "nothing").mkdir()
    return s.predict(s.checkpoint, inputs=s.tmp / "nothing")


def predict_missing_input(s: Scene) -> list[str]:
    return s.predict(s.checkpoint, inputs=s.tmp / "gone.png")


def evaluate_mask_value(s: Scene) -> list[str]:
    s.image("img_1.png", np.full((32, 32), 128, np.uint8), "masks")
    return s.evaluate(s.checkpoint)


def evaluate_image_without_mask(s: Scene) -> list[str]:
    shutil.copy(s.data / "images" / "img_0.png", s.data / "images" / "extra.png")
    return s.evaluate(s.checkpoint)


CASES = [
    pytest.param(mask_value_7_in_binary, [r"masks/img_2\.png", r"\b7\b", "binary"], id="mask-unexpected-value"),
    pytest.param(rgb_mask_declared_index, [r"masks/img_1\.png", "RGB", "palette"], id="rgb-mask-declared-index"),
    pytest.param(mask_16_bit, [r"masks/img_3\.png", "65535"], id="mask-16-bit"),
    pytest.param(size_mismatch, [r"masks/img_0\.png", "32x24", "32x32"], id="image-mask-size-mismatch"),
    pytest.param(duplicate_stems, [r"images", "img_0", "img_0.png", "img_0.tif"], id="duplicate-stems"),
    pytest.param(zero_byte_image, [r"images/img_1\.png", "empty"], id="zero-byte-image"),
    pytest.param(text_with_image_extension, [r"images/img_2\.png", "cannot read image"], id="text-named-png"),
    pytest.param(empty_images_folder, [r"tiny_data/images", "no images"], id="empty-folder"),
    pytest.param(nested_folders, [r"tiny_data/images", "batch1/", "not searched"], id="nested-folders"),
    pytest.param(truncated_png, [r"images/img_3\.png", "truncated"], id="truncated-png"),
    pytest.param(garbage_tiff, [r"images/img_1\.tif", "cannot read image"], id="garbage-tiff"),
    pytest.param(tiff_with_garbage_data, [r"images/img_1\.tif", "cannot read image"], id="tiff-garbage-pixels"),
    pytest.param(png_over_pixel_limit, [r"images/img_0\.png", r"32x32 = 1,024", r"limit of 1,000",
                                        r"data\.max_image_pixels"], id="png-over-pixel-limit"),
    pytest.param(png_far_over_pixel_limit, [r"images/img_0\.png", "1,024 pixels", r"limit of 100\b",
                                            r"data\.max_image_pixels"], id="png-bomb-refused-by-pillow"),
    pytest.param(tiff_over_pixel_limit, [r"big\.tif", r"30x40 = 1,200", r"data\.max_image_pixels"],
                 id="mapped-tiff-over-pixel-limit"),
    pytest.param(compressed_tiff_over_pixel_limit, [r"big\.tif", r"30x40 = 1,200", r"data\.max_image_pixels"],
                 id="compressed-tiff-over-pixel-limit"),
    pytest.param(predict_text_as_image, [r"notes\.png", "cannot read image"], id="predict-text-named-png"),
    pytest.param(predict_truncated_png, [r"cut\.png", "truncated"], id="predict-truncated-png"),
    pytest.param(predict_empty_folder, [r"nothing", "no images"], id="predict-empty-folder"),
    pytest.param(predict_missing_input, [r"gone\.png", "does not exist"], id="predict-missing-input"),
    pytest.param(evaluate_mask_value, [r"masks/img_1\.png", r"\b128\b"], id="evaluate-mask-unexpected-value"),
    pytest.param(evaluate_image_without_mask, [r"\bextra\b", "no mask"], id="evaluate-image-without-mask"),
]


@pytest.mark.parametrize("setup, patterns", CASES)
def test_bad_dataset(setup: Callable[[Scene], list[str]], patterns: list[str],
                     check_clean_error: Callable[..., str]) -> None:
    check_clean_error(setup, patterns)
