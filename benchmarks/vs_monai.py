"""unetkit's tiled predictor against MONAI's `sliding_window_inference`: agreement, time and peak memory.

    pip install monai                      # the `bench` extra
    python benchmarks/vs_monai.py          # 2048x2048 gray image, 512 tiles, 128 px overlap, gaussian, batch 4
    python benchmarks/vs_monai.py --size 1024 --repeats 1

Both run the same padded U-Net (base 16, batch norm, eval, seed 0) on the same float32 image with the same
sliding-window settings: tile (MONAI `roi_size`) 512, overlap 128 px (MONAI `overlap=0.25`), gaussian blending
with sigma = 0.125 * tile (MONAI `sigma_scale=0.125`), batch 4 (MONAI `sw_batch_size=4`). MONAI gets the whole
image as a (1, 1, H, W) tensor and a softmax-wrapped model; unetkit gets its Predictor, the (H, W, 1) numpy image
and a (K, H, W) float32 array to fill with probabilities, so both produce the same thing.

1. Agreement: max |p_unetkit - p_monai| over all pixels and classes, and the share of equal arg-max pixels.
2. Time: median of `--repeats` runs each after one warm-up each, alternating, in this process.
3. Peak memory: each method once in a fresh process. The baseline RSS is taken after building model and image
   and one warm-up forward pass of a batch of 4 tiles (so the convolution's one-time buffers are not counted);
   the peak high-water mark is reset right there (Linux `/proc/self/clear_refs`) and read after the call.
   `unetkit (index)` is the memory-lean mode: no probability array, only the (H, W) uint8 class map.
   `one forward` is a single batch of tiles through the network: the share of every peak that is activations.
4. Speed options MONAI's loop does not apply by itself, timed in the same alternation: unetkit with channels-last
   activations in fp32 (`--channels-last`) and with bf16 autocast as well (`--precision bf16`), each on its own
   copy of the model, with their agreement with MONAI's fp32 output.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference

from unetkit.config import InferConfig
from unetkit.infer.predictor import Predictor
from unetkit.infer.tiled import predict_tiled
from unetkit.infer.tiling import blend_window, tile_starts
from unetkit.models.unet import UNet

METHODS = ("monai", "unetkit", "unetkit (index)", "one forward")  # the last: a batch of tiles, for scale
FAST = {"unetkit channels-last fp32": "fp32", "unetkit channels-last bf16": "bf16"}  # timed only


def build(size: int) -> tuple[Predictor, np.ndarray]:
    """The padded U-Net as a CPU Predictor, and a (size, size, 1) float32 image: smooth blobs plus noise."""
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=16, padding="same", batch_norm=True).eval()
    rng = np.random.default_rng(0)
    axis = np.linspace(0, 12 * np.pi, size, dtype=np.float32)
    image = np.sin(axis)[:, None] * np.cos(0.7 * axis)[None, :] + 0.3 * rng.standard_normal((size, size), np.float32)
    image = image[..., None].astype(np.float32)
    with torch.inference_mode():  # shift the untrained head so about half the pixels are class 1
        logits = model(torch.from_numpy(image[:512, :512].transpose(2, 0, 1).copy())[None])
        model.head.bias[1] -= (logits[0, 1] - logits[0, 0]).median()
    return Predictor(model, torch.device("cpu")), image


def prepare(region: np.ndarray) -> torch.Tensor:
    """(h, w, 1) float32 region -> (1, h, w) tensor; the image is already normalized."""
    return torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1)))


def runner(method: str, predictor: Predictor, image: np.ndarray, args: argparse.Namespace
           ) -> Callable[[], np.ndarray]:
    """A no-argument call running one method over the whole image; returns (K, H, W) probabilities
    (or the (H, W) class map for `unetkit (index)`)."""
    overlap_px = round(args.overlap * args.tile)
    if method == "monai":
        model = predictor.model

        def softmax(x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(model(x), dim=1)

        whole = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]  # (1, 1, H, W)

        def run_monai() -> np.ndarray:
            with torch.inference_mode():
                out = sliding_window_inference(whole, args.tile, args.batch, softmax, overlap=args.overlap,
                                               mode="gaussian", sigma_scale=0.125)
            return np.asarray(out[0])

        return run_monai
    if method == "unetkit":
        def run_unetkit() -> np.ndarray:
            probs = np.empty((2, *image.shape[:2]), np.float32)
            tiling = InferConfig(tile=args.tile, overlap=overlap_px, blend="gaussian", batch_size=args.batch)
            predict_tiled(predictor, image, prepare, tiling, probabilities=probs)
            return probs

        return run_unetkit

    if method == "one forward":
        return lambda: predictor(torch.zeros(args.batch, 1, args.tile, args.tile)).numpy()

    def run_index() -> np.ndarray:
        tiling = InferConfig(tile=args.tile, overlap=overlap_px, blend="gaussian", batch_size=args.batch)
        return predict_tiled(predictor, image, prepare, tiling)

    return run_index


def rss_mb(field: str) -> float:
    """`VmRSS` or `VmHWM` of this process in MB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(method: str, args: argparse.Namespace) -> None:
    """Fresh process: baseline RSS, one call, peak RSS; prints JSON."""
    predictor, image = build(args.size)
    starts = len(tile_starts(args.size, args.tile, round(args.overlap * args.tile)))
    for batch in {args.batch, starts % args.batch, starts**2 % args.batch} - {0}:  # every batch size either uses
        predictor(torch.zeros(batch, 1, args.tile, args.tile))
    baseline = rss_mb("VmRSS")
    try:  # reset the high-water mark so the build and the warm-up do not hide the call's peak
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    runner(method, predictor, image, args)()
    ru_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = rss_mb("VmHWM") if reset else ru_peak
    print(json.dumps({"extra_mb": peak - baseline, "ru_extra_mb": ru_peak - baseline, "baseline_mb": baseline,
                      "reset": reset}))


