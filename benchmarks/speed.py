"""Inference and training speed against this machine's own convolution limit, measured in one run.

    python benchmarks/speed.py                 # paper U-Net 572x572 batch 1, padded U-Net 512x512 batch 4
    python benchmarks/speed.py --repeats 5 --width 64

1. Machine limit: achieved GFLOP/s of one large 3x3 convolution (fp32, and bf16 autocast), channels-last.
2. Model throughput: FLOPs from `torch.utils.flop_counter`; GFLOP/s and images/s of inference (fp32 NCHW, fp32
   channels-last, bf16 channels-last) and of a training step (fp32 channels-last), each as a fraction of (1).
3. torch.compile: images/s of the padded U-Net's inference (512x512, batch 4, channels-last), eager and
   compiled, fp32 and bf16, and their ratio (compilation itself not timed), or why compiling is unavailable.
4. The small networks users train on a CPU: padded U-Nets (BN) of 16 and 32 base channels, and 16 with group
   norm, 256x256 crops, batch 4: training images/s and fraction of the limit, fp32 NCHW, fp32 channels-last and
   bf16 channels-last;
   next to MONAI's `BasicUNet` (its defaults, 32-32-64-128-256 features) on the same input, when MONAI is
   installed (`pip install --no-deps monai`, a bench-only extra).
Medians of several runs; the machine is shared, so compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from unetkit.infer.predictor import Predictor
from unetkit.models.fold import count_batch_norms, fold_batch_norm
from unetkit.models.unet import UNet


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_limit(precision: str, repeats: int) -> float:
    """GFLOP/s of a 3x3, 128 -> 128 channel convolution on a 2 x 128 x 128 x 128 channels-last input."""
    x = torch.randn(2, 128, 128, 128).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return F.conv2d(x, w, padding=1)

    return flops(run) / timed(run, repeats) / 1e9


def inference(model: UNet, batch: int, size: int, precision: str, channels_last: bool, repeats: int
              ) -> tuple[float, float]:
    """(GFLOP/s, images/s) of the model's forward pass through unetkit's Predictor."""
    predictor = Predictor(model, torch.device("cpu"), precision=precision, channels_last=channels_last)
    x = torch.randn(batch, model_in(model), size, size)

    def run() -> torch.Tensor:
        return predictor.logits(x)

    seconds = timed(run, repeats)
    return flops(run) / seconds / 1e9, batch / seconds


def compiled_vs_eager(model: UNet, batch: int, size: int, precision: str, repeats: int) -> tuple[float, float]:
    """(eager images/s, compiled images/s) of the forward pass through Predictor, channels-last; the first calls
    (compilation) are not timed, and the two alternate so a busy machine slows both alike."""
    x = torch.randn(batch, model_in(model), size, size)
    eager = Predictor(model, torch.device("cpu"), precision=precision, channels_last=True)
    compiled = Predictor(model, torch.device("cpu"), precision=precision, channels_last=True, compile=True)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for predictor in (eager, compiled):
        predictor.logits(x)
    for _ in range(repeats):
        for name, predictor in (("eager", eager), ("compiled", compiled)):
            began = time.perf_counter()
            predictor.logits(x)
            times[name].append(time.perf_counter() - began)
    return batch / statistics.median(times["eager"]), batch / statistics.median(times["compiled"])


def training_step(model: UNet, batch: int, size: int, repeats: int, precision: str = "fp32") -> tuple[float, float]:
    """(GFLOP/s, images/s) of forward + backward + Adam step, channels-last, fp32 or bf16 autocast."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    model = model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, model_in(model), size, size).contiguous(memory_format=torch.channels_last)
    out = model.output_size(size)
    target = torch.randint(0, 2, (batch, out, out))

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()

    seconds = timed(run, repeats)
    return flops(run) / seconds / 1e9, batch / seconds


