"""The instance model: instance labels as background / interior / boundary, objects grown back from the
interiors, settings chosen on validation by the object score, planned from an `instances/` folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from unetkit.checkpoint import load_checkpoint
from unetkit.config import MaskConfig, config_from_dict
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.touching import make_touching_dataset
from unetkit.infer.evaluate import evaluate
from unetkit.infer.inference import InferOptions
from unetkit.infer.instances import grow_objects, objects_of
from unetkit.infer.predict import predict
from unetkit.instance_metrics import InstanceScores, iou_table
from unetkit.train.run import train


def _two_squares() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint16)
    labels[5:15, 3:13], labels[5:15, 13:23] = 7, 300  # touching, ids not contiguous
    return labels


def test_instance_labels_become_interior_and_a_boundary_ring_that_parts_touching_objects() -> None:
    labels = _two_squares()
    target = MaskCodec(MaskConfig(encoding="instances", boundary_px=2), 3).decode(labels)
    assert set(np.unique(target)) == {0, 1, 2}
    assert (target[labels == 0] == 0).all()
    assert (target[5:15, 11:15] == 2).all()  # two 2-px rings where the squares touch
    assert objects_of((target == 1).astype(np.uint8)).max() == 2  # the interiors are apart
    binary = MaskCodec(MaskConfig(encoding="instances"), 2).decode(labels)
    assert np.array_equal(binary, (labels > 0).astype(np.uint8))


def test_objects_grown_from_perfect_probabilities_are_the_true_ones() -> None:
    labels = _two_squares()
    target = MaskCodec(MaskConfig(encoding="instances"), 3).decode(labels)
    probs = np.stack([(target == k).astype(np.float32) for k in range(3)])
    grown = grow_objects(probs)
    iou = iou_table(labels, grown)[0]
    assert grown.max() == 2 and (iou.max(axis=1) > 0.8).all()
    assert objects_of((probs[0] < 0.5).astype(np.uint8)).max() == 1  # components merge the touching pair
    assert grow_objects(probs, min_object_px=101).max() == 0  # both objects (100 px) under the size


def _config(root: Path, runs: Path) -> dict:
    return {"data": {"root": str(root), "train_images": "train/images", "train_masks": "train/instances",
                     "val_images": "val/images", "val_masks": "val/instances",
                     "classes": ["background", "interior", "boundary"], "mask": {"encoding": "instances"},
                     "crop_size": 64, "batch_size": 2, "augment": []},
            "model": {"task": "instances", "depth": 2, "base_channels": 8, "batch_norm": True},
            "optim": {"lr": 0.01},
            "train": {"epochs": 3, "device": "cpu", "output_dir": str(runs), "run_name": "cells",
                      "choose": ["threshold", "min_object"], "sample_images": 0}}


def test_an_instance_model_trains_chooses_its_seeds_predicts_and_evaluates_objects(
        tmp_path: Path, capsys) -> None:  # noqa: ANN001 - pytest's capsys
    make_touching_dataset(tmp_path / "cells" / "train", count=6)
    make_touching_dataset(tmp_path / "cells" / "val", count=3, seed=1)
    run = train(config_from_dict(_config(tmp_path / "cells", tmp_path / "runs")), progress=False)
    printed = capsys.readouterr().out
    assert "seed threshold" in printed and "object score (DSB)" in printed
    best = run.run_dir / "best.pt"
    saved = load_checkpoint(best)["config"]["infer"]
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["infer"]["seed_threshold"] == \
        saved["seed_threshold"]
    report = evaluate(best, split="val", progress=False)  # an instance model reports its objects by default
    found = report["instance_scores"]
    assert found["true_counts"] == [6, 6, 6] and 0.0 <= found["dsb_score"] <= 1.0
    out = tmp_path / "out"
    predict(best, [tmp_path / "cells" / "val" / "images"], out, progress=False)
    assert sorted(p.name for p in out.glob("*_instances.png")) == [f"cells_{i:03d}_instances.png" for i in range(3)]
    assert (out / "cells_000_objects.csv").is_file()
    # through tiles (three bands of 32 px for a 96 px image) and flip TTA: the same objects, counted as evaluate
    tiled = tmp_path / "tiled"
    predict(best, [tmp_path / "cells" / "val" / "images"], tiled, progress=False,
            options=InferOptions(tile=32, tta="flips"))
    flipped = evaluate(best, split="val", options=InferOptions(tile=32, tta="flips"), progress=False)
    for i, found in enumerate(flipped["instance_scores"]["predicted_counts"]):
        assert read_raw(tiled / f"cells_{i:03d}_instances.png").max() == found


def test_the_dsb_score_rewards_parting_touching_cells() -> None:
    from unetkit.data.touching import touching_sample

    _, labels = touching_sample(np.random.default_rng(0))
    merged, parted = InstanceScores(), InstanceScores()
    merged.update(labels, objects_of((labels > 0).astype(np.uint8)))
    parted.update(labels, labels)
    # a merged pair's blob overlaps its larger disc by IoU ~0.52: a hit only at the 0.5 threshold
    assert merged.scores()["dsb_score"] < 0.1 and parted.scores()["dsb_score"] == 1.0


def test_inspect_counts_objects_and_how_many_touch(tmp_path: Path, capsys) -> None:  # noqa: ANN001 - capsys
    from unetkit.cli import main
    from unetkit.data.instance_labels import touching_pairs

    labels = _two_squares()
    labels[0:3, 26:29] = 5  # a third object, apart
    assert touching_pairs(labels) == {(7, 300)}
    make_touching_dataset(tmp_path / "cells", count=2)  # 3 touching pairs per image
    assert main(["data", "inspect", str(tmp_path / "cells")]) == 0
    assert "6.0 objects per image (over 2 images)" in capsys.readouterr().out
    assert "100.0% of objects touch another" in format_facts(tmp_path / "cells")


def format_facts(root: Path) -> str:
    from unetkit.data.instance_labels import format_instance_facts, instance_facts

    return format_instance_facts(instance_facts(sorted((root / "instances").iterdir())))


def test_the_papers_border_weight_falls_on_the_rings_between_touching_objects() -> None:
    from unetkit.data.weightmap import border_weight_map

    target = MaskCodec(MaskConfig(encoding="instances"), 3).decode(_two_squares())
    weights = border_weight_map(target, object_classes=[1], num_classes=3, class_weights=np.ones(3, np.float32))
    between, outside = weights[9, 12:14].min(), weights[9, 1]  # the shared rings; background by one object only
    assert between > 5 and outside < 2