def check_settings(args: argparse.Namespace) -> str:
    """Confirm both methods place the same windows with the same weights; returns a one-line summary."""
    interval = int(args.tile * (1 - args.overlap))  # MONAI's scan interval
    windows = dense_patch_slices((args.size, args.size), (args.tile, args.tile), (interval, interval))
    monai_starts = sorted({int(window[0].start) for window in windows})
    ours = tile_starts(args.size, args.tile, round(args.overlap * args.tile))
    theirs = compute_importance_map((args.tile, args.tile), mode="gaussian", sigma_scale=0.125).numpy()
    window = blend_window(args.tile, "gaussian")
    ratio = theirs / window  # blending divides by the summed weights, so only a constant factor may differ
    return (f"tile starts unetkit {ours} / monai {monai_starts} ({'same' if ours == monai_starts else 'DIFFER'}); "
            f"gaussian windows equal up to a factor: ratio {ratio.min():.6f}..{ratio.max():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25, help="fraction of the tile (MONAI's convention)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    import monai

    print(f"torch {torch.__version__}, monai {monai.__version__}, {torch.get_num_threads()} threads; "
          f"{args.size}x{args.size} image, tile {args.tile}, overlap {round(args.overlap * args.tile)} px, "
          f"batch {args.batch}")
    print(check_settings(args))
    predictor, image = build(args.size)
    runs = {m: runner(m, predictor, image, args) for m in METHODS[:2]}
    for name, precision in FAST.items():  # speed options a user turns on with --channels-last / --precision bf16
        fast = Predictor(copy.deepcopy(predictor.model), torch.device("cpu"), precision=precision, channels_last=True)
        runs[name] = runner("unetkit", fast, image, args)
    outputs = {m: run() for m, run in runs.items()}  # warm-up, and the outputs compared
    times: dict[str, list[float]] = {m: [] for m in runs}
    for _ in range(args.repeats):
        for method, run in runs.items():
            began = time.perf_counter()
            run()
            times[method].append(time.perf_counter() - began)
    index = runner("unetkit (index)", predictor, image, args)()
    index_same = (index == outputs["unetkit"].argmax(0)).mean()
    diff = np.abs(outputs["unetkit"] - outputs["monai"])
    same = outputs["unetkit"].argmax(0) == outputs["monai"].argmax(0)
    agreement = f"max|dp| {diff.max():.1e}, argmax equal {same.mean():.6%}"
    fg = outputs["monai"].argmax(0).mean()
    print(f"class-1 share of the monai map: {fg:.1%}; pixels with |dp| > 1e-4: {(diff.max(0) > 1e-4).sum()}")

    memory = {}
    for method in METHODS:
        result = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--tile", str(args.tile),
                                 "--overlap", str(args.overlap), "--batch", str(args.batch), "--child", method],
                                capture_output=True, text=True, check=True)
        memory[method] = json.loads(result.stdout.strip().splitlines()[-1])
    for name in FAST:
        fast_same = (outputs[name].argmax(0) == outputs["monai"].argmax(0)).mean()
        fast_diff = np.abs(outputs[name] - outputs["monai"]).max()
        seconds = statistics.median(times[name])
        speedup = statistics.median(times["monai"]) / seconds
        print(f"{name:30s} {seconds:8.2f} s ({speedup:.2f}x monai)  max|dp| {fast_diff:.1e}, "
              f"argmax equal {fast_same:.4%}")
    print("seconds per run: " + "; ".join(f"{m} " + ", ".join(f"{t:.2f}" for t in ts) for m, ts in times.items()))
    print(f"{'method':16s} {'seconds':>8s} {'peak extra RSS MB':>18s} {'(ru_maxrss)':>11s}  agreement with monai")
    for method in METHODS:
        seconds = f"{statistics.median(times[method]):8.2f}" if method in times else f"{'-':>8s}"
        agree = {"monai": "reference", "unetkit": agreement, "one forward": "-"}.get(
            method, f"index map = unetkit's argmax: {index_same:.4%}")
        m = memory[method]
        print(f"{method:16s} {seconds} {m['extra_mb']:18.0f} {m['ru_extra_mb']:11.0f}  {agree}")
    print(f"(baseline RSS before the call: {memory['monai']['baseline_mb']:.0f} MB; high-water mark reset: "
          f"{memory['monai']['reset']}; ru_maxrss cannot be reset, so its column may include earlier peaks)")


if __name__ == "__main__":
    main()
