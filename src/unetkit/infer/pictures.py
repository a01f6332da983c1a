"""Pictures of predictions and evaluations: class colours, overlays, sample rows (image | truth | prediction),
per-class IoU bars and the confusion matrix as a heat map. Training's sample pictures are drawn here too, so a
picture of validation during training and one from `evaluate` are the same drawing.

Numbers in a JSON report say how good a model is; these pictures say *where* it fails: which classes drag
the mIoU down and which classes they are mistaken for. Figures grow with the class count so that 2 (ISBI)
and 11 (CamVid) classes both stay readable, and every figure is closed after saving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from unetkit.config import IGNORE_INDEX  # noqa: E402

DPI = 100
MAX_ANNOTATED_CLASSES = 20  # beyond this, cell percentages would be unreadably small
BAR_COLOR = "#4c72b0"
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1}

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (C, H, W), truth (H, W), prediction (H, W)

IGNORE_COLOR = np.array([128, 128, 128], dtype=np.uint8)  # how ignored pixels are drawn


def colorize(index: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 picture; ignored pixels are gray."""
    table = np.tile(IGNORE_COLOR, (256, 1))
    table[: len(colors)] = colors
    return table[index.astype(np.int64).clip(0, 255)]


def overlay(image: np.ndarray, index: np.ndarray, colors: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over an image in [0, 1] ((H, W, C)); background (class 0) stays unpainted."""
    gray = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    base = (np.clip(gray, 0, 1) * 255).astype(np.float32)
    paint = colorize(index, colors).astype(np.float32)
    blend = np.where((index > 0)[..., None] & (index != IGNORE_INDEX)[..., None],
                     (1 - alpha) * base + alpha * paint, base)
    return blend.round().astype(np.uint8)


def _display(image_chw: np.ndarray) -> np.ndarray:
    """Normalized (C, H, W) image -> (H, W) or (H, W, 3) rescaled to [0, 1] for showing."""
    img = image_chw.transpose(1, 2, 0)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
    return img[..., 0] if img.shape[-1] == 1 else img


def plot_samples(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], colors: np.ndarray,
                 class_names: list[str], path: Path, title: str = "") -> None:
    """One row per sample: image (C, H, W), truth (H, W), prediction (H, W), with a colour legend."""
    if not samples:
        return
    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for row, (image, truth, pred) in zip(axes, samples, strict=True):
        for ax, picture, name in zip(row, (_display(image), colorize(truth, colors), colorize(pred, colors)),
                                     ("image", "truth", "prediction"), strict=True):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            ax.set_title(name)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(c) / 255) for c in colors]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 6), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """`(C, C)` counts -> `(C, C)` float64 where each row (one true class) sums to 1.

    A row with no pixels (a class absent from the truth) stays all zero rather than becoming NaN, so the
    heat map draws it as empty; `plot_confusion` marks such rows separately.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square (C, C) matrix, got shape {m.shape}")
    sums = m.sum(axis=1, keepdims=True)  # (C, 1)
    out = np.zeros_like(m)
    np.divide(m, sums, out=out, where=sums > 0)
    return out


def _iou_text(value: float | None) -> str:
    """What is printed at the end of a bar: three decimals, or 'n/a' for a class with no defined IoU."""
    return "n/a" if value is None else f"{value:.3f}"


def plot_class_iou(report: dict, path: Path, title: str = "") -> None:
    """Horizontal bar per class (first class on top) with its IoU, and a dashed line at the mIoU.

    `report` is a `unetkit.metrics.scores` result; classes whose IoU is None (absent from truth and
    prediction) get no bar and the label 'n/a', so they are not mistaken for an IoU of 0.
    """
    names = list(report["per_class"])
    ious = [report["per_class"][n]["iou"] for n in names]
    fig, ax = plt.subplots(figsize=(7, max(2.6, 0.42 * len(names) + 1.6)), layout="constrained")
    y = np.arange(len(names))
    ax.barh(y, [0.0 if v is None else v for v in ious], height=0.65, color=BAR_COLOR)
    for row, value in zip(y, ious, strict=True):  # boxed text stays legible where the mIoU line crosses it
        if value is not None and value > 0.86:  # no room right of the bar: write inside it
            ax.text(value - 0.01, row, _iou_text(value), va="center", ha="right", color="white", fontsize=9,
                    zorder=4, bbox={**LABEL_BOX, "facecolor": BAR_COLOR})
        else:
            ax.text((value or 0.0) + 0.01, row, _iou_text(value), va="center", ha="left", fontsize=9, zorder=4,
                    color="dimgray" if value is None else "black", bbox=LABEL_BOX)
    if report.get("miou") is not None:
        ax.axvline(report["miou"], color="#c44e52", linestyle="--", linewidth=1.5,
                   label=f"mIoU {report['miou']:.3f}")
        # Above the axes, so the legend never hides a bar.
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(names) - 0.5, -0.5)  # inverted: the first class on top, as in the report
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title or "IoU per class", loc="left")
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)  # never crop a long class name
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    """Heat map of the row-normalized confusion matrix `(C, C)` (rows truth, columns prediction).

    Row normalization shows each class's recall on the diagonal and where its misses go, whatever the
    class's pixel share. A row with no true pixels stays 0, is hatched and has '(no pixels)' in its label.
    Cells carry percentages up to `MAX_ANNOTATED_CLASSES` classes.
    """
    counts = np.asarray(matrix)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"matrix of shape {counts.shape} does not fit {k} class names")
    norm = normalize_rows(counts)
    empty = counts.sum(axis=1) == 0  # (C,) true classes without pixels
    rows = [f"{n} (no pixels)" if e else n for n, e in zip(class_names, empty, strict=True)]
    rotate = k > 2 or max(map(len, class_names)) > 12  # side-by-side names would run into each other
    # The cells get ~0.55 in each; tick labels get room of their own (~0.07 in per character) so a long
    # class name widens the figure instead of squeezing the matrix to nothing.
    side = min(max(3.2, 0.55 * k + 1.2), 16.0)
    label_w = 0.07 * max(map(len, rows)) + 0.6
    label_h = 0.05 * max(map(len, class_names)) + 0.6 if rotate else 0.6
    fig, ax = plt.subplots(figsize=(side + label_w + 1.2, side + label_h + 0.4), layout="constrained")
    shown = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= MAX_ANNOTATED_CLASSES:
        digits = 1 if k <= 5 else 0
        size = 11 if k <= 5 else 8
        for i, j in np.ndindex(k, k):
            if counts[i, j] == 0:
                continue  # a blank cell reads faster than a column of zeros
            share = 100 * norm[i, j]
            text = f"{share:.{digits}f}" if share >= 0.5 * 10**-digits else "<" + f"{10**-digits:g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if norm[i, j] > 0.55 else "black")
    for i in np.flatnonzero(empty):
        ax.add_patch(Rectangle((-0.5, i - 0.5), k, 1, fill=False, hatch="//", edgecolor="0.6", linewidth=0))
    ax.set_xticks(np.arange(k), class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")
    ax.set_yticks(np.arange(k), rows)
    if k > MAX_ANNOTATED_CLASSES:
        ax.tick_params(labelsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (% of each true class)", loc="left")
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)  # never crop a long class name
    plt.close(fig)


def write_evaluation_pictures(report: dict, matrix: np.ndarray, class_names: list[str],
                              samples: Sequence[Sample] | None, colors: np.ndarray, out_dir: Path,
                              prefix: str = "") -> list[Path]:
    """Write `{prefix}class_iou.png`, `{prefix}confusion.png` and, with samples, `{prefix}samples.png`.

    samples: `(image, truth, prediction)` triples as the training loop keeps them: image `(C, H, W)` in any
    range (it is min-max rescaled for display, so normalized tensors are fine), truth and prediction `(H, W)`
    class indices. colors: `(num_classes, 3)` uint8, one colour per class. Returns the written paths in
    that order; `out_dir` is created if missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{prefix}class_iou.png", out_dir / f"{prefix}confusion.png"]
    plot_class_iou(report, written[0])
    plot_confusion(matrix, class_names, written[1])
    if samples:
        written.append(out_dir / f"{prefix}samples.png")
        plot_samples(list(samples), colors, class_names, written[2])
    return written
