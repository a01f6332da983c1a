"""CamVid (11 classes, void ignored) under a CPU time budget: per-class IoU and mIoU on the test split.

    python benchmarks/camvid.py --minutes 20

Trains `configs/camvid.yaml` with median-frequency class weights computed from the training masks, keeps the
best checkpoint by validation mIoU, then evaluates it on the 233 test images (`--split test`): mIoU over the
11 classes, void excluded. Published CamVid-11 results train for hours on a GPU with all 367 training images;
this is a CPU-minutes baseline, not a comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DATASETS, ROOT  # benchmarks/common.py, beside this script

from unetkit import evaluate, load_config, train
from unetkit.metrics import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget")
    parser.add_argument("--epochs", type=int, default=12, help="cosine schedule length (the budget may stop earlier)")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--out", default="runs/bench-camvid")
    args = parser.parse_args()
    datasets = DATASETS
    cfg = load_config(ROOT / "configs" / "camvid.yaml", [
        f"data.root={datasets / 'camvid'}", f"train.output_dir={args.out}", "train.run_name=camvid",
        f"train.epochs={args.epochs}", f"train.max_minutes={args.minutes}",
        f"model.base_channels={args.base_channels}", "data.num_workers=0"])  # 2 cores: no spare one for workers
    began = time.perf_counter()
    run = train(cfg, progress=False)
    minutes = (time.perf_counter() - began) / 60
    report = evaluate(run.run_dir / "best.pt", split="test", progress=False)
    print(format_table(report))
    print(f"epochs {len(run.history)}, {minutes:.1f} min training; test mIoU {report['miou']:.4f} "
          f"(11 classes, void ignored), pixel accuracy {report['pixel_accuracy']:.4f}")
    summary = {"epochs": len(run.history), "train_minutes": round(minutes, 1), "test_miou": report["miou"],
               "pixel_accuracy": report["pixel_accuracy"],
               "iou": {k: v["iou"] for k, v in report["per_class"].items()}}
    (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
