"""The README.md of a model package: what the network is, what it was trained on, how well it validated.

The facts come from the run folder beside the checkpoint when it is there: `config.yaml` (the resolved config:
data folders, classes, mask encoding, normalization, recipe) and `summary.json` (epochs, best epoch, its
validation scores, and the scores after the choices made on the validation images). A checkpoint copied out
of its run folder still documents itself from the config it carries; the scores are then said to be missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from unetkit.config import Config, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.sharing.citations import cite_model


def run_facts(checkpoint: Path, cfg: Config) -> tuple[Config, dict[str, Any] | None]:
    """(config, summary or None): the run folder's `config.yaml` and `summary.json` next to `checkpoint`,
    the checkpoint's own config when there is no readable `config.yaml`."""
    folder = checkpoint.parent
    try:
        tree = yaml.safe_load((folder / "config.yaml").read_text())
        cfg = config_from_dict(tree, str(folder / "config.yaml")) if isinstance(tree, dict) else cfg
    except (OSError, yaml.YAMLError, UnetkitError):  # a missing or edited config.yaml: the checkpoint's
        pass
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    return cfg, summary if isinstance(summary, dict) else None


def network_text(cfg: Config) -> str:
    """One line naming the architecture, e.g. 'U-Net (valid padding, depth 4, 64 base channels)'."""
    m = cfg.model
    if m.name == "encoder_unet":
        return f"U-Net on a {m.encoder} encoder (depth {m.depth}, padded convolutions)"
    norm = "" if m.norm == "none" else f", {m.norm} norm"
    padding = "the paper's unpadded convolutions" if m.padding == "valid" else "padded convolutions"
    return f"U-Net ({padding}, depth {m.depth}, {m.base_channels} base channels{norm})"


def _score(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def validation_text(summary: dict[str, Any] | None) -> list[str]:
    """The '## Validation' lines: the best epoch's scores on the run's validation images, per class."""
    if summary is None or not isinstance(summary.get("best"), dict):
        return ["No summary.json was found next to the checkpoint, so the validation scores of its run are not "
                "known here. Score the model on labelled images with `unetkit evaluate`."]
    best = summary["best"]
    lines = [f"Scores of the best epoch ({summary.get('best_epoch')} of {summary.get('epochs')}) on the run's "
             f"validation images, from one confusion matrix over all their pixels: mIoU {_score(best.get('miou'))}, "
             f"mean Dice {_score(best.get('mean_dice'))}.", "", "| class | IoU | Dice |", "|---|---|---|"]
    lines += [f"| {name} | {_score(row.get('iou'))} | {_score(row.get('dice'))} |"
              for name, row in (best.get("per_class") or {}).items()]
    after = summary.get("after_choices")
    if isinstance(after, dict):
        lines += ["", f"With the settings chosen on the validation images (threshold {summary.get('threshold')}, "
                      f"small objects under {summary.get('min_object_px')} px removed, TTA {summary.get('tta')}): "
                      f"mIoU {_score(after.get('miou'))}."]
    return lines


def training_text(cfg: Config, summary: dict[str, Any] | None) -> list[str]:
    """The '## Training data' lines: folders, classes, encoding, normalization and the recipe."""
    data = cfg.data
    val = f"`{data.path(data.val_images)}`" if data.val_images else (
        f"the bottom {data.val_fraction:.0%} of every training image's rows (trained on above it)"
        if data.val_split == "bands" else f"{data.val_fraction:.0%} of the training images")
    normalize = ("each image's own 0.5-99.5 percentile range stretched to [0, 1], then" if data.normalize == "image"
                 else "pixels scaled to [0, 1] by their type's range, then")
    seconds = f" in {summary['seconds']:.0f} s" if summary and isinstance(summary.get("seconds"), int | float) else ""
    return [f"- images: `{data.path(data.train_images)}`, masks: `{data.path(data.train_masks)}` "
            f"({data.mask.encoding} masks); validation: {val}",
            f"- classes: {', '.join(data.classes)}",
            f"- normalization: {normalize} (x - {data.mean}) / {data.std}" + (
                f"; images at {data.scale}x resolution" if data.scale != 1.0 else ""),
            f"- training: {cfg.train.epochs} epochs planned, crops of {data.crop_size} px, batch {data.batch_size}"
            + seconds]


def readme(cfg: Config, net: nn.Module, summary: dict[str, Any] | None, name: str, out_channels: int) -> str:
    """The package's README.md (bioimage.io asks for a '# Validation' section)."""
    step, smallest = net.stride, net.input_size_for(1)
    activation = "sigmoid (one channel: p(" + cfg.data.classes[1] + "))" if out_channels == 1 else \
        "softmax over the channel axis (one probability per class)"
    margin = (f" less {net.margin} px on every side (the unpadded network's lost border; give it mirrored context)"
              if net.margin else "")
    lines = [f"# {name}", "", f"A {network_text(cfg)} for semantic segmentation into {cfg.data.num_classes} "
             "classes, trained and exported with unetkit.", "",
             "## Inputs and outputs", "",
             f"- input `image`: (batch, channel, y, x), {cfg.data.channels} channel(s); y and x of "
             f"{smallest} + n * {step} pixels",
             f"- output `probabilities`: (batch, channel, y, x), the input's size{margin}",
             f"- postprocessing: {activation}; the weights themselves give logits", "",
             "## Training data", "", *training_text(cfg, summary), "",
             "## Validation", "", *validation_text(summary), "",
             "## Use with unetkit", "",
             "```bash", "unetkit predict model.zip images/ -o masks   # tiling, TTA, masks in the training encoding",
             "```", "", "## Citations", ""]
    lines += [f"- {text}, doi:{doi}" for text, doi in cite_model(cfg.model)]
    return "\n".join(lines) + "\n"
