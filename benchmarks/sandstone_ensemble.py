"""Sandstone three-member ensemble under a CPU time budget: each member's and the ensemble's test mIoU.

    python benchmarks/sandstone_ensemble.py --minutes 5

Seven training slices are cut into 128x128 patches (`unetkit data patches`), two whole slices are held out for
validation, and `configs/sandstone.yaml` trains three encoder U-Nets (resnet34, vgg16, Inception v3; random
init, since pretrained weights cannot be downloaded here) on the patches, each within the budget. The ensemble
weights are searched on the validation slices; every member, the equal-weight ensemble and the searched
ensemble are then scored on the separate test slice, whose mask uses another encoding (gray values).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DATASETS, ROOT  # benchmarks/common.py, beside this script

from unetkit import evaluate, load_config, train
from unetkit.data.io import list_images
from unetkit.data.patches import make_patches
from unetkit.infer.ensemble_search import ensemble, format_ensemble_report

MEMBERS = {"resnet34": "resnet34", "vgg16": "vgg16", "inceptionv3": "tu-inception_v3"}
VAL_SLICES = ("Sandstone_Versa0100", "Sandstone_Versa0300")


def _link_folder(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (folder / f.name).exists():
            (folder / f.name).symlink_to(f.resolve())
    return folder


def prepare_data(source: Path, out: Path) -> tuple[Path, Path]:
    """Patches of the training slices in out/patches, links to the validation slices in out/val."""
    split: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for kind in ("images", "masks"):
        for f in list_images(source / "train" / kind):
            split["val" if f.stem in VAL_SLICES else "train"].setdefault(kind, []).append(f)
    slices = out / "train_slices"
    val = out / "val"
    for kind in ("images", "masks"):
        _link_folder(slices / kind, split["train"][kind])
        _link_folder(val / kind, split["val"][kind])
    patches = out / "patches"
    if not (patches / "images").is_dir():
        count = make_patches(slices / "images", slices / "masks", patches, size=128)
        print(f"{count} training patches of 128x128 from {len(split['train']['images'])} slices", flush=True)
    return patches, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per member")
    parser.add_argument("--epochs", type=int, default=10, help="cosine schedule length (the budget may stop earlier)")
    parser.add_argument("--out", default="runs/bench-sandstone")
    args = parser.parse_args()
    datasets = DATASETS
    out = Path(args.out).resolve()
    patches, val = prepare_data(datasets / "sandstone", out)
    best = []
    for name, encoder in MEMBERS.items():
        cfg = load_config(ROOT / "configs" / "sandstone.yaml", [
            f"data.root={datasets / 'sandstone'}", f"data.train_images={patches / 'images'}",
            f"data.train_masks={patches / 'masks'}", f"data.val_images={val / 'images'}",
            f"data.val_masks={val / 'masks'}", "data.crops_per_image=1", f"model.encoder={encoder}",
            f"train.output_dir={out / 'runs'}", f"train.run_name={name}", f"train.epochs={args.epochs}",
            f"train.max_minutes={args.minutes}"])
        began = time.perf_counter()
        run = train(cfg, progress=False)
        print(f"{name}: {len(run.history)} epochs in {(time.perf_counter() - began) / 60:.1f} min, "
              f"best val mIoU {run.best_score:.4f}", flush=True)
        best.append(run.run_dir / "best.pt")
    search = ensemble(best, split="val", search=True, output=out / "ensemble.pt", progress=False)
    print("weights searched on the validation slices:\n" + format_ensemble_report(search), flush=True)
    equal = ensemble(best, split="val", output=out / "ensemble_equal.pt", progress=False)
    results = {}
    for name, ckpt in [*zip(MEMBERS, best, strict=True), ("ensemble (equal weights)", out / "ensemble_equal.pt"),
                       ("ensemble (searched weights)", out / "ensemble.pt")]:
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        report = evaluate(ckpt, split="test", progress=False, output=out / f"test_{slug}.json")
        results[name] = {"test_miou": report["miou"], "iou": {k: v["iou"] for k, v in report["per_class"].items()}}
        print(f"{name:28s} test mIoU {report['miou']:.4f}  per class " + "  ".join(
            f"{k} {v['iou']:.3f}" for k, v in report["per_class"].items()), flush=True)
    results["searched_weights"] = search["best_weights"]
    results["equal_weights_val_miou"] = equal["equal_weights_miou"]
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
