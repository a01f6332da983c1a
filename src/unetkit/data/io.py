"""Reading images and masks (writing them is `unetkit.data.writers`).

Images become `(H, W, C)` float32 in [0, 1] so everything downstream sees one format whatever the file's bit
depth; masks are read untouched (`read_raw`) because their raw values *are* the labels and `MaskCodec` decides
what they mean. TIFF goes through tifffile (16-bit, multi-page, planar files), everything else through
Pillow. A file that cannot be decoded is the user's to fix, so it raises `UnetkitError` naming the file.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from unetkit.errors import UnetkitError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
OME_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")  # part of the format, not of the image's name
DEFAULT_MAX_PIXELS = 1_073_741_824  # 1 gigapixel, the default of data.max_image_pixels
_max_pixels: int | None = DEFAULT_MAX_PIXELS


def set_pixel_limit(pixels: int | None) -> int | None:
    """Refuse images of more than `pixels` pixels from now on (None: no limit); returns the previous limit.

    A small compressed file can declare a huge size (a decompression bomb) and would be decoded into memory
    before anything looked at it, so every reader here checks the size in the file's header first:
    `open_picture` for Pillow's formats, tifffile's page shape for TIFF. The limit holds for this process:
    call this with `data.max_image_pixels` wherever a config is applied. Pillow's own process-wide
    `Image.MAX_IMAGE_PIXELS` is left as it is: it belongs to everything else that runs in the process.
    """
    global _max_pixels
    if pixels is not None and pixels <= 0:
        raise ValueError(f"the pixel limit must be positive or None, got {pixels}")
    previous, _max_pixels = _max_pixels, pixels
    return previous


def _too_large(path: Path, size: str) -> UnetkitError:
    return UnetkitError(f"{path}: image of {size} pixels is over the limit of {_max_pixels:,} (data.max_image_pixels, "
                        "a guard against decompression bombs); raise data.max_image_pixels if you trust the file")


def check_pixel_limit(path: Path, width: int, height: int) -> None:
    """Raise `UnetkitError` naming the file when a `width` x `height` image is over the limit."""
    if _max_pixels is not None and width * height > _max_pixels:
        raise _too_large(path, f"{width}x{height} = {width * height:,}")


def open_picture(path: Path) -> Image.Image:
    """`Image.open` under unetkit's pixel limit instead of Pillow's: the size in the header is checked against
    `set_pixel_limit`'s limit before any pixel is decoded, raising `UnetkitError` naming the file.

    Pillow checks its own process-wide `Image.MAX_IMAGE_PIXELS` in `Image.open`: it warns past it (silenced
    here, ours decides) and refuses past twice it. A file it refuses there is opened by its format plugin
    directly (`_open_past_pillow_limit`), so our limit alone decides, whatever Pillow's is set to.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError:
            img = _open_past_pillow_limit(path)
    try:
        check_pixel_limit(path, img.width, img.height)
    except UnetkitError:
        img.close()
        raise
    return img


def _open_past_pillow_limit(path: Path) -> Image.Image:
    """Identify `path` as `Image.open` does (the first registered format that accepts its first bytes and
    parses its header), without the size check `Image.open` runs afterwards; nothing is decoded."""
    Image.init()
    with open(path, "rb") as f:
        prefix = f.read(16)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = not accept or accept(prefix)
        if isinstance(accepted, str) or not accepted:  # a str explains why the format does not apply
            continue
        try:
            return factory(str(path), str(path))
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open takes for "not this format"
            continue
    raise Image.UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (extensions matched case-insensitively), and
    its OME-Zarr image folders (`NAME.zarr`, `NAME.ome.zarr`).

    Hidden files are skipped: copies made on macOS leave `._name.png` companions that are not images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UnetkitError(f"image folder {folder} does not exist; check data.root and the data paths")
    files = sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                                           or p.is_dir() and p.suffix.lower() == ".zarr")  # OME-Zarr: one image
    )
    if not files:
        nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = (f"subfolders such as {nested[0]}/ are not searched: name the folder that holds the files" if nested
                else "check the data paths")
        raise UnetkitError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); {hint}")
    return files


def image_stem(path: Path) -> str:
    """The image's name without its format: `a17` for `a17.png`, `a17.ome.tif` and `a17.ome.zarr`."""
    name = Path(path).name
    for suffix in OME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _unreadable(path: Path, reason: str) -> UnetkitError:
    return UnetkitError(f"{path}: cannot read image ({reason}); replace or remove the file")


