"""Pictures of a run: training curves and sample predictions (image | truth | prediction)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unetkit.config import IGNORE_INDEX  # noqa: E402

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


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and mIoU per epoch, train against validation."""
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
