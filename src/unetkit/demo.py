"""`unetkit demo`: the whole day-one path on data unetkit makes itself.

Generates synthetic cells and fibres, trains the small U-Net of `configs/demo.yaml`, evaluates the best
checkpoint on the validation images and writes predicted masks with overlays, then says where it all is.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from unetkit.config import Config, load_config
from unetkit.data.synthetic import make_synthetic_dataset
from unetkit.infer.evaluate import evaluate
from unetkit.infer.predict import predict
from unetkit.metrics import format_table
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
