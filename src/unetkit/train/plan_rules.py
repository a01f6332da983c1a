"""The planner's rules, in the order a plan is made: where the data is, the network's shape, the recipe, and
what the measured speed of this machine allows in the budget. Each rule adds `Choice`s with their reasons."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from unetkit.config import Config, config_from_dict
from unetkit.data.dataset import dataset_pairs
from unetkit.data.fingerprint import test_mask_for
from unetkit.data.masks import MaskCodec
from unetkit.infer.choices import OBJECT_SIZES, THRESHOLDS
from unetkit.train.measure import time_loading, time_objects, time_training_step, time_validation

if TYPE_CHECKING:
    from unetkit.train.plan import Plan

SPARSE = 0.10  # a class under this share of the pixels is missed by most uniformly random crops
OVERSAMPLE = 0.33  # nnU-Net's share of crops forced onto foreground
MIN_STEPS = 1200  # a U-Net trained from scratch with Adam needs about this many steps to converge
WIDTHS = (16, 24, 32, 48)
MAX_CHANNELS = 256
REPEATS_FOR_HEAVY_AUGMENT = 30  # image-equivalents seen per training image before deformations pay off
VALIDATION_SHARE = 0.10  # of the budget spent on validation passes during training
MIN_VAL = 20  # images held out at least, when the split is cut for time
TTA_SHARE = 0.05  # of the budget that judging flip TTA after training may take
CPU_CROP, GPU_CROP = 256, 512
MIN_SCALE, MIN_THICKNESS = 0.25, 8.0  # reduced resolution: at most 4x, and thin classes keep 8 px
WHOLE_CPU, WHOLE_GPU = 1024, 2048  # longest image side predicted in one pass
REGIONS_PER_WALL = 10  # a boundary map: the background falls into 10x more regions than the boundary class
LIGHT_AUGMENT = [{"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "VerticalFlip", "p": 0.5},
                 {"__class_fullname__": "RandomRotate90", "p": 0.5},
                 {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.15,
                  "p": 0.5}]


def receptive_field(depth: int) -> int:
    """Pixels one output of a padded U-Net of `depth` poolings sees along its contracting path: two 3x3
    convolutions per level and at the bottom, each 2x2 pooling doubling the step."""
    field, jump = 1, 1
    for _ in range(depth):
        field += 4 * jump + jump
        jump *= 2
    return field + 4 * jump


def layout_choices(plan: Plan) -> None:
    """Folders, channels, classes and mask encoding (from the values found), and the intensity normalization."""
    layout, fp = plan.layout, plan.fingerprint
    prefix = f"{layout.train}/" if layout.train else ""
    plan.add("data.root", str(layout.root), "the dataset folder given")
    plan.add("data.train_images", f"{prefix}images", "training images")
    labels = layout.masks
    plan.add("data.train_masks", f"{prefix}{labels}", "their masks, paired by file name" if labels == "masks" else
             "instance label images (one value per object), paired by file name")
    if layout.val:
        plan.add("data.val_images", f"{layout.val}/images", "a val/ folder was given: checkpoints and the choices "
                 "after training are judged on it")
        plan.add("data.val_masks", f"{layout.val}/{labels}", "its masks")
    else:
        plan.add("data.val_fraction", 0.2, f"no val/ folder: {max(1, round(0.2 * fp.num_images))} of "
                 f"{fp.num_images} training images are held out to judge checkpoints and the choices after training")
    if layout.test:
        plan.add("data.test_images", f"{layout.test}/images", "a test/ folder: only `evaluate --split test` uses it")
        plan.add("data.test_masks", f"{layout.test}/{labels}", "its masks")
        test_mask, reason = test_mask_for(fp, layout.root / layout.test) if labels == "masks" else (None, "")
        if test_mask is not None:
            plan.add("data.test_mask", test_mask, reason)
    plan.add("data.channels", fp.channels, "gray images" if fp.channels == 1 else "colour images")
    plan.add("data.classes", [c.name for c in fp.classes], f"{len(fp.classes)} classes found in the masks; rename "
             "them freely (order matters)")
    for key, value in fp.mask.items():
        plan.add(f"data.mask.{key}", value, _mask_reason(key, fp))
    if fp.mixed:
        plan.add("data.normalize", "image", f"mixed acquisitions: image means spread {fp.brightness_spread:.2f}x the "
                 f"typical contrast, contrast varies {fp.contrast_ratio:.1f}x: each image is stretched on its own")
        mean, std = fp.stretched_mean, fp.stretched_std
    else:
        plan.add("data.normalize", "dataset", f"homogeneous images (means spread {fp.brightness_spread:.2f}x the "
                 f"contrast, contrast varies {fp.contrast_ratio:.1f}x): one dataset mean and std serve all")
        mean, std = fp.mean, fp.std
    plan.add("data.mean", mean, "measured on the training images (intensities in [0, 1])")
    plan.add("data.std", std, "measured on the training images")
    rarest = min((c for i, c in enumerate(fp.classes) if i != fp.background), key=lambda c: c.share)
    plan.add("data.background_class", fp.background, f"{fp.classes[fp.background].name} is the most frequent class")
    if rarest.share < SPARSE:
        plan.add("data.foreground_crops", OVERSAMPLE, f"{rarest.name} covers only {rarest.share:.1%} of the pixels: "
                 f"a third of the crops are put on objects (as nnU-Net)")
    else:
        plan.add("data.foreground_crops", 0.0, f"the rarest class ({rarest.name}) covers {rarest.share:.1%}: random "
                 "crops find it")


def _mask_reason(key: str, fp: Any) -> str:
    if key in ("ignore_value", "ignore_color"):
        return fp.void_note or "void"
    if key == "encoding":
        if fp.void_note:
            return "read from the mask values"
        return f"read from the mask values: {fp.notes[0]}" if fp.notes else "read from the mask values"
    return "found in the masks"


def _scale(plan: Plan, cap: int) -> float:
    """The resolution to train at: reduced when the typical object is wider than half the largest crop, so
    one crop holds whole objects, but never so far that the thinnest class gets under MIN_THICKNESS pixels or
    the images shrink below MIN_SCALE."""
    fp = plan.fingerprint
    objects = [c for i, c in enumerate(fp.classes) if i != fp.background]
    extent = max(c.diameter for c in objects)
    thinnest = min((c.thickness for c in objects if c.share > 0), default=0.0)
    if extent <= cap / 2:
        plan.add("data.scale", 1.0, f"full resolution: the typical object (~{extent:.0f} px) fits a crop twice over")
        return 1.0
    wanted = (cap / 2) / extent
    floor = max(MIN_SCALE, min(1.0, MIN_THICKNESS / max(thinnest, 1e-6)))
    scale = round(min(1.0, max(wanted, floor)), 2)
    if scale == 1.0:
        plan.add("data.scale", 1.0, f"full resolution: objects of ~{extent:.0f} px are wider than half a {cap} px "
                 f"crop, but the thinnest class (~{thinnest:.0f} px thick) would fall under {MIN_THICKNESS:.0f} px")
        return 1.0
    plan.add("data.scale", scale, f"objects of ~{extent:.0f} px are wider than half a {cap} px crop: training and "
             f"prediction at {scale:g}x (the thinnest class, ~{thinnest:.0f} px thick, keeps ~"
             f"{thinnest * scale:.0f} px); masks and scores stay at full size")
    return scale


def shape_choices(plan: Plan) -> None:
    """Resolution, crop and depth from the image and object sizes (depth: receptive field), the padded U-Net."""
    fp = plan.fingerprint
    cap = GPU_CROP if plan.device.startswith("cuda") else CPU_CROP
    scale = _scale(plan, cap)
    extent = scale * max(c.diameter for i, c in enumerate(fp.classes) if i != fp.background)
    min_side, max_side = round(fp.min_side * scale), round(fp.max_side * scale)
    crop = max(64, min(cap, min_side // 32 * 32))
    where = "the smallest image side" if crop < cap else f"the {'GPU' if cap == GPU_CROP else 'CPU'} cap"
    plan.add("data.crop_size", crop, f"{crop} px: bounded by {where} ({min_side} px smallest side at this "
             "scale); larger crops would cost steps")
    need = min(2 * extent, crop)
    depth = next((d for d in range(3, 7) if receptive_field(d) >= need and crop >> d >= 8), None)
    if depth is None:
        depth = max(d for d in range(3, 7) if crop >> d >= 8)
    plan.add("model.depth", depth, f"typical object ~{extent:.0f} px at this scale: receptive field "
             f"{receptive_field(depth)} px >= 2x that (capped by the crop {crop}), bottleneck {crop >> depth} px")
    whole = WHOLE_GPU if plan.device.startswith("cuda") else WHOLE_CPU
    if max_side <= whole:
        tile = -(-max_side // 64) * 64
        plan.add("infer.tile", tile, f"every image (longest side {max_side} px at this scale) goes through in one "
                 "pass: no tile overlap to compute twice")
    else:
        plan.add("infer.tile", 512, f"images up to {max_side} px at this scale are predicted in overlapping 512 px "
                 "tiles")
    plan.add("model.name", "unet", "the U-Net")
    plan.add("model.padding", "same", "padded convolutions: every crop pixel is trained, any image size predicted")
    plan.add("model.norm", "batch", "batch norm with >= 4 samples per batch trains fastest from scratch")
    plan.add("model.max_channels", MAX_CHANNELS, f"features double per level up to {MAX_CHANNELS}")


def recipe_choices(plan: Plan) -> None:
    """Loss, optimizer and the choices made after training on the validation images."""
    plan.add("loss.terms", [{"name": "ce"}, {"name": "dice"}], "cross-entropy + Dice (nnU-Net's loss): pixels and "
             "the overlap of small classes both count")
    plan.add("optim.name", "adam", "Adam: fastest from scratch on short budgets")
    plan.add("optim.lr", 1e-3, "the usual Adam rate for U-Nets from scratch")
    plan.add("optim.schedule", "cosine", "annealed to 0 by the end of the budget")
    plan.add("train.monitor", "miou", "best.pt = the validation with the highest mIoU")
    if plan.fingerprint.mask.get("encoding") == "instances":
        plan.add("model.task", "instances", "instance label images: the network learns background / interior / "
                 "boundary and objects are grown from the interiors, so touching objects stay apart")
    plan.add("infer.tta", "none", "unless train.choose finds that flips pay")
    walls = _boundary_map(plan.fingerprint)
    if walls:
        plan.add("train.choose_by", "regions", walls)


def _boundary_map(fp: Any) -> str | None:
    """Why the binary masks are a boundary map (class 1 a thin network that cuts the background into many
    regions, as membranes between cells), or None. There the regions are what the user gets, so the choices
    after training are judged by the Rand error of the regions rather than by pixel IoU."""
    if len(fp.classes) != 2:
        return None
    inside, wall = fp.classes
    if inside.objects_per_image < REGIONS_PER_WALL * max(wall.objects_per_image, 1.0):
        return None
    if wall.thickness <= 0 or wall.thickness > inside.diameter / 4:
        return None
    return (f"{wall.name} is a thin network ({wall.thickness:.0f} px thick, {wall.objects_per_image:.1f} regions "
            f"per image) that cuts {inside.name} into {inside.objects_per_image:.0f} regions per image: a boundary "
            "map, so threshold and object size are judged by the Rand error of the regions, not by pixel IoU")


def measured_choices(plan: Plan, say: Callable[[str], None], began: float) -> None:
    """Precision, memory format and width timed on this machine; batch, epochs and validation from the time.
    Formats are timed on the narrowest network; wider ones are timed only while the previous width still gets
    MIN_STEPS steps in the budget (a wider one could not), so planning stays a small part of short budgets."""
    device = torch.device(plan.device)
    plan.add("data.batch_size", 4, "the smallest batch that keeps batch-norm statistics stable")
    base = _with(config_from_dict(plan.tree(), "plan"), {"model": {"base_channels": WIDTHS[0]}})
    say("timing training steps on this machine ...")
    timed = {(precision, channels_last): time_training_step(_with(base, {"train": {
        "precision": precision, "channels_last": channels_last}}), device) for precision, channels_last in
        _formats(device)}
    (precision, channels_last), fastest = min(timed.items(), key=lambda kv: kv[1])
    table = ", ".join(f"{p}{' NHWC' if c else ''} {t:.2f}s" for (p, c), t in timed.items())
    plan.add("train.precision", precision, f"fastest training step measured here ({table} per step, base "
             f"{WIDTHS[0]})")
    plan.add("train.channels_last", channels_last, "measured with the precision above")
    base = _with(base, {"train": {"precision": precision, "channels_last": channels_last}})
    pairs, val = dataset_pairs(base.data)
    codec = MaskCodec(base.data.mask, base.data.num_classes)
    load = time_loading(base, pairs[:8], codec)
    whole = len(val) * time_validation(base, device, val, codec)
    val_seconds, train_images = _cut_validation(plan, whole, len(pairs), len(val))
    if base.model.task == "instances":  # the validation images kept, as _cut_validation scaled val_seconds
        plan.object_seconds = len(val) * time_objects(val, codec) * val_seconds / max(whole, 1e-9)
    scan = (len(pairs) + len(val)) * load  # training reads every pair once before its first step
    width_steps = {WIDTHS[0]: fastest}
    for width in WIDTHS[1:]:
        seconds = _train_seconds(plan, val_seconds * width_steps[max(width_steps)] / fastest,
                                 time.perf_counter() - began + scan)
        if _steps(seconds, width_steps[max(width_steps)], base.data.batch_size, load) < MIN_STEPS:
            break
        width_steps[width] = time_training_step(_with(base, {"model": {"base_channels": width}}), device)
    _budget_choices(plan, base, width_steps, load, val_seconds, train_images, time.perf_counter() - began + scan)


def _steps(train_seconds: float, step: float, batch: int, load: float) -> float:
    """Optimizer steps in `train_seconds`, validation's share set aside; each step also waits for its batch."""
    return train_seconds * (1 - VALIDATION_SHARE) / (step + batch * load)


