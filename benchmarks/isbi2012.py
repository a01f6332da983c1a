"""ISBI 2012 recipe under a CPU time budget: what each part of the paper's recipe buys.

Trains `configs/isbi2012.yaml` (valid U-Net, border weight map, elastic deformation) and two variants under
the same time budget, then scores the best checkpoint of each on the held-out slices 25-29 with test-time
augmentation, printing pixel error, Rand error, V_rand and V_info (ISBI 2012 definitions).

    python benchmarks/isbi2012.py --minutes 8            # all three variants
    python benchmarks/isbi2012.py --minutes 8 --only recipe

The challenge's test labels are not public, so these validation-slice numbers are not the same measurement
as the paper's test-set scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DATASETS, ROOT  # benchmarks/common.py, beside this script

from unetkit import evaluate, load_config, train
from unetkit.infer.inference import InferOptions

VARIANTS = {
    "recipe": [],  # valid U-Net + weight map + elastic deformation, as configured
    "no-weight-map": ["loss.terms=[{name: ce}]", "data.weight_map=null"],
    "padded": ["model.padding=same", "model.batch_norm=true", "data.crop_size=256"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per variant")
    parser.add_argument("--epochs", type=int, default=40, help="cosine schedule length (the budget may stop earlier)")
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append", help="run only these variants")
    parser.add_argument("--tta", default="d4", choices=["none", "flips", "d4"])
    parser.add_argument("--out", default="runs/bench-isbi2012")
    args = parser.parse_args()
    datasets = DATASETS
    results = {}
    for name in args.only or list(VARIANTS):
        cfg = load_config(ROOT / "configs" / "isbi2012.yaml", [
            f"data.root={datasets / 'isbi2012'}", f"train.output_dir={args.out}", f"train.run_name={name}",
            f"train.epochs={args.epochs}", f"train.max_minutes={args.minutes}", *VARIANTS[name]])
        began = time.perf_counter()
        run = train(cfg, progress=False)
        minutes = (time.perf_counter() - began) / 60
        report = evaluate(run.run_dir / "best.pt", options=InferOptions(tta=args.tta, em_scores=True), split="val",
                          progress=False)
        em = report["em_scores"]
        results[name] = {"epochs": len(run.history), "train_minutes": round(minutes, 1), **em,
                         "membrane_iou": report["per_class"]["membrane"]["iou"]}
        print(f"{name:14s} epochs {len(run.history):3d}  {minutes:5.1f} min  pixel error {em['pixel_error']:.4f}  "
              f"rand error {em['rand_error']:.4f}  V_rand {em['v_rand']:.4f}  V_info {em['v_info']:.4f}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))



if __name__ == "__main__":
    main()