def _load(path: Path, as_image: bool) -> np.ndarray:
    """Decode a file into its stored pixel array: `(H, W)` or `(H, W, S)` with S samples per pixel.

    With `as_image`, Pillow's paletted and 1-bit modes are expanded to what they look like (RGB, 0/255);
    without it the stored values are kept, because a paletted mask stores class indices.
    """
    path = Path(path)
    if not path.is_file():
        raise _unreadable(path, "no such file")
    if path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")
    # Decoders fail in many ways on a damaged file (OSError, SyntaxError, ValueError, struct and zlib
    # errors, tifffile's own), and each one means the same thing here: the file is not a usable image.
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise _unreadable(path, "a TIFF header but no image in it: damaged or cut short")
                page = tif.pages[0]  # its size comes from the header; nothing is decoded yet
                check_pixel_limit(path, page.imagewidth, page.imagelength * page.imagedepth)
                array = _planar_to_last(tif.asarray(key=0))
        else:
            with open_picture(path) as img:  # checks the pixel limit first
                img.load()  # Pillow decodes lazily; force it so truncation is caught here
                array = np.asarray(_normalise_mode(img, as_image))
    except UnetkitError:
        raise
    except Image.UnidentifiedImageError:  # its own message repeats the path
        raise _unreadable(path, "not a PNG, JPEG or BMP image, or a damaged one") from None
    except Image.DecompressionBombError as err:  # a format that checks again past its header (MPO frames)
        if _max_pixels is None:
            raise _unreadable(path, str(err)) from None
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(path, f"{int(found.group(1)):,}" if found else "more") from None
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _unreadable(path, reason) from None
    if array.ndim < 2 or array.size == 0:
        raise _unreadable(path, "no pixel data found")
    return array


def _planar_to_last(array: np.ndarray) -> np.ndarray:
    """tifffile returns planar (separate-plane) RGB as `(S, H, W)`; move the samples last."""
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        return np.moveaxis(array, 0, -1)
    return array


def _normalise_mode(img: Image.Image, as_image: bool) -> Image.Image:
    """Turn Pillow's many modes into L / I;16 / I / F / RGB / RGBA arrays numpy understands."""
    if img.mode == "P":
        if not as_image:
            return img
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        return img.convert("L") if as_image else img  # raw: numpy gives bool, read_raw makes it 0/1
    if img.mode == "LA":
        return img.getchannel("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
        return img.convert("RGB")
    return img


def _squeeze_channels(array: np.ndarray, path: Path) -> np.ndarray:
    """`(H, W)` or `(H, W, 3)`: single-sample stacks lose their axis, RGBA loses alpha."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        return array
    raise UnetkitError(f"{path}: image has shape {array.shape}; unetkit reads gray (H, W) or RGB (H, W, 3) images")


def read_raw(path: Path) -> np.ndarray:
    """The file's pixel values untouched, `(H, W)` or `(H, W, 3)` (alpha dropped); used for masks.

    A paletted PNG gives its stored indices, a 1-bit image 0/1. The dtype is the file's own.
    """
    path = Path(path)
    array = _squeeze_channels(_load(path, as_image=False), path)
    return array.astype(np.uint8) if array.dtype == np.bool_ else array


def read_image(path: Path, channels: int) -> np.ndarray:
    """An image as `(H, W, channels)` float32 in [0, 1], converted to gray (1) or RGB (3).

    Scaling uses the dtype's range (uint8 / 255, uint16 / 65535), so intensities mean the same in every
    file of a dataset. Float images already in [0, 1] are kept; other float or signed data is min-max
    scaled per image, the only choice that works without knowing the instrument. RGB -> gray uses the
    ITU-R 601 luminance (as Pillow and OpenCV do); gray -> RGB repeats the channel.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    array = _squeeze_channels(_load(path, as_image=True), path)
    return convert_channels(to_unit_float(array, path), channels)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 1|3) float32 -> (H, W, channels): RGB -> gray by luminance, gray -> RGB by repeating."""
    if image.ndim == 3 and image.shape[2] == 3 and channels == 1:
        image = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] != channels:
        image = np.repeat(image, channels, axis=2)
    return np.ascontiguousarray(image, dtype=np.float32)


def to_unit_float(array: np.ndarray, path: Path | str = "image") -> np.ndarray:
    """Raw pixels -> float32 in [0, 1], the one conversion of every image unetkit reads (training, evaluation,
    prediction, memory-mapped tiles): unsigned integers by their dtype's range, floats in [0, 1] kept, anything
    else min-max scaled per image. `path` only names the file in errors."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # Pillow's mode "I" holding 16-bit data
    if np.issubdtype(array.dtype, np.unsignedinteger):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    image = array.astype(np.float32)
    if not np.isfinite(image).all():
        raise UnetkitError(f"{path}: image holds NaN or infinite values; replace them before training")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return image
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def file_channels(path: Path) -> int | None:
    """1 (gray) or 3 (colour) as the file header says, without decoding pixels; None when it cannot tell."""
    try:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                samples = tif.pages[0].samplesperpixel
            return 3 if samples >= 3 else 1
        with open_picture(path) as img:
            return 3 if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else 1
    except Exception:  # an unreadable file is reported, naming it, when it is read
        return None


def channel_warning(files: list[Path], channels: int) -> str | None:
    """One line when some inputs have another channel count than the model takes, saying how they are converted
    (colour -> gray by luminance, gray -> colour by repeating); None when all match.

    A model trained on colour images applied to gray ones (or the reverse) still runs, but sees images unlike
    its training data; the user should know, once per run, not per file.
    """
    other = [f for f in files if (found := file_channels(f)) is not None and found != channels]
    if not other:
        return None
    model = "gray" if channels == 1 else "RGB"
    theirs = "RGB" if channels == 1 else "gray"
    how = "converted to gray by luminance" if channels == 1 else "repeated into 3 channels"
    return (f"warning: the model takes {model} images (data.channels {channels}); {len(other)} of {len(files)} "
            f"input(s) are {theirs} (e.g. {other[0].name}) and are {how}")
