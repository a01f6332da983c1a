"""unetkit's training loop against the common tutorial loop, same model and data, one run.

    python benchmarks/train_vs_reference.py [--width 32] [--steps 8]

Reference: the pattern most tutorials use: NCHW fp32, `DataLoader(dataset, batch_size, shuffle=True)` with its
defaults (no workers), `loss.item()` every step. unetkit: `train_one_epoch` with 2 persistent workers,
channels-last and bf16 autocast (`train.precision: bf16`, `train.channels_last`). Both train a padded U-Net on ISBI 2012
crops of 256x256 with the same augmentation; images/s over the same number of steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import torch
import torch.nn.functional as F
from common import DATASETS, ROOT  # benchmarks/common.py, beside this script
from torch.utils.data import DataLoader

from unetkit import load_config
from unetkit.data.dataset import FolderDataset, dataset_pairs
from unetkit.data.masks import MaskCodec
from unetkit.data.transforms import train_transform
from unetkit.losses import build_loss
from unetkit.models.build import build_model
from unetkit.train.loop import StepOptions, train_one_epoch
from unetkit.train.state import EpochProgress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    datasets = DATASETS
    cfg = load_config(ROOT / "configs" / "isbi2012.yaml", [
        f"data.root={datasets / 'isbi2012'}", "data.crop_size=256", "data.weight_map=null", "loss.terms=[{name: ce}]",
        "model.padding=same", "model.batch_norm=true", f"model.base_channels={args.width}"])
    pairs, _ = dataset_pairs(cfg.data)
    codec = MaskCodec(cfg.data.mask, 2)
    dataset = FolderDataset(pairs=pairs, channels=1, codec=codec, transform=train_transform(cfg.data), repeats=8)
    device = torch.device("cpu")
    steps = args.steps + 1  # the first step warms up

    torch.manual_seed(0)
    model = build_model(cfg.model, 1, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True)
    began = None
    for i, batch in enumerate(islice(loader, steps)):
        if i == 1:
            began = time.perf_counter()
        loss = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    reference = args.steps * args.batch / (time.perf_counter() - began)

    torch.manual_seed(0)
    model = build_model(cfg.model, 1, 2).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=2, persistent_workers=True)
    loss_fn = build_loss(cfg.loss, 2)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    warm = list(islice(loader, 1))
    options = StepOptions(autocast=torch.bfloat16, channels_last=True)
    train_one_epoch(model, warm, loss_fn, optimizer, scaler, device, EpochProgress(1, 2), options, show=False)
    began = time.perf_counter()
    train_one_epoch(model, islice(loader, args.steps), loss_fn, optimizer, scaler, device, EpochProgress(1, 2), options,
                    show=False)
    ours = args.steps * args.batch / (time.perf_counter() - began)
    print(f"padded U-Net ({args.width} base channels), 256x256 crops, batch {args.batch}, {args.steps} steps")
    print(f"reference loop (NCHW fp32, DataLoader defaults): {reference:.2f} images/s")
    print(f"unetkit train_one_epoch (bf16, channels-last, 2 workers): {ours:.2f} images/s ({ours / reference:.2f}x)")


if __name__ == "__main__":
    main()
