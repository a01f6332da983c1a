"""Score a trained model on a labelled folder: one confusion matrix over all images, then the scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from unetkit.atomic import atomic_write
from unetkit.config import Config, InferConfig
from unetkit.data.dataset import Pair, dataset_pairs, pair_files, test_pairs
from unetkit.data.io import channel_warning, set_pixel_limit
from unetkit.data.masks import MaskCodec
from unetkit.data.weightmap import weight_cache
from unetkit.distributed import distributed_session
from unetkit.errors import UnetkitError
from unetkit.infer.inference import InferOptions, load_predictor, open_inference
from unetkit.infer.pictures import write_evaluation_pictures
from unetkit.infer.report import ReportPage, write_html_report
from unetkit.infer.report_data import class_entries, data_summary, split_entry
from unetkit.infer.scoring import Scored, score_pairs
from unetkit.losses import SegmentationLoss, build_loss
from unetkit.metrics import scores


def data_folders(data: str | Path, images: str | Path | None = None, masks: str | Path | None = None,
                 labels: str = "masks") -> tuple[Path, Path]:
    """`DIR` means `DIR/images` + `DIR/LABELS` (`masks`, or `instances` for a model trained on instance label
    images); explicit folders win."""
    data = Path(data)
    images_dir = Path(images) if images else data / "images"
    masks_dir = Path(masks) if masks else data / labels
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise UnetkitError(f"{folder} is not a folder; --data DIR needs DIR/images and DIR/{labels} "
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
        labels = "instances" if mask_cfg.encoding == "instances" else "masks"  # what the model was trained on
        return pair_files(*data_folders(data or ".", images, masks, labels)), codec
    raise UnetkitError("give --data DIR (or --images and --masks), or --split val / test for the run's own images")


def evaluation_loss(cfg: Config) -> SegmentationLoss | None:
    """The run's loss, to report next to the scores as training reports its validation loss (None when the
    config leaves class weights to be computed from the training masks, as an unresolved config may)."""
    if isinstance(cfg.loss.class_weights, str):
        return None
    return build_loss(cfg.loss, cfg.data.num_classes)


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    split: str | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    output: str | Path | None = None,
    options: InferOptions | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on a folder of images and masks (encoded as in training) and write JSON.

    The report holds pixel accuracy, per-class IoU / Dice / precision / recall and mIoU over all classes
    (background included, ignored pixels excluded), the run's loss on the predicted probabilities (`loss`,
    mean per image) and the confusion matrix. `options` override the checkpoint's inference settings. With
    `options.em_scores` (binary boundary data, class 1 = boundary) it
    adds the ISBI 2012 scores: pixel error, Rand error, V_rand, V_info, averaged over images. With
    `options.instances` it adds the object scores (`instance_metrics`): precision, recall, F1, DSB score,
    AJI, panoptic quality and the object counts per image. `options.level` scores that pyramid level of
    the images (TIFF / OME-TIFF, OME-Zarr), against masks of that level's size. Default JSON
    path: `evaluation_<folder name>.json` next to the checkpoint. `--split val` with no other flags scores
    exactly what the run's validation scored: same images, same inference, same integers.
    Under torchrun the images are shared out between the processes and rank 0 writes the report.
    """
    with distributed_session(device) as (world, device):
        predictor, cfg = load_predictor(checkpoint, device)
        set_pixel_limit(cfg.data.max_image_pixels)
        options = options or InferOptions()
        infer = _checked(options.applied_to(cfg), cfg, world.size)
        pairs, codec = evaluation_pairs(cfg, data, split, images, masks)
        warning = channel_warning([pair[0] for pair in pairs], cfg.data.channels)
        if warning and world.main:
            print(warning, file=sys.stderr)
        scored = score_pairs(open_inference(predictor, cfg, infer), pairs, codec, cfg.data.channels,
                             loss_fn=evaluation_loss(cfg), weights=weight_cache(cfg.data), em_scores=infer.em_scores,
                             instances=infer.instances, keep_samples=3, ranked=infer.report_images,
                             classes=cfg.data.classes, rank=world.rank, world_size=world.size,
                             progress=progress and world.main, level=options.level or 0)
        matrix = scored.confusion.matrix
        report = scores(matrix, cfg.data.classes)
        name = split if split else Path(data or images or ".").resolve().name
        if scored.em is not None:
            report["em_scores"] = scored.em.result().as_dict()
        if scored.objects is not None:
            report["instance_scores"] = scored.objects.scores()
        report.update(loss=scored.loss, checkpoint=str(checkpoint), data=str(data) if data else name,
                      images=len(pairs), tta=infer.tta, threshold=infer.threshold, min_object_px=infer.min_object_px,
                      boundary_seeds=infer.boundary_seeds, confusion_matrix=matrix.tolist(),
                      gallery=scored.gallery.as_dict())
        out = Path(output) if output else Path(checkpoint).parent / f"evaluation_{name}.json"
        report.update(json=str(out), html=str(html_path(out)))
        if world.main:  # rank 0 writes the report
            evaluated = cfg.model_copy(update={"infer": infer})  # the settings this evaluation ran with
            report["pictures"] = [str(p) for p in write_report(report, out, scored, evaluated, codec)]
        return report


