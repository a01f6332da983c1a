"""A dataset's fingerprint: the facts a plan is made from, measured on the user's own files.

`data inspect` already finds the mask encoding and the classes from the raw values; the fingerprint adds what
the network's shape and the training recipe depend on (nnU-Net plans from the same kind of facts):

- image sizes (median and smallest side), channels, bit depth;
- each class's share of the pixels, and its objects: 8-connected regions and their equivalent diameters
  (the median weighted by area: the size of the object a typical pixel lies in, so specks do not dominate),
  and its thickness (twice the median distance of its pixels to another class: a membrane network is one
  huge region but only a few pixels thick);
- intensities per image and across images: when image means differ by more than half the typical contrast
  within an image, or the contrast itself varies more than 2x, the acquisitions are mixed and each image should
  be stretched on its own (`data.normalize: image`); otherwise one dataset mean and std serve all.

At most `max_images` pairs (evenly spread over the sorted files) are read, so a plan of 10,000 images takes
seconds, not minutes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.measure import label, regionprops

from unetkit.config import IGNORE_INDEX, MaskConfig
from unetkit.data.dataset import Pair, load_pair, pair_files
from unetkit.data.inspect import inspect_folder
from unetkit.data.intensity import stretch_whole
from unetkit.data.masks import MaskCodec
from unetkit.data.void import with_void
from unetkit.errors import UnetkitError

INSTANCE_CLASSES = ("background", "interior", "boundary")
MIXED_BRIGHTNESS = 0.5  # spread of image means, in units of the median contrast within an image
MIXED_CONTRAST = 2.0  # ratio of the 90th to the 10th percentile of the images' contrast


@dataclass
class ClassFacts:
    name: str
    share: float  # of all labelled pixels
    objects_per_image: float  # 8-connected regions
    diameter: float  # area-weighted median equivalent diameter of its regions, pixels (0 when absent)
    intensity: float  # mean image intensity (over channels, in [0, 1]) under the class
    thickness: float  # median over the class's pixels of twice their distance to another class: how thin it is
    share_range: tuple[float, float] = (0.0, 1.0)  # its smallest and largest share of one image's labelled pixels


@dataclass
class Fingerprint:
    folder: str
    num_images: int
    channels: int
    mask: dict[str, Any]
    classes: list[ClassFacts]
    median_size: tuple[int, int]  # (height, width)
    min_side: int
    max_side: int  # the longest side of any image read
    bits: int  # 8 or 16 (or 32 for float data)
    mean: list[float]  # per channel, dataset statistics on [0, 1] intensities
    std: list[float]
    stretched_mean: list[float]  # the same after stretching each image by its own range
    stretched_std: list[float]
    brightness_spread: float
    contrast_ratio: float
    notes: list[str] = field(default_factory=list)
    ignore: int | tuple[int, int, int] | str | None = None  # the void value asked for (see data/void.py)
    void_note: str | None = None  # why a value is void, when one is

    @property
    def mixed(self) -> bool:
        return self.brightness_spread > MIXED_BRIGHTNESS or self.contrast_ratio > MIXED_CONTRAST

    @property
    def background(self) -> int:
        """The most frequent class: what foreground oversampling and object sizes are measured against."""
        return int(np.argmax([c.share for c in self.classes]))


def _sample(pairs: list[Pair], count: int) -> list[Pair]:
    if len(pairs) <= count:
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _class_objects(mask: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """(areas, equivalent diameters) of the 8-connected regions of class `cls` in an (H, W) class map."""
    regions = regionprops(label(mask == cls, connectivity=2))
    areas = np.array([r.area for r in regions], dtype=np.float64)
    return areas, np.sqrt(4 * areas / np.pi)


def _inner_depth(mask: np.ndarray, cls: int, samples: int = 20_000) -> np.ndarray:
    """Distances (pixels) from a strided sample of the class's pixels to the nearest pixel of another class;
    the image border does not count as another class."""
    inside = np.pad(mask == cls, 1, mode="edge")
    depth = distance_transform_edt(inside)[1:-1, 1:-1][mask == cls]
    return depth[:: max(1, depth.size // samples)]


def _bits(modes: dict[str, int]) -> int:
    """The widest sample type among image modes such as "gray 8-bit", "RGB 16-bit", "gray float32"."""
    digits = [re.sub(r"\D", "", mode.split()[-1]) for mode in modes]
    return max((int(d) for d in digits if d), default=8)


def fingerprint(folder: Path, images: str = "images", masks: str = "masks", max_images: int = 64,
                ignore: int | tuple[int, int, int] | str | None = None) -> Fingerprint:
    """Measure `folder/images` + `folder/masks`; a dataset no encoding can read is one line naming why.
    `ignore` names the void value (`data.void.parse_ignore`); pixels of it count for no class."""
    report = inspect_folder(Path(folder), images=images, masks=masks)
    if report["problems"]:
        raise UnetkitError(f"{folder}: {report['problems'][0]} (unetkit data inspect {folder} lists every problem)")
    suggestion = report["suggestion"]
    if masks == "instances":  # label images: one value per object, any number of objects
        suggestion = {**suggestion, "mask": {"encoding": "instances"}, "classes": list(INSTANCE_CLASSES),
                      "notes": [f"{masks}/ holds one label per object: trained as background / interior / boundary"]}
    if suggestion["mask"] is None:
        raise UnetkitError(f"{folder}: no mask encoding fits: {suggestion['notes'][0]}")
    channels = suggestion["channels"]
    mask_cfg, names, void_note = with_void(suggestion["mask"], suggestion["classes"], ignore)
    codec = MaskCodec(MaskConfig(**mask_cfg), len(names))
    pairs = pair_files(Path(folder) / images, Path(folder) / masks)
    counts = np.zeros(len(names), np.int64)
    sums = np.zeros(len(names), np.float64)
    shares: list[np.ndarray] = []  # per image, (C,)
    areas: list[list[np.ndarray]] = [[] for _ in names]
    depths: list[list[np.ndarray]] = [[] for _ in names]
    stats, stretched, sizes = [], [], []
    for pair in _sample(pairs, max_images):
        image, mask = load_pair(pair, channels, codec)
        sizes.append(mask.shape)
        image_counts = _class_counts(mask, len(names))
        counts += image_counts
        shares.append(image_counts / max(int(image_counts.sum()), 1))
        sums += _class_sums(mask, image, len(names))
        for cls in range(len(names)):
            areas[cls].append(_class_objects(mask, cls)[0])
            depths[cls].append(_inner_depth(mask, cls))
        pixels = image.reshape(-1, channels)
        stats.append((pixels.mean(0), pixels.std(0), (pixels ** 2).mean(0)))
        flat = stretch_whole(image).reshape(-1, channels)
        stretched.append((flat.mean(0), (flat ** 2).mean(0)))
    means = np.array([s[0] for s in stats])  # (N, C)
    stds = np.array([s[1] for s in stats])
    mean = means.mean(0)
    std = np.sqrt(np.maximum(np.array([s[2] for s in stats]).mean(0) - mean ** 2, 1e-12))
    s_mean = np.array([s[0] for s in stretched]).mean(0)
    s_std = np.sqrt(np.maximum(np.array([s[1] for s in stretched]).mean(0) - s_mean ** 2, 1e-12))
    contrast = np.median(stds, axis=0)
    spread = float(np.max(means.std(0) / np.maximum(contrast, 1e-6)))
    ratio = float(np.max(np.percentile(stds, 90, axis=0) / np.maximum(np.percentile(stds, 10, axis=0), 1e-6)))
    total = max(int(counts.sum()), 1)
    facts = []
    for cls, name in enumerate(names):
        a = np.concatenate(areas[cls]) if areas[cls] else np.zeros(0)
        d = np.concatenate(depths[cls]) if depths[cls] else np.zeros(0)
        facts.append(ClassFacts(name, float(counts[cls] / total), float(a.size / len(sizes)),
                                _weighted_median(np.sqrt(4 * a / np.pi), a), float(sums[cls] / max(counts[cls], 1)),
                                float(2 * np.median(d)) if d.size else 0.0,
                                (float(min(s[cls] for s in shares)), float(max(s[cls] for s in shares)))))
    heights, widths = np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes])
    return Fingerprint(str(folder), len(pairs), channels, mask_cfg, facts,
                       (int(np.median(heights)), int(np.median(widths))), int(min(heights.min(), widths.min())),
                       int(max(heights.max(), widths.max())), _bits(report["image_modes"]), _round(mean),
                       _round(std), _round(s_mean), _round(s_std), spread, ratio, list(suggestion["notes"]),
                       ignore, void_note)


def _class_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=num_classes)[:num_classes]


def _class_sums(mask: np.ndarray, image: np.ndarray, num_classes: int) -> np.ndarray:
    """Sum of the channel-mean intensity under each class of an (H, W) class map."""
    keep = mask != IGNORE_INDEX
    return np.bincount(mask[keep].ravel(), weights=image.mean(-1)[keep].ravel(), minlength=num_classes)[:num_classes]


def test_mask_for(train: Fingerprint, folder: Path, max_images: int = 16) -> tuple[dict[str, Any] | None, str]:
    """The `data.test_mask` of a test folder whose masks use another encoding than the training masks (or None
    when they agree), and why. Its classes are matched to the training classes by the mean image intensity
    under each: the only link between two encodings that the files themselves give."""
    report = inspect_folder(Path(folder))
    if report["suggestion"]["mask"] is None:
        return None, "test masks use the training masks' encoding"
    suggested, names, _ = with_void(report["suggestion"]["mask"], report["suggestion"]["classes"], train.ignore)
    if suggested == train.mask:
        return None, "test masks use the training masks' encoding"
    if len(names) != len(train.classes):
        raise UnetkitError(f"{folder}: test masks hold {len(names)} classes, the training masks {len(train.classes)}")
    counts, sums = _split_counts(train, folder, suggested, max_images)
    test_order = np.argsort(sums / np.maximum(counts, 1))  # test classes, darkest first
    train_order = np.argsort([c.intensity for c in train.classes])
    matched = dict(zip(train_order.tolist(), test_order.tolist(), strict=True))  # train class -> test class
    raw = _raw_values(suggested, len(names))
    key = "palette" if suggested["encoding"] == "palette" else "values"
    values = [raw[matched[c]] for c in range(len(names))]
    shown = ", ".join(f"{train.classes[c].name} = {values[c]}" for c in range(len(names)))
    return ({"encoding": "palette" if key == "palette" else "gray_values", key: values},
            f"test masks use another encoding ({suggested['encoding']}); classes matched by mean image intensity: "
            f"{shown}; check this")


def _split_counts(train: Fingerprint, folder: Path, mask: dict[str, Any], max_images: int) -> tuple[np.ndarray, ...]:
    """(pixels per class, summed intensity per class) over up to `max_images` pairs of `folder`, read with `mask`."""
    codec = MaskCodec(MaskConfig(**mask), len(train.classes))
    counts, sums = np.zeros(len(train.classes), np.int64), np.zeros(len(train.classes))
    for pair in _sample(pair_files(Path(folder) / "images", Path(folder) / "masks"), max_images):
        image, labels = load_pair(pair, train.channels, codec)
        counts += _class_counts(labels, len(train.classes))
        sums += _class_sums(labels, image, len(train.classes))
    return counts, sums


def share_shift(train: Fingerprint, folder: Path, mask: dict[str, Any] | None = None, max_images: int = 16,
                margin: float = 1.25) -> list[str]:
    """Warnings for the classes whose share of a test folder's pixels lies outside the range of their share in
    single training images by more than `margin`x: such test masks were likely labelled another way (another
    annotator, tool or threshold), and a test score of that class then measures the labels as much as the model.
    `mask` is the test folder's `data.test_mask` when it has another encoding than the training masks."""
    try:
        counts, _ = _split_counts(train, folder, mask or train.mask, max_images)
    except UnetkitError as err:  # training does not need the test masks: say so, and let it go on
        return [f"the test masks cannot be read with the training masks' encoding ({err})"]
    shares = counts / max(int(counts.sum()), 1)
    notes = []
    for cls, share in zip(train.classes, shares, strict=True):
        low, high = cls.share_range
        if share > high * margin or share < low / margin:
            notes.append(f"{cls.name} covers {share:.1%} of the test pixels against {low:.1%}-{high:.1%} of each "
                         "training image: the test masks may be labelled another way, and its test score measures "
                         "that too")
    return notes


