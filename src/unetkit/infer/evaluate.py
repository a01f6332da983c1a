"""Score a trained model on a labelled folder: one confusion matrix over all images, then the scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from unetkit.data.dataset import load_pair, pair_files
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.predict import load_predictor, probabilities_for
from unetkit.metrics import ConfusionMatrix, scores


def data_folders(data: str | Path, images: str | Path | None = None, masks: str | Path | None = None
                 ) -> tuple[Path, Path]:
    """`DIR` means `DIR/images` + `DIR/masks`; explicit folders win."""
    data = Path(data)
    images_dir = Path(images) if images else data / "images"
    masks_dir = Path(masks) if masks else data / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise UnetkitError(f"{folder} is not a folder; --data DIR needs DIR/images and DIR/masks "
                               "(or give --images and --masks)")
    return images_dir, masks_dir


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    output: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on a folder of images and masks (encoded as in training) and write JSON.

    The report holds pixel accuracy, per-class IoU / Dice / precision / recall and mIoU over all classes
    (background included, ignored pixels excluded), plus the confusion matrix. Default JSON path:
    `evaluation_<folder name>.json` next to the checkpoint.
    """
    predictor, cfg = load_predictor(checkpoint, device)
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    pairs = pair_files(*data_folders(data, images, masks))
    confusion = ConfusionMatrix(cfg.data.num_classes)
    for pair in tqdm(pairs, desc="evaluate", disable=not progress, dynamic_ncols=True):
        image, mask = load_pair(pair, cfg.data.channels, codec)
        pred = probabilities_for(predictor, cfg, image).argmax(0)  # (H, W)
        confusion.update(pred, torch.from_numpy(mask).long())
    report = scores(confusion.matrix, cfg.data.classes)
    report.update(checkpoint=str(checkpoint), data=str(data), images=len(pairs),
                  confusion_matrix=confusion.matrix.tolist())
    out = Path(output) if output else Path(checkpoint).parent / f"evaluation_{Path(data).resolve().name}.json"
    try:
        out.write_text(json.dumps(report, indent=2))
    except OSError as err:
        raise UnetkitError(f"cannot write {out}: {err.strerror}") from None
    report["json"] = str(out)
    return report

