"""The HTML reports of a real (tiny) run and its evaluation, opened in headless Chromium.

The browser renders each page; the test reads the numbers back from the rendered DOM and compares them with
the JSON report and metrics.csv as printed, counts the images the browser could not decode (a copy of the
page with a short script appended writes the count into the DOM), and checks the screenshot is a real page.
Without Chromium the browser tests skip, naming what is missing; under CI (`CI=true`) they fail.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from report_dom import Page, read_page, values

from unetkit.config import load_config
from unetkit.data.synthetic import make_synthetic_dataset
from unetkit.demo import demo_config
from unetkit.infer.evaluate import evaluate
from unetkit.infer.inference import InferOptions
from unetkit.train.run import train

COUNT_BROKEN = ("<script>addEventListener('load',()=>{const all=[...document.images];"
                "document.body.dataset.images=all.length;"
                "document.body.dataset.broken=all.filter(i=>!i.complete||i.naturalWidth===0).length})</script>")


def chromium() -> str:
    """The Chromium binary; skips the test where there is none (fails under CI, which installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    message = "chromium is not installed (Debian: apt-get install chromium); the report is checked in a browser"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def browse(page: Path, tmp: Path, *args: str) -> str:
    """Run headless Chromium on `page` with `args`; returns its stdout (the DOM with --dump-dom)."""
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=3000", *args,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(page: Path, tmp: Path) -> Page:
    """The DOM Chromium built from `page`, read after every image had its chance to load."""
    copy = tmp / f"counted_{page.name}"
    copy.write_text(page.read_text().replace("</body>", COUNT_BROKEN + "</body>"))
    return read_page(browse(copy, tmp, "--dump-dom"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs of a tiny 3-class U-Net on 6 synthetic 48x48 images (3 for validation), then evaluate."""
    tmp = tmp_path_factory.mktemp("report")
    make_synthetic_dataset(tmp / "data", n_train=3, n_val=3, size=48, seed=1)
    tree = demo_config(tmp).model_dump(mode="json")
    tree["data"].update(crop_size=48, batch_size=3, augment=[])
    tree["train"].update(epochs=2, sample_images=1, run_name="tiny")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(tree))
    cfg = load_config(tmp / "tiny.yaml", ["model.depth=2", "model.base_channels=4", "optim.lr=0.01",
                                          "infer.report_images=1"])
    run = train(cfg, progress=False)
    evaluation = evaluate(run.run_dir / "last.pt", split="val", progress=False)
    return {"tmp": tmp, "run_dir": run.run_dir, "evaluation": evaluation}


def test_the_evaluation_page_shows_the_json_numbers_and_every_image_loads(tiny_run: dict[str, Any]) -> None:
    tmp, report = tiny_run["tmp"], tiny_run["evaluation"]
    saved = json.loads(Path(report["json"]).read_text())
    html = Path(report["html"])
    assert html == Path(report["json"]).with_suffix(".html") and html.is_file()
    dom = rendered(html, tmp)
    assert dom.ids["miou"] == f"{saved['miou']:.4f}"
    assert dom.ids["mean-dice"] == f"{saved['mean_dice']:.4f}"
    for name, row in saved["per_class"].items():
        shown = dom.per_class[name]
        assert [shown[k] for k in ("iou", "dice", "recall")] == \
            ["-" if row[k] is None else f"{row[k]:.4f}" for k in ("iou", "dice", "recall")]
    assert [int(v) for v in values(dom, "count")] == np.array(saved["confusion_matrix"]).ravel().tolist()
    gallery = saved["gallery"]  # 3 images, 1 best and 1 worst shown with their own scores
    assert len(gallery["per_image"]) == 3 and len(gallery["best"]) == len(gallery["worst"]) == 1
    assert gallery["best"][0]["score"] == max(e["score"] for e in gallery["per_image"])
    assert values(dom, "image-score") == [f"{e['score']:.4f}" for e in gallery["best"] + gallery["worst"]]
    # 2 gallery rows of 4 pictures, plus the run's curves: all decoded by the browser
    assert dom.body["data-images"] == "9" and dom.body["data-broken"] == "0"


def test_the_run_page_shows_the_last_metrics_row_and_equals_evaluate_on_the_same_checkpoint(
        tiny_run: dict[str, Any]) -> None:
    tmp, run_dir = tiny_run["tmp"], tiny_run["run_dir"]
    last = list(csv.DictReader(open(run_dir / "metrics.csv")))[-1]
    page = run_dir / "report.html"
    text = page.read_text()
    assert '<meta name="viewport"' in text and "<script" not in text and "http" not in text.split("<style>")[0]
    assert not list(run_dir.glob(".*.tmp"))  # written atomically: no temporary file left behind
    dom = rendered(page, tmp)
    assert abs(float(dom.ids["miou"]) - float(last["val_miou"])) <= 5.1e-5
    for name in ("background", "cell", "fibre"):
        assert abs(float(dom.per_class[name]["iou"]) - float(last[f"val_iou_{name}"])) <= 5.1e-5
    evaluated = read_page(Path(tiny_run["evaluation"]["html"]).read_text())  # last.pt on the same images
    assert dom.ids["miou"] == evaluated.ids["miou"] and values(dom, "count") == values(evaluated, "count")
    assert "validation after epoch: 2 of 2" in text
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["base_channels"] == 4
    assert "base_channels: 4" in text  # the resolved config, as config.yaml holds it
    assert [v for v in values(dom, "images")][:2] == ["3", "3"]  # data summary: train and validation images
    assert dom.body["data-broken"] == "0" and int(dom.body["data-images"]) == 9


def test_the_image_check_sees_a_broken_picture_and_the_screenshot_is_a_page(tiny_run: dict[str, Any]) -> None:
    tmp, run_dir = tiny_run["tmp"], tiny_run["run_dir"]
    broken = tmp / "broken.html"
    broken.write_text((run_dir / "report.html").read_text().replace(
        "</main>", '<img src="data:image/png;base64,iVBORw0KGgo=" alt="cut short"></main>'))
    assert rendered(broken, tmp).body["data-broken"] == "1"
    shot = tmp / "phone.png"
    browse(run_dir / "report.html", tmp, f"--screenshot={shot}", "--window-size=390,1400")
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape == (1400, 390, 3)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 200  # text, tables and pictures, not a blank page
    assert (picture.std(axis=(0, 1)) > 20).all()


def test_an_instance_evaluation_page_prints_the_object_scores(tiny_checkpoint: Path, tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    report = evaluate(tiny_checkpoint, tiny_dataset, output=tmp_path / "objects.json",
                      options=InferOptions(instances=True, report_images=0), progress=False)
    objects = json.loads((tmp_path / "objects.json").read_text())["instance_scores"]
    page = read_page((tmp_path / "objects.html").read_text())
    assert report["html"] == str(tmp_path / "objects.html")
    shown = dict(page.keyed)
    for key in ("precision", "recall", "f1", "panoptic_quality", "dsb_score", "aji"):
        assert shown[key] == f"{objects[key]:.4f}"
    assert shown["tp"] == str(objects["tp"]) and shown["fn"] == str(objects["fn"])
    assert shown["objects"] == f"{sum(objects['true_counts'])} / {sum(objects['predicted_counts'])}"
    assert not values(page, "image-score")  # report_images 0: no gallery pictures