def small_training_step(model: torch.nn.Module, channels: int, precision: str, channels_last: bool,
                        repeats: int, batch: int = 4, size: int = 256) -> tuple[float, float]:
    """(GFLOP/s, images/s) of a training step of any padded network (output size = input size)."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.train().to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=fmt)
    target = torch.randint(0, 2, (batch, size, size))

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()

    seconds = timed(run, repeats)
    return flops(run) / seconds / 1e9, batch / seconds


def small_networks(limit: dict[str, float], repeats: int) -> None:
    """Section 4 of the docstring."""
    print("small networks, training step, 256x256 crops, batch 4:")
    nets: list[tuple[str, Callable[[], torch.nn.Module]]] = [
        (f"unetkit U-Net base {w}", lambda w=w: UNet(1, 2, base_channels=w, padding="same", batch_norm=True))
        for w in (16, 32)]
    # group norm cannot be folded into the convolutions and costs its own passes: its price next to batch norm's
    nets.append(("unetkit U-Net 16 GroupNorm", lambda: UNet(1, 2, base_channels=16, padding="same", norm="group")))
    try:
        from monai.networks.nets import BasicUNet

        nets.append(("MONAI BasicUNet", lambda: BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)))
    except ImportError:
        print("  (MONAI not installed: pip install --no-deps monai adds its BasicUNet row)")
    for name, make in nets:
        for mode, precision, cl in (("fp32 NCHW", "fp32", False), ("fp32 channels-last", "fp32", True),
                                    ("bf16 channels-last", "bf16", True)):
            torch.manual_seed(0)
            gflops, ips = small_training_step(make(), 1, precision, cl, repeats)
            print(f"  {name:24s} {mode:20s} {gflops:8.1f} GFLOP/s {ips:7.2f} img/s "
                  f"{gflops / limit[precision]:6.2f} of limit", flush=True)


def model_in(model: UNet) -> int:
    return model.stem[0].in_channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=64, help="base channels of both U-Nets (the paper: 64)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    limit = {p: conv_limit(p, args.repeats) for p in ("fp32", "bf16")}
    print(f"machine limit (3x3 conv, channels-last): fp32 {limit['fp32']:.1f} GFLOP/s, "
          f"bf16 {limit['bf16']:.1f} GFLOP/s")
    cases = [("paper U-Net (valid)", UNet(1, 2, base_channels=args.width, padding="valid"), 1, 572),
             ("padded U-Net (same, BN)", UNet(1, 2, base_channels=args.width, padding="same", batch_norm=True), 4, 512)]
    print(f"{'model':26s} {'mode':24s} {'GFLOP/s':>8s} {'img/s':>7s} {'of limit':>8s}")
    per_image: dict[tuple[str, str], float] = {}
    for name, model, batch, size in cases:
        modes = [("infer fp32 NCHW", "fp32", False, model), ("infer fp32 channels-last", "fp32", True, model),
                 ("infer bf16 channels-last", "bf16", True, model)]
        if count_batch_norms(model):  # what predict runs: the norms folded into the convolutions
            folded = fold_batch_norm(model)
            modes += [("infer fp32 c-last BN-fold", "fp32", True, folded), ("infer bf16 c-last BN-fold", "bf16", True,
                                                                              folded)]
        for mode, precision, cl, net in modes:
            gflops, ips = inference(net, batch, size, precision, cl, args.repeats)
            per_image[(name, precision)] = gflops / ips  # GFLOP per image, for the compiled rows below
            ref = limit["bf16" if precision == "bf16" else "fp32"]
            print(f"{name:26s} {mode:24s} {gflops:8.1f} {ips:7.2f} {gflops / ref:8.2f}", flush=True)
        for precision in ("fp32", "bf16"):
            gflops, ips = training_step(model, batch, size, max(1, args.repeats - 1), precision)
            print(f"{name:26s} {'train step ' + precision + ' c-last':24s} {gflops:8.1f} {ips:7.2f} "
                  f"{gflops / limit[precision]:8.2f}", flush=True)
    small_networks(limit, args.repeats)
    print("torch.compile, padded U-Net (same, BN) 512x512 batch 4, channels-last (compilation not timed):")
    padded = UNet(1, 2, base_channels=args.width, padding="same", batch_norm=True)
    for precision in ("fp32", "bf16"):
        try:
            eager, compiled = compiled_vs_eager(padded, 4, 512, precision, args.repeats)
        except Exception as err:  # no C++ compiler, unsupported platform...: say why instead of a figure
            print(f"  compile unavailable: {type(err).__name__}: {(str(err) or '?').splitlines()[0]}")
            break
        of_limit = compiled * per_image[("padded U-Net (same, BN)", precision)] / limit[precision]
        print(f"  {precision}: eager {eager:.2f} img/s, compiled {compiled:.2f} img/s, "
              f"speed-up {compiled / eager:.2f}x; compiled {of_limit:.2f} of limit", flush=True)


if __name__ == "__main__":
    main()
