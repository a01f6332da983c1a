"""`unetkit demo` (`run_demo`): the day-one path really trains, evaluates and predicts, and what it prints and
returns is what its files say."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.demo import run_demo, run_instance_demo
from unetkit.infer.evaluate import evaluate


def test_run_demo_trains_evaluates_predicts_and_reports_what_its_files_hold(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_demo(tmp_path / "demo", epochs=2, progress=False, n_train=8, n_val=3)
    out = capsys.readouterr().out
    run_dir, predictions = Path(report["run_dir"]), Path(report["predictions"])

    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt",
                                                   "summary.json", "evaluation_val.json"}
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    # the printed and returned scores are the saved evaluation, which is evaluate's result for best.pt
    saved = json.loads((run_dir / "evaluation_val.json").read_text())
    assert saved["miou"] == report["miou"] and f"mIoU {report['miou']:.4f}" in out
    again = evaluate(run_dir / "best.pt", tmp_path / "demo" / "data" / "val", progress=False)
    assert again["miou"] == report["miou"] and again["images"] == 3
    # best.pt is the epoch whose validation mIoU the demo reports
    best = max(rows, key=lambda row: float(row["val_miou"]))
    assert float(best["val_miou"]) == round(report["miou"], 6)

    masks = sorted(predictions.glob("*.png"))
    overlays = [p for p in masks if p.stem.endswith("_overlay")]
    assert len(overlays) == 3 and len(masks) == 6
    mask = np.asarray(Image.open(next(p for p in masks if p not in overlays)))
    palette = {(0, 0, 0), (230, 60, 60), (60, 160, 230)}
    assert mask.shape == (128, 128, 3) and {tuple(c) for c in mask.reshape(-1, 3).tolist()} <= palette
    for line in (f"run folder:  {run_dir}", f"predictions: {predictions}", f"next: unetkit predict {run_dir}"):
        assert line in out


def test_the_instance_demo_plans_an_instance_model_and_reports_its_objects(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_instance_demo(tmp_path / "demo", minutes=0.4, progress=False, n_train=6, n_val=2)
    out = capsys.readouterr().out
    run_dir, predictions = Path(report["run_dir"]), Path(report["predictions"])
    assert "task: \"instances\"" in (run_dir / "plan.yaml").read_text()
    objects = report["instance_scores"]
    assert objects["true_counts"] == [6, 6]  # three touching pairs per generated image
    saved = json.loads((run_dir / "evaluation_test.json").read_text())["instance_scores"]
    assert saved["dsb_score"] == objects["dsb_score"] and f"DSB score {objects['dsb_score']:.3f}" in out
    tables = sorted(predictions.glob("*_objects.csv"))
    assert [p.name for p in tables] == ["cells_000_objects.csv", "cells_001_objects.csv"]
    for table, found in zip(tables, objects["predicted_counts"], strict=True):
        assert len(list(csv.DictReader(open(table)))) == found  # one row per object the scores counted
    assert len(list(predictions.glob("*_instances.png"))) == 2 and len(list(predictions.glob("*_overlay.png"))) == 2
