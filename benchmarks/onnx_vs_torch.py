"""ONNX Runtime against PyTorch for the same model and tile, measured side by side.

    python benchmarks/onnx_vs_torch.py [--width 16] [--repeats 5]

The paper's valid U-Net (572x572 input tile, batch 1) is exported with `unetkit export` and both runtimes
produce probabilities for the same random tile through unetkit's predictors; medians of several runs, the
largest probability difference, and the speed ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from speed import timed  # benchmarks/speed.py, beside this script

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import config_from_dict
from unetkit.export import export_model
from unetkit.infer.onnx_backend import load_onnx
from unetkit.infer.predictor import Predictor
from unetkit.models.build import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = config_from_dict({"model": {"padding": "valid", "base_channels": args.width}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, out_channels(cfg))
    x = torch.randn(1, 1, 572, 572)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.pt"
        save_checkpoint(make_checkpoint(model, cfg, epoch=0), ckpt)
        onnx_predictor, _ = load_onnx(export_model(ckpt, Path(tmp) / "m.onnx"))
        torch_fp32 = Predictor(model, torch.device("cpu"))
        torch_cl = Predictor(model, torch.device("cpu"), channels_last=True)
        diff = (onnx_predictor(x) - torch_fp32(x)).abs().max().item()
        times = {name: timed(lambda fn=fn: fn(x), args.repeats)
                 for name, fn in (("onnxruntime", onnx_predictor), ("pytorch fp32", torch_fp32),
                                  ("pytorch fp32 channels-last", torch_cl))}
    print(f"paper U-Net ({args.width} base channels), 572x572 tile; max probability difference {diff:.2e}")
    for name, seconds in times.items():
        print(f"{name:28s} {seconds * 1000:8.0f} ms  {times['onnxruntime'] / seconds:5.2f}x onnxruntime's speed")


if __name__ == "__main__":
    main()
