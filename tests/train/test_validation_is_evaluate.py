"""What training reports about validation is what `evaluate` gives the user, to the integer.

Every family of the shared model table trains for two epochs; the last row of metrics.csv and the confusion
matrix stored in last.pt must then equal `evaluate last.pt --split val` exactly, and best.pt must be the epoch
with the best such score. A validation that ran the network in training mode (batch statistics of single
images, dropout, running statistics updated by validation images) fails all of these for batch-norm and
dropout models.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from model_table import CORE

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config
from unetkit.data.dataset import dataset_pairs
from unetkit.data.masks import MaskCodec
from unetkit.infer.evaluate import evaluate
from unetkit.models.build import build_model
from unetkit.train.loop import validate
from unetkit.train.run import train


def _value(text: str) -> float | None:
    return None if text == "" else float(text)


def assert_row_equals_report(row: dict[str, str], report: dict, classes: list[str]) -> None:
    """metrics.csv stores scores rounded to 6 digits; evaluate's report rounded the same way must match."""
    assert _value(row["val_miou"]) == round(report["miou"], 6)
    assert _value(row["val_loss"]) == round(report["loss"], 6)
    assert _value(row["val_pixel_accuracy"]) == round(report["pixel_accuracy"], 6)
    for name in classes:
        iou = report["per_class"][name]["iou"]
        assert _value(row[f"val_iou_{name}"]) == (None if iou is None else round(iou, 6)), name


@pytest.mark.parametrize("family", list(CORE))
def test_metrics_csv_and_checkpoints_equal_evaluate_exactly(family: str,
                                                            synthetic_config: Callable[..., Config]) -> None:
    cfg = synthetic_config("train.epochs=2", "optim.lr=0.01", *CORE[family])
    run = train(cfg, progress=False)
    rows = list(csv.DictReader(open(run.run_dir / "metrics.csv")))
    last = load_checkpoint(run.run_dir / "last.pt")
    report = evaluate(run.run_dir / "last.pt", split="val", progress=False)
    assert report["images"] == 3
    assert report["confusion_matrix"] == last["val_confusion"].tolist()  # the same integers
    assert_row_equals_report(rows[-1], report, cfg.data.classes)

    best_row = max(rows, key=lambda r: float(r["val_miou"]))  # first of equal scores, as training keeps it
    best = load_checkpoint(run.run_dir / "best.pt")
    assert best["epoch"] == int(best_row["epoch"]) == run.best_epoch
    best_report = evaluate(run.run_dir / "best.pt", split="val", progress=False)
    assert best_report["confusion_matrix"] == best["val_confusion"].tolist()
    assert_row_equals_report(best_row, best_report, cfg.data.classes)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["best_epoch"] == run.best_epoch
    assert summary["best"]["miou"] == best_report["miou"]
    assert summary["best"]["per_class"]["cell"]["dice"] == best_report["per_class"]["cell"]["dice"]


def test_the_command_line_evaluate_prints_the_scores_of_metrics_csv(
        tmp_path: Path, synthetic_config: Callable[..., Config]) -> None:
    cfg = synthetic_config("train.epochs=1", *CORE["unet-same-bn-dropout"])
    run = train(cfg, progress=False)
    done = subprocess.run([sys.executable, "-m", "unetkit", "evaluate", str(run.run_dir / "last.pt"), "--split",
                           "val", "-o", str(tmp_path / "val.json"), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = list(csv.DictReader(open(run.run_dir / "metrics.csv")))[-1]
    assert f"mIoU {float(row['val_miou']):.4f}" in done.stdout
    report = json.loads((tmp_path / "val.json").read_text())
    assert report["confusion_matrix"] == load_checkpoint(run.run_dir / "last.pt")["val_confusion"].tolist()


@pytest.mark.parametrize("family", list(CORE))
def test_validation_changes_no_parameter_buffer_or_mode(family: str, synthetic_config: Callable[..., Config]) -> None:
    cfg = synthetic_config(*CORE[family])
    model = build_model(cfg.model, cfg.data.channels, cfg.data.num_classes, pretrained=False).train()
    model(torch.rand(2, 1, 64, 64))  # one training-mode pass: running statistics are no longer the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    scored = validate(model, cfg, dataset_pairs(cfg.data)[1], codec, torch.device("cpu"), progress=False)
    assert int(scored.confusion.matrix.sum()) == 3 * 64 * 64
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name  # bitwise: validation touched nothing


def test_a_band_split_reports_what_evaluate_gives_on_the_same_bands(synthetic_config: Callable[..., Config]) -> None:
    """Validation on the bottom fifth of each training image: metrics.csv and last.pt hold what
    `evaluate --split val` scores on those same bands, and no validation pixel was trained on."""
    cfg = synthetic_config("train.epochs=1", "data.val_images=null", "data.val_masks=null", "data.val_split=bands",
                           *CORE["unet-same-bn-dropout"])
    train_pairs, val_pairs = dataset_pairs(cfg.data)
    assert [p.image for p in train_pairs] == [p.image for p in val_pairs] and len(val_pairs) == 8
    assert all(t.rows[1] == v.rows[0] for t, v in zip(train_pairs, val_pairs, strict=True))
    run = train(cfg, progress=False)
    report = evaluate(run.run_dir / "last.pt", split="val", progress=False)
    assert report["images"] == 8
    last = load_checkpoint(run.run_dir / "last.pt")
    assert report["confusion_matrix"] == last["val_confusion"].tolist()
    assert int(last["val_confusion"].sum()) == 8 * round(64 * 0.2) * 64  # the bands' pixels, nothing more
    assert_row_equals_report(list(csv.DictReader(open(run.run_dir / "metrics.csv")))[-1], report, cfg.data.classes)
