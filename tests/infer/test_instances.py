"""One label per object: objects of predicted masks, their table and outline overlay, and object scores
against instance label images (`instances/` beside `masks/`) or the masks' components."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.cli import main
from unetkit.config import InferConfig, MaskConfig, config_from_dict
from unetkit.data.dataset import pair_files
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.infer.inference import InferOptions
from unetkit.infer.instances import object_rule, objects_from, objects_of, true_objects
from unetkit.infer.predict import predict
from unetkit.infer.scoring import score_pairs


def test_objects_are_4_connected_components_of_each_class() -> None:
    classes = np.zeros((6, 6), np.uint8)
    classes[0, 0] = classes[1, 1] = 1  # touching at a corner only: two objects
    classes[3:5, 2] = 1
    classes[3:5, 3] = 2  # a class-2 region beside a class-1 region: two objects
    labels = objects_of(classes)
    assert labels.max() == 4 and labels[0, 0] != labels[1, 1] and labels[3, 2] != labels[3, 3]
    assert (labels[classes == 0] == 0).all()


def test_a_boundary_maps_objects_are_the_regions_it_encloses(tmp_path: Path) -> None:
    membranes = np.zeros((7, 9), np.uint8)
    membranes[3, :] = 1  # one wall across: two cells above and below it
    membranes[:3, 4] = 1  # the upper cell cut in two
    cfg = config_from_dict({"data": {"classes": ["cell", "membrane"]}, "train": {"choose_by": "regions"}})
    assert object_rule(cfg) == "regions"
    assert object_rule(config_from_dict({"data": {"classes": ["bg", "cell"]}})) == "components"
    regions = objects_from("regions", membranes, None)
    assert regions.max() == 3 and (regions[membranes == 1] == 0).all()
    assert len({regions[0, 0], regions[0, 8], regions[6, 0]}) == 3 and regions[6, 0] == regions[6, 8]
    mask_path = tmp_path / "masks" / "a.png"  # no instances/ folder beside: the truth is taken the same way
    assert np.array_equal(true_objects(mask_path, membranes, "binary", "regions"), regions)
    assert true_objects(mask_path, membranes, "binary").max() == 1  # components: the wall network itself


def test_predict_writes_labels_a_table_and_outlines_and_bands_do_not_cut_objects(tiny_checkpoint: Path,
                                                                                tmp_path: Path) -> None:
    image = (np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    out = tmp_path / "out"
    # a threshold near 0 makes every pixel foreground: one object that spans the three 32-row bands
    predict(tiny_checkpoint, [tmp_path / "big.png"], out, options=InferOptions(instances=True, tile=32,
                                                                                threshold=1e-6),
            overlays=True, progress=False)
    labels = read_raw(out / "big_instances.png")
    assert labels.dtype == np.uint16 and labels.shape == (96, 96) and labels.max() == 1 and labels.min() == 1
    rows = list(csv.DictReader((out / "big_objects.csv").open()))
    assert len(rows) == 1 and int(rows[0]["area"]) == 96 * 96 and float(rows[0]["centroid-0"]) == 47.5
    assert (out / "big_overlay.png").is_file() and (out / "big.png").is_file()


def test_predicted_labels_are_the_components_of_the_written_mask(tiny_checkpoint: Path, tiny_dataset: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    predict(tiny_checkpoint, [tiny_dataset / "images"], out, options=InferOptions(instances=True), progress=False)
    for path in sorted((tiny_dataset / "images").iterdir()):
        mask = read_raw(out / f"{path.stem}.png")
        labels = read_raw(out / f"{path.stem}_instances.png")
        assert np.array_equal(labels, objects_of((mask > 0).astype(np.uint8)))
        rows = list(csv.reader((out / f"{path.stem}_objects.csv").open()))
        assert len(rows) - 1 == labels.max() and rows[0][:2] == ["label", "area"]


class Exact:
    """A stand-in inference that predicts the true foreground exactly (two touching squares as one blob)."""

    task = "semantic"
    objects = "components"
    infer = InferConfig()

    def segment(self, image: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        return (image[..., 0] > 0.5).astype(np.uint8)


def _touching(root: Path, with_instances: bool) -> Path:
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    labels = np.zeros((40, 40), np.uint16)
    labels[10:20, 5:15], labels[10:20, 15:25] = 4, 9  # two 10x10 objects side by side, touching
    Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(root / "masks" / "a.png")
    if with_instances:
        Image.fromarray(labels).save(root / "instances" / "a.png")
    return root


def test_touching_objects_merged_by_components_score_as_one_false_positive_and_two_misses(tmp_path: Path) -> None:
    codec = MaskCodec(MaskConfig(encoding="binary", foreground_value=255), 2)
    labelled = _touching(tmp_path / "labelled", True)
    pairs = pair_files(labelled / "images", labelled / "masks")
    assert true_objects(pairs[0][1], np.zeros((40, 40), np.uint8)).max() == 9  # read from instances/
    found = score_pairs(Exact(), pairs, codec, 1, instances=True, progress=False).objects.scores()
    # the blob has IoU 0.5 with each true square: not a hit
    assert (found["tp"], found["fp"], found["fn"]) == (0, 1, 2) and found["true_counts"] == [2]
    plain = _touching(tmp_path / "plain", False)  # no instance labels: the mask's components are the truth
    found = score_pairs(Exact(), pair_files(plain / "images", plain / "masks"), codec, 1, instances=True,
                        progress=False).objects.scores()
    assert (found["tp"], found["fp"], found["fn"]) == (1, 0, 0) and found["dsb_score"] == 1.0


def test_evaluate_instances_from_the_command_line(tiny_checkpoint: Path, tiny_dataset: Path, tmp_path: Path,
                                                  capsys) -> None:  # noqa: ANN001 - pytest's capsys
    import json

    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(tiny_dataset), "--instances", "-o", str(out),
                 "-q"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())["instance_scores"]
    assert f"f1 {report['f1']:.4f}" in printed and report["true_counts"] == [1, 1, 1, 1]
