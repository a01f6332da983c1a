"""What a run writes besides checkpoints: metrics.csv, curves.png, sample pictures, report.html and
summary.json.

A full disk or a folder that turned read-only must not end a run with a traceback or a half-written file:
every write goes to a temporary name first (metrics.csv, report.html) or is a picture that can be redrawn,
and an OSError becomes one line that names the file and says the checkpoints are intact.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.atomic import atomic_write
from unetkit.errors import UnetkitError
from unetkit.infer.pictures import plot_samples, write_evaluation_pictures
from unetkit.infer.report import ReportPage, write_html_report
from unetkit.infer.scoring import Scored
from unetkit.metrics import scores
from unetkit.train.state import EpochProgress


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write (ENOSPC, EACCES, EROFS, ...) into one line naming `path`."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise UnetkitError(f"cannot write {path}: {reason}; free space or fix permissions "
                           "(checkpoints already written are intact)") from None


def write_metrics(history: list[dict[str, Any]], path: Path) -> None:
    """Rewrite metrics.csv atomically: a crash leaves the previous complete file, never a truncated one."""
    with writing(path), atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[-1]))
        writer.writeheader()
        writer.writerows(history)


def epoch_row(progress: EpochProgress, val: Scored, val_scores: dict[str, Any], classes: list[str], lr: float,
              seconds: float) -> dict[str, Any]:
    """One line of metrics.csv: losses, mIoU, pixel accuracy, per-class IoU, learning rate, skipped steps."""
    return {
        "epoch": progress.epoch, "train_loss": _round(progress.mean_loss()), "val_loss": round(val.loss, 6),
        # None when no step of the epoch was trained (all skipped as non-finite): no counts, no score
        "train_miou": _round(scores(progress.confusion.matrix, classes)["miou"]),
        "val_miou": round(val_scores["miou"], 6), "val_pixel_accuracy": round(val_scores["pixel_accuracy"], 6),
        **{f"val_iou_{c}": _round(val_scores["per_class"][c]["iou"]) for c in classes},
        "lr": lr, "skipped_steps": progress.skipped, "seconds": round(seconds, 2),
    }


def best_summary(val_scores: dict[str, Any], val_loss: float | None) -> dict[str, Any]:
    """The scores of the best epoch kept for summary.json: loss, mIoU, mean Dice, IoU and Dice per class."""
    return {"val_loss": val_loss, "miou": val_scores["miou"], "mean_dice": val_scores["mean_dice"],
            "per_class": {name: {"iou": row["iou"], "dice": row["dice"]}
                          for name, row in val_scores["per_class"].items()}}


def write_epoch_outputs(run_dir: Path, history: list[dict[str, Any]], val: Scored, val_scores: dict[str, Any],
                        colors: np.ndarray, classes: list[str], data: dict[str, Any] | None = None,
                        facts: list[tuple[str, str]] | None = None, metrics_csv: bool = True) -> None:
    """metrics.csv (unless `train.loggers` leaves out csv), curves.png, samples/epoch_NNN.png and report.html
    after an epoch (`data`: the run's data summary, `facts`: lines for the top of the report)."""
    if metrics_csv:
        write_metrics(history, run_dir / "metrics.csv")
    epoch = history[-1]["epoch"]
    with writing(run_dir / "curves.png"):
        plot_curves(history, run_dir / "curves.png")
    path = run_dir / "samples" / f"epoch_{epoch:03d}.png"
    with writing(path):
        plot_samples(val.samples, colors, classes, path, title=f"epoch {epoch}: val mIoU {val_scores['miou']:.3f}")
    with writing(run_dir / "report.html"):
        write_html_report(run_page(run_dir, val, val_scores, colors, classes, data, facts or []),
                          run_dir / "report.html")


def run_page(run_dir: Path, val: Scored, val_scores: dict[str, Any], colors: np.ndarray, classes: list[str],
             data: dict[str, Any] | None, facts: list[tuple[str, str]]) -> ReportPage:
    """The run's page: the last validation's scores (the numbers of the last metrics.csv row, unrounded),
    its confusion matrix and best and worst images, curves.png, the data summary and config.yaml as written."""
    report = {**val_scores, "loss": val.loss, "confusion_matrix": val.confusion.matrix.tolist()}
    if val.gallery is not None:
        report["gallery"] = val.gallery.as_dict()
    curves, config = run_dir / "curves.png", run_dir / "config.yaml"
    return ReportPage(f"Run {run_dir.name}", report, classes, colors, facts,
                      config.read_text() if config.is_file() else "", data, val.gallery,
                      curves.read_bytes() if curves.is_file() else None)


def write_final_outputs(run_dir: Path, val: Scored | None, val_scores: dict[str, Any] | None, colors: np.ndarray,
                        classes: list[str], summary: dict[str, Any], data: dict[str, Any] | None = None,
                        facts: list[tuple[str, str]] | None = None) -> None:
    """Pictures of the last validation (IoU bars, confusion matrix, samples), summary.json, and report.html
    once more with `facts` (what was chosen after training, and best.pt's scores with it) and the final
    config.yaml."""
    with writing(run_dir):
        if val is not None and val_scores is not None:
            write_evaluation_pictures(val_scores, val.confusion.matrix.numpy(), classes, val.samples, colors,
                                      run_dir, prefix="val_")
            write_html_report(run_page(run_dir, val, val_scores, colors, classes, data, facts or []),
                              run_dir / "report.html")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and mIoU per epoch, train against validation (an epoch without a training score leaves a gap)."""
    import matplotlib.pyplot as plt  # Agg, as `unetkit.infer.pictures` (imported above) selects

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_iou.plot(epochs, [r["train_miou"] for r in history], "o-", label="train (augmented crops)")
    ax_iou.plot(epochs, [r["val_miou"] for r in history], "o-", label="validation")
    ax_iou.set(xlabel="epoch", ylabel="mIoU", title="mean IoU", ylim=(0, 1))
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
