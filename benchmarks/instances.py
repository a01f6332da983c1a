"""Objects in the time a user has: a binary U-Net + connected components against the instance model.

    python benchmarks/instances.py --minutes 10                         # every instance dataset, both methods
    python benchmarks/instances.py --minutes 10 --datasets coelho2009_nuclei --methods instances
    python benchmarks/instances.py --table                              # print the stored results

Both methods are the command a user types, `unetkit train DATA --minutes N`, on the same images:
`components` gets train/images + train/masks (a binary model; its objects are the connected components of
`predict --instances`), `instances` gets train/images + train/instances (the planner then plans an instance
model). Both predict the test images with `predict --instances`, and the predicted label images are scored
against the test split's instance labels by unetkit's object scores (`instance_metrics`): F1 at IoU 0.5,
the Data Science Bowl score, AJI and panoptic quality.

Datasets: `coelho2009_nuclei` (train/test folders with images, masks, instances; touching nuclei are parted
by a drawn border) and `isbi2012` (EM cells: the regions between membranes; no public test labels, so slices
0-24 train and 25-29 are scored, as in benchmarks/budget.py). For ISBI the binary model learns the membranes,
a boundary map, so its objects are the regions the membranes enclose (what `evaluate --em` scores).
Each (dataset, method, minutes) result is kept as JSON in benchmarks/results/. Run it alone on the machine:
the budget is wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from budget import machine
from common import DATASETS, ROOT

from unetkit.data.io import read_raw
from unetkit.instance_metrics import InstanceScores

NAMES = ("coelho2009_nuclei", "isbi2012")
METHODS = ("components", "instances")
RESULTS = ROOT / "benchmarks" / "results"
SHOWN = ("f1", "dsb_score", "aji", "panoptic_quality")


Split = tuple[Path, set[str] | None]  # (folder with images/, masks/, instances/; the stems taken, None = all)


def splits(name: str) -> tuple[Split, Split]:
    """(training, test) folders and stems of a dataset."""
    base = DATASETS / name
    if name == "isbi2012":  # no public test labels: slices 0-24 train, 25-29 test
        return (base / "train", {str(i) for i in range(25)}), (base / "train", {str(i) for i in range(25, 30)})
    return (base / "train", None), (base / "test", None)


def _files(split: Split, sub: str) -> list[Path]:
    folder, stems = split
    return [f for f in sorted((folder / sub).iterdir()) if stems is None or f.stem in stems]


def _view(train: Split, method: str, where: Path) -> Path:
    """A DATA folder of links: train/images with train/masks (components) or train/instances (instances)."""
    labels = "masks" if method == "components" else "instances"
    for sub in ("images", labels):
        folder = where / "train" / sub
        folder.mkdir(parents=True, exist_ok=True)
        for f in _files(train, sub):
            if not (folder / f.name).exists():
                os.symlink(f.resolve(), folder / f.name)
    return where


def run_one(name: str, method: str, minutes: float, work: Path) -> dict:
    base = DATASETS / name
    if not base.is_dir():
        raise SystemExit(f"{base} is missing (set UNETKIT_DATASETS)")
    began, clock = datetime.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    train, test = splits(name)
    data = _view(train, method, work / "data")
    log = subprocess.run([sys.executable, "-m", "unetkit", "train", str(data), "--minutes", str(minutes), "-q",
                          "--set", f"train.output_dir={work / 'runs'}", "--set", "train.run_name=run"],
                         capture_output=True, text=True)
    (work / "train.log").write_text(log.stdout + log.stderr)
    if log.returncode:
        raise SystemExit(f"unetkit train failed ({log.returncode}); see {work / 'train.log'}")
    wall = time.perf_counter() - clock
    images = _files(test, "images")
    out = work / "predicted"
    subprocess.run([sys.executable, "-m", "unetkit", "predict", str(work / "runs" / "run" / "best.pt"),
                    *map(str, images), "-o", str(out), "-q", "--overwrite", "--instances"], check=True,
                   capture_output=True)
    found = InstanceScores()
    for image in images:
        truth = read_raw(next((test[0] / "instances").glob(f"{image.stem}.*")))
        found.update(truth, read_raw(out / f"{image.stem}_instances.png"))
    result = {"dataset": name, "method": method, "minutes": minutes, "date": began, "machine": machine(),
              "train_wall_seconds": wall, "scores": found.scores(),
              "plan": (work / "runs" / "run" / "plan.yaml").read_text()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"instances-{name}-{method}-{minutes:g}min.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{name} {method} {minutes:g} min: " + ", ".join(f"{k} {result['scores'][k]:.4f}" for k in SHOWN)
          + f" -> {path.relative_to(ROOT)}", flush=True)
    return result


def table() -> str:
    lines = ["| dataset | method | minutes | F1 @0.5 | DSB score | AJI | PQ | objects true / predicted | date |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("instances-*.json")):
        r = json.loads(path.read_text())
        s = r["scores"]
        lines.append(f"| {r['dataset']} | {r['method']} | {r['minutes']:g} | "
                     + " | ".join(f"{s[k]:.4f}" for k in SHOWN)
                     + f" | {sum(s['true_counts'])} / {sum(s['predicted_counts'])} | {r['date'][:10]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--datasets", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-instances"), help="scratch folder")
    parser.add_argument("--table", action="store_true", help="only print the stored results")
    args = parser.parse_args()
    if not args.table:
        for name in args.datasets:
            for method in args.methods:
                run_one(name, method, args.minutes, Path(args.work) / f"{args.minutes:g}min" / f"{name}-{method}")
    print(table())


if __name__ == "__main__":
    main()
