"""`unetkit demo`: the whole day-one path on data unetkit makes itself.

Generates synthetic cells and fibres, trains the small U-Net of `configs/demo.yaml`, evaluates the best
checkpoint on the validation images and writes predicted masks with overlays, then says where it all is.
`unetkit demo --instances` does the same for objects: touching synthetic nuclei with instance labels, an
instance model planned and trained for a few minutes, object scores on held-out images, and the object
tables and outlines of its predictions.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from unetkit.config import Config, load_config
from unetkit.data.synthetic import make_synthetic_dataset
from unetkit.data.touching import make_touching_dataset
from unetkit.infer.evaluate import evaluate
from unetkit.infer.predict import predict
from unetkit.metrics import format_table
from unetkit.train.plan import make_plan
from unetkit.train.run import train


def demo_config(output: str | Path = "unetkit_demo", epochs: int | None = None) -> Config:
    """The packaged demo recipe with its data and run folders placed under `output`."""
    overrides = [f"data.root={Path(output) / 'data'}", f"train.output_dir={Path(output) / 'runs'}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    with resources.as_file(resources.files("unetkit") / "configs" / "demo.yaml") as path:
        return load_config(path, overrides)


def run_demo(output: str | Path = "unetkit_demo", *, epochs: int | None = None, progress: bool = True,
             n_train: int = 48, n_val: int = 12) -> dict[str, Any]:
    """Run the demo end to end; returns the evaluation report (with `run_dir` and `predictions` added)."""
    output = Path(output)
    data = make_synthetic_dataset(output / "data", n_train=n_train, n_val=n_val, size=128, seed=0)
    print(f"synthetic data: {data} ({n_train} train, {n_val} validation images)")
    cfg = demo_config(output, epochs)
    result = train(cfg, name="demo", progress=progress)
    best = result.run_dir / "best.pt"
    report = evaluate(best, data / "val", output=result.run_dir / "evaluation_val.json", progress=progress)
    predictions = output / "predictions"
    predict(best, [data / "val" / "images"], predictions, overlays=True, progress=progress)
    print(format_table(report))
    print(f"\nrun folder:  {result.run_dir}  (report.html, config.yaml, metrics.csv, curves.png, samples/, best.pt, "
          "last.pt)")
    print(f"scores:      {report['json']}  (and the page {report['html']})")
    print(f"predictions: {predictions}  (masks in the training palette, *_overlay.png)")
    print(f"next: unetkit predict {best} YOUR_IMAGES -o OUT --overlay")
    report.update(run_dir=str(result.run_dir), predictions=str(predictions))
    return report


def run_instance_demo(output: str | Path = "unetkit_demo_instances", *, minutes: float = 2.0, progress: bool = True,
                      n_train: int = 24, n_val: int = 6) -> dict[str, Any]:
    """Touching nuclei end to end: plan and train an instance model for `minutes`, score its objects on
    `n_val` test images, write their label images, tables and outlines; returns the evaluation report."""
    output = Path(output)
    data = output / "data"
    for split, count, seed in (("train", n_train, 0), ("val", n_val, 1), ("test", n_val, 2)):
        make_touching_dataset(data / split, count=count, seed=seed)
    print(f"synthetic touching nuclei: {data} ({n_train} train, {n_val} validation, {n_val} test images)")
    plan = make_plan(data, minutes, "auto", say=print if progress else _silent)
    result = train(plan.config([f"train.output_dir={output / 'runs'}"]), name="demo-instances", progress=progress)
    best = result.run_dir / "best.pt"
    (result.run_dir / "plan.yaml").write_text(plan.yaml())
    report = evaluate(best, data / "test", output=result.run_dir / "evaluation_test.json", progress=progress)
    predictions = output / "predictions"
    predict(best, [data / "test" / "images"], predictions, overlays=True, progress=progress)
    objects = report["instance_scores"]
    print(format_table(report))
    print(f"objects: F1 {objects['f1']:.3f}, DSB score {objects['dsb_score']:.3f}, AJI {objects['aji']:.3f}, "
          f"PQ {objects['panoptic_quality']:.3f}; {sum(objects['true_counts'])} true, "
          f"{sum(objects['predicted_counts'])} found")
    print(f"\nrun folder:  {result.run_dir}  (plan.yaml, report.html, best.pt, ...)")
    print(f"scores:      {report['json']}  (and the page {report['html']})")
    print(f"predictions: {predictions}  (*_instances.png labels, *_objects.csv tables, *_overlay.png outlines)")
    report.update(run_dir=str(result.run_dir), predictions=str(predictions))
    return report


def _silent(_: str) -> None:
    pass