def _train_seconds(plan: Plan, val_seconds: float, planning: float) -> float:
    """The budget left for training (at least 30 s): the minutes less planning and the choices after training."""
    return max(30.0, 60 * plan.minutes - planning - _choices(plan, val_seconds)[1])


def _budget_choices(plan: Plan, cfg: Config, width_steps: dict[int, float], load: float, val_seconds: float,
                    train_images: int, planning: float) -> None:
    """Width, epochs, crops per image, augmentation and the minutes left for training, from the timings;
    `val_seconds` is one validation with the narrowest network (wider ones take longer in proportion) and
    `planning` the seconds spent before training starts (this plan, then reading every pair once)."""
    batch, crop = cfg.data.batch_size, cfg.data.crop_size
    narrowest = width_steps[WIDTHS[0]]
    steps = {w: _steps(_train_seconds(plan, val_seconds * t / narrowest, planning), t, batch, load)
             for w, t in width_steps.items()}
    fitting = [w for w in width_steps if steps[w] >= MIN_STEPS]
    width = max(fitting) if fitting else WIDTHS[0]
    shown = ", ".join(f"{w}: {steps[w]:.0f}" for w in width_steps)
    untimed = [w for w in WIDTHS if w not in width_steps]
    plan.add("model.base_channels", width, f"the widest whose steps in the budget reach {MIN_STEPS} (steps by "
             f"width: {shown}{'; wider not timed' if untimed else ''}; {width_steps[width]:.2f}s + {batch}x"
             f"{load:.3f}s loading per step measured)")
    val_seconds *= width_steps[width] / narrowest
    train_seconds = _train_seconds(plan, val_seconds, planning)  # also sets train.choose for this width
    total = steps[width]
    validations = int(max(2, min(10, VALIDATION_SHARE * train_seconds / max(val_seconds, 1e-3))))
    per_epoch = total / validations
    crops = max(1, round(per_epoch * batch / train_images))
    plan.add("data.crops_per_image", crops, f"~{total:.0f} steps in {validations} epochs, each validated "
             f"(~{val_seconds:.0f}s per validation)")
    plan.add("train.epochs", 2 * validations, "an upper bound: the time budget ends the run, annealed")
    choice_seconds = 60 * plan.minutes - planning - train_seconds
    plan.add("train.max_minutes", round(train_seconds / 60, 2), f"{plan.minutes:g} min less planning and reading "
             f"the data ({planning:.0f}s) and the choices after training ({choice_seconds:.0f}s)")
    height, width_px = plan.fingerprint.median_size
    scaled_pixels = height * width_px * cfg.data.scale ** 2
    repeats = total * batch * crop * crop / max(1.0, train_images * scaled_pixels)
    if repeats >= REPEATS_FOR_HEAVY_AUGMENT:
        plan.add("data.augment", None, f"the built-in pipeline (flips, turns, affine, brightness, elastic "
                 f"deformation): each training image is seen ~{repeats:.0f}x, so it must not be memorised")
    else:
        plan.add("data.augment", LIGHT_AUGMENT, f"each training image is seen only ~{repeats:.1f}x: flips, turns "
                 "and brightness; deformations would slow learning more than they regularize")
    plan.facts.append(f"measured: {width_steps[width]:.3f}s per training step (base {width}), "
                      f"{load * 1000:.0f} ms per sample read, validation ~{val_seconds:.1f}s")


