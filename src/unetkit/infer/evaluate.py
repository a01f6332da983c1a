"""Score a trained model on a labelled folder: one confusion matrix over all images, then the scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from unetkit.config import Config
from unetkit.data.dataset import Pair, dataset_pairs, load_pair, pair_files, test_pairs
from unetkit.data.io import set_pixel_limit
from unetkit.data.masks import MaskCodec
from unetkit.distributed import distributed_session
from unetkit.em_scores import EMScoreAccumulator
from unetkit.errors import UnetkitError
from unetkit.infer.pictures import write_evaluation_pictures
from unetkit.infer.predict import build_chain, infer_settings, load_predictor, segment
from unetkit.infer.source import make_prepare
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


def evaluation_pairs(cfg: Config, data: str | Path | None, split: str | None, images: str | Path | None = None,
                     masks: str | Path | None = None) -> tuple[list[Pair], MaskCodec]:
    """The labelled pairs to score and the codec of their masks: a folder, or the run's `val` / `test` split
    (test masks may use their own encoding, `data.test_mask`)."""
    mask_cfg = cfg.data.test_mask if split == "test" and cfg.data.test_mask is not None else cfg.data.mask
    codec = MaskCodec(mask_cfg, cfg.data.num_classes)
    if split == "val":  # the run's own validation images, as its config defines them
        return dataset_pairs(cfg.data)[1], codec
    if split == "test":
        return test_pairs(cfg.data), codec
    if split is not None:
        raise UnetkitError(f"split {split!r} is unknown; use val or test")
    if data is not None or (images and masks):
        return pair_files(*data_folders(data or ".", images, masks)), codec
    raise UnetkitError("give --data DIR (or --images and --masks), or --split val / test for the run's own images")


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    split: str | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    output: str | Path | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tta: str | None = None,
    em_scores: bool | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on a folder of images and masks (encoded as in training) and write JSON.

    The report holds pixel accuracy, per-class IoU / Dice / precision / recall and mIoU over all classes
    (background included, ignored pixels excluded), plus the confusion matrix. With `em_scores` (binary
    boundary data, class 1 = boundary) it adds the ISBI 2012 scores: pixel error, Rand error, V_rand,
    V_info, averaged over images. Default JSON path: `evaluation_<folder name>.json` next to the checkpoint.
    Under torchrun the images are shared out between the processes and rank 0 writes the report.
    """
    with distributed_session(device) as (world, device):
        predictor, cfg = load_predictor(checkpoint, device)
        set_pixel_limit(cfg.data.max_image_pixels)
        infer = infer_settings(cfg, tile=tile, overlap=overlap, tta=tta, em_scores=em_scores, precision=precision,
                               channels_last=channels_last, compile=compile)
        if infer.em_scores and cfg.data.num_classes != 2:
            raise UnetkitError("EM scores need a binary boundary model; "
                               f"this one has {cfg.data.num_classes} classes")
        fn = build_chain(predictor, infer)
        prepare = make_prepare(cfg.data)
        pairs, codec = evaluation_pairs(cfg, data, split, images, masks)
        confusion = ConfusionMatrix(cfg.data.num_classes)
        em = EMScoreAccumulator() if infer.em_scores else None
        samples = []
        shard = pairs[world.rank :: world.size]  # under torchrun each rank scores every N-th image
        for pair in tqdm(shard, desc="evaluate", disable=not (progress and world.main), dynamic_ncols=True):
            image, mask = load_pair(pair, cfg.data.channels, codec)
            pred = segment(fn, image, prepare, infer)  # (H, W) uint8
            if len(samples) < 3:
                samples.append((image.transpose(2, 0, 1), mask, pred))
            confusion.update(torch.from_numpy(pred).long(), torch.from_numpy(mask).long())
            if em is not None:
                em.update(mask == 1, pred == 1)
        confusion.all_reduce()  # exact integer counts summed over ranks: every image counted once
        if em is not None:
            em.all_reduce()
        report = scores(confusion.matrix, cfg.data.classes)
        name = split if split else Path(data or images or ".").resolve().name
        if em is not None:
            report["em_scores"] = em.result().as_dict()
        report.update(checkpoint=str(checkpoint), data=str(data) if data else name, images=len(pairs),
                      tta=infer.tta, confusion_matrix=confusion.matrix.tolist())
        out = Path(output) if output else Path(checkpoint).parent / f"evaluation_{name}.json"
        report["json"] = str(out)
        if not world.main:  # rank 0 writes the report
            return report
        try:
            out.write_text(json.dumps(report, indent=2))
            pictures = write_evaluation_pictures(report, confusion.matrix.numpy(), cfg.data.classes, samples,
                                                 codec.colors(), out.parent, prefix=f"{out.stem}_")
        except OSError as err:
            raise UnetkitError(f"cannot write {out}: {err.strerror}") from None
        report["pictures"] = [str(p) for p in pictures]
        return report

