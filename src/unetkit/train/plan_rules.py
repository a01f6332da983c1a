"""The planner's rules that follow from the data alone, in the order a plan is made: where the data is, the
network's shape and the recipe (what the measured speed of this machine allows is `plan_budget.py`). Each rule
adds `Choice`s with their reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unetkit.data.fingerprint import share_shift, test_mask_for

if TYPE_CHECKING:
    from unetkit.train.plan import Plan

SPARSE = 0.10  # a class under this share of the pixels is missed by most uniformly random crops
OVERSAMPLE = 0.33  # nnU-Net's share of crops forced onto foreground
MAX_CHANNELS = 256
CPU_CROP, GPU_CROP = 256, 512
MIN_SCALE, MIN_THICKNESS = 0.25, 8.0  # reduced resolution: at most 4x, and thin classes keep 8 px
SEEN_TO_LEARN = 0.25  # images' worth of a class's pixels a run must show before its thinness holds the resolution
WHOLE_CPU, WHOLE_GPU = 1024, 2048  # longest image side predicted in one pass
VAL_SHARE = 0.2  # of the images (or of each image's rows) held out when no val/ folder is given
MIN_PIECES = 5  # validation images the choices need to compare settings image by image
REGIONS_PER_WALL = 10  # a boundary map: the background falls into 10x more regions than the boundary class


def receptive_field(depth: int) -> int:
    """Pixels one output of a padded U-Net of `depth` poolings sees along its contracting path: two 3x3
    convolutions per level and at the bottom, each 2x2 pooling doubling the step."""
    field, jump = 1, 1
    for _ in range(depth):
        field += 4 * jump + jump
        jump *= 2
    return field + 4 * jump


def _holdout(plan: Plan) -> None:
    """No val/ folder: hold out a fifth of the images, or, when that is fewer than MIN_PIECES images and every
    image is tall enough that the rest of it still gives full crops, the bottom fifth of every image's rows.
    The choices after training compare settings image by image (`judges.paired_error`): two or three held-out
    images make that comparison a guess, and each is an acquisition the network never learns from."""
    fp = plan.fingerprint
    held = max(1, round(VAL_SHARE * fp.num_images))
    cap = GPU_CROP if plan.device.startswith("cuda") else CPU_CROP
    if held < MIN_PIECES and (1 - VAL_SHARE) * fp.min_side >= cap:
        plan.add("data.val_split", "bands", f"no val/ folder, and {held} of {fp.num_images} images held out whole "
                 f"would give the choices under {MIN_PIECES} images to compare on: the bottom {VAL_SHARE:.0%} of "
                 f"every image's rows is held out instead, so all {fp.num_images} are trained on (the rest of "
                 f"each, >= {(1 - VAL_SHARE) * fp.min_side:.0f} px, still gives full {cap} px crops)")
        plan.add("data.val_fraction", VAL_SHARE, "the band's share of each image, judging checkpoints and the "
                 "choices after training")
        return
    plan.add("data.val_fraction", VAL_SHARE, f"no val/ folder: {held} of {fp.num_images} training images are "
             "held out to judge checkpoints and the choices after training")


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
        _holdout(plan)
    if layout.test:
        plan.add("data.test_images", f"{layout.test}/images", "a test/ folder: only `evaluate --split test` uses it")
        plan.add("data.test_masks", f"{layout.test}/{labels}", "its masks")
        test_mask, reason = test_mask_for(fp, layout.root / layout.test) if labels == "masks" else (None, "")
        if test_mask is not None:
            plan.add("data.test_mask", test_mask, reason)
        if labels == "masks":
            plan.facts.extend(f"warning: {note}" for note in share_shift(fp, layout.root / layout.test, test_mask))
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
        which = ", each of a class drawn uniformly from those in the image" if len(fp.classes) > 2 else ""
        plan.add("data.foreground_crops", OVERSAMPLE, f"{rarest.name} covers only {rarest.share:.1%} of the pixels: "
                 f"a third of the crops are put on objects{which} (as nnU-Net)")
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


def _scale(plan: Plan, cap: int, views: float | None) -> float:
    """The resolution to train at: reduced when the typical object is wider than half the largest crop, so
    one crop holds whole objects, but never so far that a thin class gets under MIN_THICKNESS pixels or the
    images shrink below MIN_SCALE. `views` (images' worth of full-resolution pixels each training image is
    seen in the budget; None before the machine is timed) frees the classes too rarely seen to hold it up."""
    fp = plan.fingerprint
    objects = [c for i, c in enumerate(fp.classes) if i != fp.background]
    extent = max(c.diameter for c in objects)
    if extent <= cap / 2:
        plan.add("data.scale", 1.0, f"full resolution: the typical object (~{extent:.0f} px) fits a crop twice over")
        return 1.0
    guards = [c for c in objects if c.share > 0 and (views is None or c.share * views >= SEEN_TO_LEARN)]
    thinnest = min((c.thickness for c in guards), default=0.0)
    wanted = (cap / 2) / extent
    floor = max(MIN_SCALE, min(1.0, MIN_THICKNESS / max(thinnest, 1e-6))) if guards else MIN_SCALE
    scale = round(min(1.0, max(wanted, floor)), 2)
    freed = [c for c in objects if c.share > 0 and c not in guards and c.thickness * scale < MIN_THICKNESS]
    rare = _freed_reason(freed, views) if freed and views is not None else ""
    if scale == 1.0:
        plan.add("data.scale", 1.0, f"full resolution: objects of ~{extent:.0f} px are wider than half a {cap} px "
                 f"crop, but the thinnest class (~{thinnest:.0f} px thick) would fall under {MIN_THICKNESS:.0f} px")
        return 1.0
    kept = f"the thinnest class it keeps, ~{thinnest:.0f} px thick, stays ~{thinnest * scale:.0f} px" if guards \
        else "no class is seen often enough to hold it up"
    plan.add("data.scale", scale, f"objects of ~{extent:.0f} px are wider than half a {cap} px crop: training and "
             f"prediction at {scale:g}x ({kept}{rare}); masks and scores stay at full size")
    return scale


def _freed_reason(freed: list[Any], views: float) -> str:
    """Why thin classes too rarely seen in the budget do not hold the resolution up, with what it shows of each."""
    shown = ", ".join(f"{c.name} ~{c.thickness:.0f} px thick, {c.share:.1%} of the pixels: "
                      f"~{c.share * views:.2f}" for c in freed[:4])
    more = f" and {len(freed) - 4} more" if len(freed) > 4 else ""
    return (f"; with each training image seen ~{views:.1f}x in this budget, thin classes get under {SEEN_TO_LEARN:g} "
            f"images' worth of their pixels ({shown}{more}): too little to learn so thin a class (none was, at "
            "full resolution, in benchmarks/budget.py), so they do not hold it up")


def shape_choices(plan: Plan, views: float | None = None) -> None:
    """Resolution, crop and depth from the image and object sizes (depth: receptive field), the padded U-Net;
    made again once the machine is timed, with `views` (see `_scale`)."""
    fp = plan.fingerprint
    cap = GPU_CROP if plan.device.startswith("cuda") else CPU_CROP
    scale = _scale(plan, cap, views)
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
    plan.add("model.norm", "batch", "batch norm with >= 4 samples per batch: tied or beat group norm in equal "
             "time, with a faster step (benchmarks/budget.py --set model.norm=group)")
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