def _cut_validation(plan: Plan, val_seconds: float, train_images: int, val_images: int) -> tuple[float, int]:
    """Hold out fewer images (never under MIN_VAL) when two validations of the split would take more than
    VALIDATION_SHARE of the budget; a given val/ folder is kept whole. Returns the seconds of one validation
    and the number of training images."""
    limit = VALIDATION_SHARE * 60 * plan.minutes / 2
    if plan.layout.val or val_seconds <= limit or val_images <= MIN_VAL:
        return val_seconds, train_images
    keep = max(MIN_VAL, int(val_images * limit / val_seconds))
    fraction = round(keep / (train_images + val_images), 4)
    plan.add("data.val_fraction", fraction, f"{keep} images held out for validation: all {val_images} would take "
             f"~{val_seconds:.0f}s per validation, over {VALIDATION_SHARE:.0%} of the budget for two")
    return val_seconds * keep / val_images, train_images + val_images - keep


def _choices(plan: Plan, val_seconds: float) -> tuple[list[str], float]:
    """What to choose on the validation images after training, and the seconds that costs: for a binary
    task one pass to hold the probabilities and about as long again to score every threshold and object size
    on them (an instance model also grows and scores its objects for every candidate: `plan.object_seconds`
    each), four more passes for judging flips, unless that would take over 5% of the budget (a model that
    needs so long to judge its TTA would need 4x as long for every prediction)."""
    binary = len(plan.fingerprint.classes) == 2 or plan.fingerprint.mask.get("encoding") == "instances"
    choose = ["threshold", "min_object"] if binary else []  # an instance model's threshold seeds its objects
    seconds = 2 * val_seconds if binary else 0.0
    # an instance model grows and scores its objects at every seed threshold and object size, then twice for TTA
    seconds += plan.object_seconds * (len(THRESHOLDS) + len(OBJECT_SIZES))
    flips = 4 * val_seconds + 2 * plan.object_seconds
    if flips <= TTA_SHARE * 60 * plan.minutes:
        choose.append("tta")
        seconds += flips
        why = f"flips judged in ~{flips:.0f}s"
    else:
        why = f"flips not judged: {flips:.0f}s would exceed {TTA_SHARE:.0%} of the budget"
    plan.add("train.choose", choose, f"decided on the validation images after training, never on test; {why}")
    return choose, seconds


def _formats(device: torch.device) -> list[tuple[str, bool]]:
    if device.type == "cuda":
        return [("fp32", True), ("auto", True)]  # auto = fp16 autocast with loss scaling
    return [("fp32", False), ("fp32", True), ("bf16", True)]


def _with(cfg: Config, update: dict[str, dict[str, Any]]) -> Config:
    tree = cfg.model_dump(mode="json")
    for section, values in update.items():
        tree[section].update(values)
    return config_from_dict(tree, "plan")
