"""Can the data pipeline feed the network? Augmented samples/s against training-step images/s, one run.

    python benchmarks/data_pipeline.py

ISBI 2012 with `configs/isbi2012.yaml` (weight maps, the paper's elastic deformation, mirrored context) at the
paper's 572x572 tiles: the DataLoader's throughput with the configured workers, and the training step of the
paper's U-Net (64 base channels) on the same batches, fp32 channels-last. The target is a ratio of at least 3.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import DATASETS, ROOT  # benchmarks/common.py, beside this script
from torch.utils.data import DataLoader

from unetkit import load_config
from unetkit.data.dataset import FolderDataset, dataset_pairs, load_pair
from unetkit.data.masks import MaskCodec
from unetkit.data.transforms import train_transform
from unetkit.data.weightmap import weight_cache
from unetkit.models.build import build_model
from unetkit.train.loop import center_crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    datasets = DATASETS
    cfg = load_config(ROOT / "configs" / "isbi2012.yaml", [
        f"data.root={datasets / 'isbi2012'}", "data.crop_size=572", "data.batch_size=1",
        f"model.base_channels={args.width}", f"data.num_workers={args.workers}"])
    model = build_model(cfg.model, 1, 2).to(memory_format=torch.channels_last)
    codec = MaskCodec(cfg.data.mask, 2)
    pairs, _ = dataset_pairs(cfg.data)
    weights = weight_cache(cfg.data)
    dataset = FolderDataset(pairs=pairs, channels=1, codec=codec, weights=weights,
                            transform=train_transform(cfg.data, model.margin), repeats=8)
    for pair in pairs:  # weight maps are computed once per mask and cached: not part of the steady state
        weights.get(pair[1], load_pair(pair, 1, codec)[1])
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    batches = []
    began = time.perf_counter()
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.batches:
            break
    loader_ips = len(batches) * cfg.data.batch_size / (time.perf_counter() - began)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch: dict) -> None:
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        logits = model(x)
        target = center_crop(batch["mask"], *logits.shape[-2:])
        weight = center_crop(batch["weight"], *logits.shape[-2:])
        loss = (F.cross_entropy(logits, target, ignore_index=255, reduction="none") * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])
    began = time.perf_counter()
    for batch in batches[1:4]:
        step(batch)
    step_ips = 3 * cfg.data.batch_size / (time.perf_counter() - began)
    print(f"data pipeline ({args.workers} workers): {loader_ips:.2f} samples/s; "
          f"training step: {step_ips:.2f} images/s; ratio {loader_ips / step_ips:.1f}")


if __name__ == "__main__":
    main()