def _checked(infer: InferConfig, cfg: Config, processes: int) -> InferConfig:
    """`infer` when the scores it asks for can be computed for this model here; else one line saying why."""
    if infer.instances and processes > 1:
        raise UnetkitError("object scores (--instances) are computed in one process; run evaluate without torchrun")
    if infer.em_scores and cfg.data.num_classes != 2:
        raise UnetkitError(f"EM scores need a binary boundary model; this one has {cfg.data.num_classes} classes")
    return infer


def html_path(out: Path) -> Path:
    """The HTML page beside the JSON report: `evaluation_NAME.json` -> `evaluation_NAME.html`."""
    return out.with_suffix(".html") if out.suffix != ".html" else out.with_name(out.name + ".html")


def write_report(report: dict[str, Any], out: Path, scored: Scored, cfg: Config, codec: MaskCodec) -> list[Path]:
    """Write the JSON report to `out`, the HTML page beside it (`html_path`, rendered from the same dict) and
    its pictures (`OUT_class_iou.png`, `OUT_confusion.png`, `OUT_samples.png`); returns the pictures' paths.
    A failed write is one line naming the file."""
    try:
        with atomic_write(out, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        write_html_report(evaluation_page(report, scored, cfg, codec), html_path(out))
        return write_evaluation_pictures(report, scored.confusion.matrix.numpy(), cfg.data.classes, scored.samples,
                                         codec.colors(), out.parent, prefix=f"{out.stem}_")
    except OSError as err:
        raise UnetkitError(f"cannot write {out}: {err.strerror}") from None


def evaluation_page(report: dict[str, Any], scored: Scored, cfg: Config, codec: MaskCodec) -> ReportPage:
    """The HTML page of an evaluation: its scores, images, data and settings (the training curves when the
    checkpoint's folder holds the run's `curves.png`)."""
    classes = cfg.data.classes
    curves = Path(report["checkpoint"]).parent / "curves.png"
    data = data_summary([split_entry(str(report["data"]), scored.sizes)],
                        class_entries(classes, scored.confusion.matrix.numpy().sum(axis=1), where="evaluated"),
                        cfg.data.channels, codec.encoding)
    facts = [("checkpoint", report["checkpoint"]), ("data", str(report["data"])), ("images", str(report["images"])),
             ("TTA", str(report["tta"]))]
    if cfg.data.num_classes == 2:
        facts.append(("threshold", str(report["threshold"])))
    return ReportPage(f"Evaluation: {Path(report['json']).stem}", report, classes, codec.colors(), facts,
                      yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), data, scored.gallery,
                      curves.read_bytes() if curves.is_file() else None)
