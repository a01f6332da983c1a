"""Very large images: time per megapixel and peak memory of overlap-tile prediction as the image grows.

    python benchmarks/large_images.py                       # 4096^2, 8192^2, 16384^2
    python benchmarks/large_images.py --sizes 4096 8192
    python benchmarks/large_images.py --sizes 2048 --formats tiff ome-tiff ome-zarr

Each size runs in a fresh process (so its peak RSS is its own): a generated 8-bit gray TIFF (memory-mapped, read
tile by tile) is segmented by the paper's valid U-Net at reduced width (`--width`, default 8 base channels)
through `unetkit.predict` with exact overlap-tile prediction, and the mask is written as PNG, band by band.
Before the timed prediction the process warms up by predicting a (2 tile)^2 image with the same tiles (first
calls build oneDNN kernels and grow the allocator), so the time per megapixel does not depend on the size
through one-off costs; peak RSS covers both. CPU seconds (all threads) are shown beside the wall time: on a
shared machine they vary less.

`--formats` gives a row per input format of the same pixels: `tiff` (plain, memory-mapped), `ome-tiff` (tiled
256 x 256, zlib-compressed, pyramidal; read region by region through tifffile's zarr store) and `ome-zarr`
(chunked, compressed, pyramidal). The inputs are written band by band with unetkit's own OME writers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from unetkit.infer.inference import InferOptions


def make_checkpoint(folder: Path, width: int) -> Path:
    from unetkit.checkpoint import make_checkpoint as checkpoint_dict
    from unetkit.checkpoint import out_channels, save_checkpoint
    from unetkit.config import config_from_dict
    from unetkit.models.build import build_model

    cfg = config_from_dict({"data": {"classes": ["background", "foreground"], "mask": {"encoding": "binary"}},
                            "model": {"padding": "valid", "base_channels": width}})
    torch.manual_seed(0)
    path = folder / "model.pt"
    save_checkpoint(checkpoint_dict(build_model(cfg.model, 1, out_channels(cfg)), cfg, epoch=0), path)
    return path


def make_image(path: Path, size: int) -> None:
    """A smooth random pattern written in strips, so generating it never needs the whole image as floats."""
    image = tifffile.memmap(path, shape=(size, size), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for top in range(0, size, 1024):
        rows = min(1024, size - top)
        image[top : top + rows] = rng.integers(0, 255, (rows, size), dtype=np.uint8)
    image.flush()
    del image


def convert(plain: Path, fmt: str) -> Path:
    """The plain TIFF's pixels in format `fmt`, written in bands of 1024 rows (never whole in memory)."""
    if fmt == "tiff":
        return plain
    from unetkit.data.ome_writers import write_ome_tiff, write_ome_zarr

    pixels = tifffile.memmap(plain, mode="r")
    height, width = pixels.shape
    target = plain.with_name(plain.stem + (".ome.tif" if fmt == "ome-tiff" else ".ome.zarr"))
    write = write_ome_tiff if fmt == "ome-tiff" else write_ome_zarr
    write(target, height, width, (np.array(pixels[top : top + 1024]) for top in range(0, height, 1024)))
    return target


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(checkpoint: Path, image: Path, out: Path, tile: int) -> None:
    """Child process: warm up on a small image, then predict one image; print seconds and peak RSS as JSON."""
    from unetkit import predict

    warm = out.parent / f"warm_{out.name}"
    make_image(warm.with_suffix(".tif"), 2 * tile)
    predict(checkpoint, [warm.with_suffix(".tif")], warm, options=InferOptions(tile=tile), progress=False)
    began, began_cpu = time.perf_counter(), cpu_seconds()
    predict(checkpoint, [image], out, options=InferOptions(tile=tile), progress=False)
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - began_cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--width", type=int, default=8, help="base channels of the valid U-Net")
    parser.add_argument("--tile", type=int, default=1024, help="output tile size")
    parser.add_argument("--formats", nargs="+", default=["tiff"], choices=["tiff", "ome-tiff", "ome-zarr"],
                        help="input formats, a row each (default: tiff)")
    parser.add_argument("--child", nargs=3, metavar=("CKPT", "IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]), args.tile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = make_checkpoint(folder, args.width)
        print(f"after a warm-up prediction of a {2 * args.tile}^2 image in the same process, tile {args.tile}")
        print(f"{'format':>8s} {'size':>7s} {'megapixels':>10s} {'seconds':>8s} {'s / MP':>7s} {'CPU s / MP':>10s} "
              f"{'peak RSS':>9s}")
        for size in args.sizes:
            plain = folder / f"gray_{size}.tif"
            make_image(plain, size)
            for fmt in args.formats:
                image = convert(plain, fmt)
                result = subprocess.run([sys.executable, __file__, "--tile", str(args.tile), "--child",
                                         str(checkpoint), str(image), str(folder / f"out_{fmt}_{size}")],
                                        capture_output=True, text=True, check=True)
                figures = json.loads(result.stdout.strip().splitlines()[-1])
                megapixels = size * size / 1e6
                print(f"{fmt:>8s} {size:7d} {megapixels:10.1f} {figures['seconds']:8.1f} "
                      f"{figures['seconds'] / megapixels:7.3f} {figures['cpu_seconds'] / megapixels:10.3f} "
                      f"{figures['peak_rss_mb'] / 1024:7.2f} GB", flush=True)
                if image != plain:
                    shutil.rmtree(image) if image.is_dir() else image.unlink()
            plain.unlink()


if __name__ == "__main__":
    main()
