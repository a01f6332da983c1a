"""The planner's rules that need this machine: precision, memory format and width timed here, and from the
timings the batch, epochs, crops per image, augmentation, the validation split and the minutes left for
training. Each adds `Choice`s with their reasons."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from unetkit.config import Config, config_from_dict
from unetkit.data.dataset import dataset_pairs
from unetkit.data.masks import MaskCodec
from unetkit.infer.choices import OBJECT_SIZES, THRESHOLDS
from unetkit.infer.gaps import SEED_LEVELS
from unetkit.train.measure import time_gap_lines, time_loading, time_objects, time_training_step, time_validation
from unetkit.train.plan_rules import shape_choices

if TYPE_CHECKING:
    from unetkit.train.plan import Plan

MIN_STEPS = 4000  # steps a wider network must still get: 16 channels with ~2000 steps beat 24 or 32 with 1250-1400
WIDTHS = (16, 24, 32, 48)
GIVE_UP = 4.0  # a format whose warm-up step takes 4x the fastest step so far cannot win (bf16 without bf16 units)
REPEATS_FOR_HEAVY_AUGMENT = 30  # image-equivalents seen per training image before deformations pay off
VALIDATION_SHARE = 0.10  # of the budget spent on validation passes during training
MIN_VAL = 20  # images held out at least, when the split is cut for time
TTA_SHARE = 0.05  # of the budget that judging flip TTA after training may take
LIGHT_AUGMENT = [{"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "VerticalFlip", "p": 0.5},
                 {"__class_fullname__": "RandomRotate90", "p": 0.5},
                 {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.15,
                  "p": 0.5}]


def measured_choices(plan: Plan, say: Callable[[str], None], began: float) -> None:
    """Precision, memory format and width timed on this machine; batch, epochs and validation from the time.
    Formats are timed on the narrowest network; wider ones are timed only while the previous width still gets
    MIN_STEPS steps in the budget (a wider one could not), so planning stays a small part of short budgets.
    Once the narrowest is timed, the resolution is chosen again knowing how often the budget shows each image."""
    device = torch.device(plan.device)
    plan.add("data.batch_size", 4, "the smallest batch that keeps batch-norm statistics stable")
    say("timing training steps on this machine ...")
    fastest = _time_formats(plan, device)
    timed = _time_data(plan, device, fastest)
    scale = plan.value("data.scale")
    shape_choices(plan, _full_views(plan, timed, time.perf_counter() - began))
    if plan.value("data.scale") != scale:
        say(f"timing again at {plan.value('data.scale'):g}x resolution ...")
        timed = _time_data(plan, device, time_training_step(_narrowest(plan), device))
    base = _narrowest(plan)  # the shape is final from here
    width_steps = {WIDTHS[0]: timed.step}
    for width in WIDTHS[1:]:
        seconds = _train_seconds(plan, timed.val_seconds * width_steps[max(width_steps)] / timed.step,
                                 time.perf_counter() - began + timed.scan)
        if _steps(seconds, width_steps[max(width_steps)], base.data.batch_size, timed.load) < MIN_STEPS:
            break
        width_steps[width] = time_training_step(_with(base, {"model": {"base_channels": width}}), device)
    _budget_choices(plan, base, width_steps, timed, time.perf_counter() - began + timed.scan)


@dataclass
class Timed:
    """What this machine takes for the narrowest network at the planned shape, in seconds."""
    step: float  # one training step
    load: float  # reading one training sample
    val_seconds: float  # one validation pass (of the images kept for it)
    train_images: int
    scan: float  # reading every pair once before the first step


def _narrowest(plan: Plan) -> Config:
    return _with(config_from_dict(plan.tree(), "plan"), {"model": {"base_channels": WIDTHS[0]}})


def _time_formats(plan: Plan, device: torch.device) -> float:
    """Time the narrowest network in each precision and memory format; choose the fastest, return its step.
    On a CPU a format whose warm-up step alone takes GIVE_UP times the fastest step so far is not timed further
    (a GPU's first step may autotune its kernels for seconds)."""
    base = _narrowest(plan)
    timed: dict[tuple[str, bool], float] = {}
    for precision, channels_last in _formats(device):
        bound = GIVE_UP * min(timed.values()) if timed and device.type == "cpu" else None  # GPUs tune kernels
        timed[precision, channels_last] = time_training_step(_with(base, {"train": {
            "precision": precision, "channels_last": channels_last}}), device, give_up=bound)
    (precision, channels_last), fastest = min(timed.items(), key=lambda kv: kv[1])
    table = ", ".join(f"{p}{' NHWC' if c else ''} " + (f"{t:.2f}s" if t < float("inf") else
                                                      f"stopped (its warm-up step alone took over {GIVE_UP:g}x)")
                      for (p, c), t in timed.items())
    if device.type == "cpu" and all(p != "bf16" for p, _ in timed):
        table += "; bf16 not timed: this CPU has no bf16 kernels in oneDNN (no AVX-512), so it would be emulated"
    plan.add("train.precision", precision, f"fastest training step measured here (per step of base {WIDTHS[0]}: "
             f"{table})")
    plan.add("train.channels_last", channels_last, "measured with the precision above")
    return fastest


def _time_data(plan: Plan, device: torch.device, step: float) -> Timed:
    """Reading and validating at the planned shape (the validation split cut for time), with `step` timed."""
    base = _narrowest(plan)
    pairs, val = dataset_pairs(base.data)
    codec = MaskCodec(base.data.mask, base.data.num_classes)
    load = time_loading(base, pairs[:8], codec)
    whole = len(val) * time_validation(base, device, val, codec)
    val_seconds, train_images = _cut_validation(plan, whole, len(pairs), len(val))
    if base.model.task == "instances":  # the validation images kept, as _cut_validation scaled val_seconds
        plan.object_seconds = len(val) * time_objects(val, codec) * val_seconds / max(whole, 1e-9)
    if _judged_by_regions(plan):  # as for objects: the images kept for validation, each closed once
        plan.gap_seconds = len(val) * time_gap_lines(val, codec) * val_seconds / max(whole, 1e-9)
    return Timed(step, load, val_seconds, train_images, (len(pairs) + len(val)) * load)


def _full_views(plan: Plan, timed: Timed, planning: float) -> float:
    """Images' worth of full-resolution pixels each training image would be seen in the budget, with the
    narrowest network at the shape planned so far: the budget's steps x batch x crop area over the data."""
    batch, crop = plan.value("data.batch_size"), plan.value("data.crop_size")
    steps = _steps(_train_seconds(plan, timed.val_seconds, planning + timed.scan), timed.step, batch, timed.load)
    height, width = plan.fingerprint.median_size
    return steps * batch * crop * crop / max(1.0, timed.train_images * height * width)


def _steps(train_seconds: float, step: float, batch: int, load: float) -> float:
    """Optimizer steps in `train_seconds`, validation's share set aside; each step also waits for its batch."""
    return train_seconds * (1 - VALIDATION_SHARE) / (step + batch * load)


def _train_seconds(plan: Plan, val_seconds: float, planning: float) -> float:
    """The budget left for training (at least 30 s): the minutes less planning and the choices after training."""
    return max(30.0, 60 * plan.minutes - planning - _choices(plan, val_seconds)[1])


def _budget_choices(plan: Plan, cfg: Config, width_steps: dict[int, float], timed: Timed, planning: float) -> None:
    """Width, epochs, crops per image, augmentation and the minutes left for training, from the timings of
    the narrowest network (a wider one validates longer in proportion); `planning` is the seconds spent
    before training starts (this plan, then reading every pair once)."""
    batch, crop = cfg.data.batch_size, cfg.data.crop_size
    load, val_seconds, train_images = timed.load, timed.val_seconds, timed.train_images
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
    bands = any(c.key == "data.val_split" and c.value == "bands" for c in plan.choices)  # few images: cheap
    if plan.layout.val or bands or val_seconds <= limit or val_images <= MIN_VAL:
        return val_seconds, train_images
    keep = max(MIN_VAL, int(val_images * limit / val_seconds))
    fraction = round(keep / (train_images + val_images), 4)
    plan.add("data.val_fraction", fraction, f"{keep} images held out for validation: all {val_images} would take "
             f"~{val_seconds:.0f}s per validation, over {VALIDATION_SHARE:.0%} of the budget for two")
    return val_seconds * keep / val_images, train_images + val_images - keep


def _choices(plan: Plan, val_seconds: float) -> tuple[list[str], float]:
    """What to choose on the validation images after training, and the seconds that costs: for a binary
    task one pass to hold the probabilities and about as long again to score every threshold and object size
    on them (a boundary map also tries closing its gaps: one watershed per image and seed level, `plan.gap_seconds`
    a level, and one more for the flipped probabilities; an instance model grows and scores its objects for
    every candidate: `plan.object_seconds`
    each), four more passes for judging flips, unless that would take over 5% of the budget (a model that
    needs so long to judge its TTA would need 4x as long for every prediction)."""
    binary = len(plan.fingerprint.classes) == 2 or plan.fingerprint.mask.get("encoding") == "instances"
    choose = ["threshold", "min_object"] if binary else []  # an instance model's threshold seeds its objects
    if _judged_by_regions(plan):
        choose.insert(0, "gaps")  # a boundary map: whether closing its gaps keeps the regions apart
    seconds = 2 * val_seconds if binary else 0.0
    # an instance model grows and scores its objects at every seed threshold and object size, then twice for TTA
    seconds += plan.object_seconds * (len(THRESHOLDS) + len(OBJECT_SIZES))
    seconds += plan.gap_seconds * len(SEED_LEVELS)  # a boundary map's gaps closed at every seed level, once each
    flips = 4 * val_seconds + 2 * plan.object_seconds + plan.gap_seconds
    if flips <= TTA_SHARE * 60 * plan.minutes:
        choose.append("tta")
        seconds += flips
        why = f"flips judged in ~{flips:.0f}s"
    else:
        why = f"flips not judged: {flips:.0f}s would exceed {TTA_SHARE:.0%} of the budget"
    plan.add("train.choose", choose, f"decided on the validation images after training, never on test; {why}")
    return choose, seconds


def _judged_by_regions(plan: Plan) -> bool:
    """Whether the choices are judged by the regions a boundary map encloses (then they also close its gaps)."""
    return any(c.key == "train.choose_by" and c.value == "regions" for c in plan.choices)


def _formats(device: torch.device) -> list[tuple[str, bool]]:
    if device.type == "cuda":
        return [("fp32", True), ("auto", True)]  # auto = fp16 autocast with loss scaling
    return [("fp32", False), ("fp32", True)] + ([("bf16", True)] if cpu_runs_bf16() else [])


def cpu_runs_bf16() -> bool:
    """Whether oneDNN, which runs PyTorch's CPU convolutions, has bf16 kernels for this CPU (AVX-512 on x86,
    the BF16 extension on Arm). Without them bf16 is emulated: a training step took 11x the fp32 one on an
    AVX2-only CPU, and even the one warm-up step that would show it costs a short budget seconds."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: time it and let the clock decide
        return True


def _with(cfg: Config, update: dict[str, dict[str, Any]]) -> Config:
    tree = cfg.model_dump(mode="json")
    for section, values in update.items():
        tree[section].update(values)
    return config_from_dict(tree, "plan")