def _raw_values(mask: dict[str, Any], num_classes: int) -> list[Any]:
    """The raw value (or colour) of each class of a suggested `data.mask`, in class order."""
    if mask["encoding"] == "palette":
        return list(mask["palette"])
    if mask["encoding"] == "gray_values":
        return list(mask["values"])
    if mask["encoding"] == "binary":
        fg = mask["foreground_value"]
        return [255 if fg == 0 else 0, fg]
    return list(range(num_classes))


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def describe(fp: Fingerprint) -> list[str]:
    """The fingerprint as lines for the plan's header and the console."""
    height, width = fp.median_size
    lines = [f"{fp.num_images} training images, {fp.channels} channel(s), {fp.bits}-bit, median {width}x{height} "
             f"(WxH), smallest side {fp.min_side}",
             f"masks: {fp.mask['encoding']} encoding, {len(fp.classes)} classes"]
    if fp.void_note:
        lines.append(f"void: {fp.void_note}")
    for c in fp.classes:
        lines.append(f"  {c.name}: {c.share:.1%} of pixels, {c.objects_per_image:.1f} regions per image, "
                     f"typical region diameter {c.diameter:.0f} px, thickness {c.thickness:.0f} px")
    lines.append(f"intensity: mean {fp.mean}, std {fp.std}; image means spread {fp.brightness_spread:.2f} x the "
                 f"typical contrast, contrast varies {fp.contrast_ratio:.2f}x between images")
    return lines
