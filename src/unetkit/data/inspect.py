"""Look at a dataset folder before training: what is there, what is wrong, and how to configure it.

Writing `data.mask` needs facts that are tedious to find by hand: are the masks gray or RGB, which values
or colours occur, is 255 the object or the background? `inspect_folder` reads every mask once and answers
these, reports problems (unpaired files, size mismatches, unreadable files) without stopping at the first,
and suggests a `data:` YAML snippet. Images are only opened for their header (size and mode).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from unetkit.data.io import IMAGE_EXTENSIONS, open_picture, read_raw
from unetkit.data.masks import MAX_MASK_VALUES, extreme_share, near_binary_threshold
from unetkit.errors import UnetkitError

_TIFF = (".tif", ".tiff")
_PIL_MODES = {"1": "1-bit", "L": "gray 8-bit", "LA": "gray 8-bit", "P": "paletted 8-bit", "RGB": "RGB 8-bit",
              "RGBA": "RGBA 8-bit", "I;16": "gray 16-bit", "I;16B": "gray 16-bit", "I;16L": "gray 16-bit",
              "I": "gray 32-bit", "F": "gray float32"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _header(path: Path) -> tuple[int, int, str]:
    """(width, height, mode such as "gray 8-bit" or "RGB 16-bit") from the file header, without decoding."""
    if path.suffix.lower() in _TIFF:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            kind = {1: "gray", 3: "RGB", 4: "RGBA"}.get(page.samplesperpixel, f"{page.samplesperpixel}-channel")
            bits = page.dtype.itemsize * 8
            depth = f"float{bits}" if page.dtype.kind == "f" else f"{bits}-bit"
            return page.imagewidth, page.imagelength, f"{kind} {depth}"
    with open_picture(path) as img:
        return img.width, img.height, _PIL_MODES.get(img.mode, img.mode)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    width, height, _ = _header(path)
    return width, height


def _size(width: int, height: int) -> str:
    return f"{width}x{height}"


def _value_counts(raw: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """("gray" | "rgb", distinct values (K,) int64, their pixel counts (K,)); RGB colours packed as 0xRRGGBB."""
    if raw.ndim == 3 and not ((raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all()):
        rgb = raw.astype(np.int64)
        keys, counts = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], return_counts=True)
        return "rgb", keys, counts
    gray = raw[..., 0] if raw.ndim == 3 else raw  # an RGB file whose channels agree holds gray values
    if gray.dtype in (np.uint8, np.uint16):
        bins = np.bincount(gray.ravel())
        keys = np.flatnonzero(bins)
        return "gray", keys.astype(np.int64), bins[keys]
    keys, counts = np.unique(gray, return_counts=True)
    if not np.array_equal(keys, np.round(keys)):
        raise UnetkitError("holds non-integer values")
    return "gray", keys.astype(np.int64), counts


def _reason(path: Path, err: Exception) -> str:
    return f"{path.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def _colour(key: int) -> list[int]:
    return [key >> 16, (key >> 8) & 255, key & 255]


def inspect_folder(folder: Path, images: str = "images", masks: str = "masks", max_values: int = 32) -> dict:
    """Report on `folder/images` and `folder/masks` (or on `folder` itself when it holds only images).

    Returns a JSON-ready dict: file counts, unpaired files, sizes and modes with counts, size mismatches,
    unreadable files, the mask values or colours with their pixel share (the `max_values` most common), the
    list `problems` (one line each) and `suggestion` (`channels`, `mask`, `notes`, `yaml`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UnetkitError(f"{folder} is not a folder; give a dataset folder holding {images}/ and {masks}/")
    images_dir = folder / images
    if images_dir.is_dir():
        masks_dir: Path | None = folder / masks if (folder / masks).is_dir() else None
    else:
        images_dir, masks_dir = folder, None
    image_files = _files(images_dir)
    mask_files = _files(masks_dir) if masks_dir is not None else []
    if not image_files:
        raise UnetkitError(f"{images_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the folder")
    problems: list[str] = []
    for files, where in ((image_files, images_dir), (mask_files, masks_dir)):
        stems = Counter(p.stem for p in files)
        problems += [f"{where}: several files named {s!r}; rename so they pair up" for s, n in stems.items() if n > 1]
    image_by_stem = {p.stem: p for p in image_files}
    mask_by_stem = {p.stem: p for p in mask_files}
    lonely_images = [p.name for s, p in sorted(image_by_stem.items()) if s not in mask_by_stem]
    report: dict[str, Any] = {
        "folder": str(folder),
        "images_dir": str(images_dir),
        "masks_dir": None if masks_dir is None else str(masks_dir),
        "num_images": len(image_files),
        "num_masks": len(mask_files),
        "num_pairs": len(image_by_stem.keys() & mask_by_stem.keys()),
        "images_without_masks": [] if masks_dir is None else lonely_images,
        "masks_without_images": [p.name for s, p in sorted(mask_by_stem.items()) if s not in image_by_stem],
        "unreadable": [],
        "size_mismatches": [],
    }
    image_sizes: dict[str, tuple[int, int]] = {}
    image_modes: Counter[str] = Counter()
    for path in image_files:
        try:
            width, height, mode = _header(path)
        except Exception as err:  # any decoder failure means the same: the file is not a usable image
            report["unreadable"].append(_reason(path, err))
            continue
        image_sizes[path.stem] = (width, height)
        image_modes[mode] += 1
    report["image_sizes"] = dict(Counter(_size(*s) for s in image_sizes.values()).most_common())
    report["image_modes"] = dict(image_modes.most_common())
    fields, all_values, all_pixels = _analyse_masks(mask_files, image_sizes, image_by_stem, report, max_values)
    report.update(fields)
    report["problems"] = problems + _problem_lines(report)
    report["suggestion"] = _suggest(report, all_values, all_pixels)
    return report


def _analyse_masks(mask_files: list[Path], image_sizes: dict[str, tuple[int, int]], image_by_stem: dict[str, Path],
                   report: dict[str, Any], max_values: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Read every mask once; pixel counts per value are gathered per mask, then merged in one vectorised step.

    Returns the report fields, and all distinct values (K,) (colours packed 0xRRGGBB) with their pixels (K,).
    """
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    keys: dict[str, list[np.ndarray]] = {"gray": [], "rgb": []}
    counts: dict[str, list[np.ndarray]] = {"gray": [], "rgb": []}
    for path in mask_files:
        try:
            mode = _header(path)[2]
            raw = read_raw(path)
            kind, k, c = _value_counts(raw)
        except Exception as err:
            report["unreadable"].append(_reason(path, err))
            continue
        modes[mode] += 1
        height, width = raw.shape[:2]
        sizes[_size(width, height)] += 1
        image_size = image_sizes.get(path.stem)
        if image_size is not None and image_size != (width, height):
            report["size_mismatches"].append(f"{image_by_stem[path.stem].name} is {_size(*image_size)} but mask "
                                             f"{path.name} is {_size(width, height)}")
        keys[kind].append(k)
        counts[kind].append(c)
    kinds = [kind for kind in ("gray", "rgb") if keys[kind]]
    if kinds == ["gray", "rgb"]:  # compare gray values as colours (v, v, v) to show them side by side
        keys["rgb"] += [(k << 16) | (k << 8) | k for k in keys.pop("gray")]
        counts["rgb"] += counts.pop("gray")
    kind = "mixed" if len(kinds) == 2 else (kinds[0] if kinds else None)
    values: list[dict[str, Any]] = []
    uniq, pixels = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if kind is not None:
        column = "rgb" if kind != "gray" else "gray"
        uniq, inverse = np.unique(np.concatenate(keys[column]), return_inverse=True)
        pixels = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(pixels, inverse, np.concatenate(counts[column]).astype(np.int64))
        in_masks = np.bincount(inverse, minlength=len(uniq))  # each mask lists a value at most once
        total = int(pixels.sum())
        for i in np.argsort(-pixels, kind="stable")[:max_values]:
            value: int | list[int] = int(uniq[i]) if kind == "gray" else _colour(int(uniq[i]))
            values.append({"value": value, "pixels": int(pixels[i]), "share": float(pixels[i]) / total,
                           "masks": int(in_masks[i])})
    fields = {"mask_sizes": dict(sizes.most_common()), "mask_modes": dict(modes.most_common()), "mask_kind": kind,
              "num_mask_values": len(uniq), "mask_values": values}
    return fields, uniq, pixels


def _problem_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for key, what in (("images_without_masks", "image(s) without a mask"), ("masks_without_images",
                                                                              "mask(s) without an image")):
        names = report[key]
        if names:
            lines.append(f"{len(names)} {what}: {_shorten(names)}")
    lines += [f"size mismatch: {m}" for m in report["size_mismatches"]]
    lines += [f"unreadable: {u}" for u in report["unreadable"]]
    if report["mask_kind"] == "mixed":
        lines.append("masks mix gray and RGB files; convert them to one encoding before training")
    return lines


def _shorten(names: list[str], shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _suggest_mask(kind: str | None, values: np.ndarray, pixels: np.ndarray) -> tuple[dict[str, Any] | None,
                                                                                       list[str], list[str]]:
    """(the `data.mask` mapping or None, class names, notes) for the distinct mask values found."""
    n = len(values)
    if kind is None:
        return None, [], ["no masks found: only data.channels is suggested"]
    if kind == "mixed":
        return None, [], ["masks mix gray and RGB files: no single data.mask encoding reads them all"]
    if n < 2:
        return None, [], [f"every mask holds the single value {_show(kind, int(values[0]))}: that is one class, "
                          "segmentation needs at least two; check these are the right files"]
    placeholder = [f"class_{i}" for i in range(n)]
    looks_like_image = [f"{n} distinct {'values' if kind == 'gray' else 'colours'}: this looks like an image, "
                        "not a mask; check the masks folder"]
    if kind == "rgb":
        if n > MAX_MASK_VALUES:
            return None, [], looks_like_image
        return {"encoding": "palette", "palette": [_colour(int(v)) for v in values]}, placeholder, [
            "class i has the i-th palette colour (sorted by value); reorder palette and classes together"]
    found = [int(v) for v in values]
    threshold = near_binary_threshold(values, pixels)
    if threshold is not None:
        high_side = pixels[values > threshold].sum()
        fg = 255 if high_side <= pixels.sum() - high_side else 0
        share = extreme_share(values, pixels)
        return {"encoding": "binary", "foreground_value": fg, "threshold": threshold}, ["background", "foreground"], [
            f"masks are almost binary ({n} values, {share:.1%} of pixels near {found[0]} or {found[-1]}: "
            f"JPEG-compressed or anti-aliased); threshold {threshold} reads values above it as 255, the rest as 0",
            f"foreground_value {fg} is the rarer side; if the other side marks the objects, use "
            f"foreground_value: {255 - fg}"]
    if set(found) in ({0, 255}, {0, 1}):
        fg, other = (found[0], found[1]) if pixels[0] <= pixels[1] else (found[1], found[0])
        share = float(pixels[found.index(fg)] / pixels.sum())
        return {"encoding": "binary", "foreground_value": fg}, ["background", "foreground"], [
            f"foreground_value {fg} is the rarer value ({share:.1%} of pixels); if {other} marks the objects, "
            f"use foreground_value: {other}"]
    if found == list(range(n)) and n <= 255:
        notes = ["if one value marks unlabelled pixels (void), set ignore_value to it and drop it from classes"]
        if n > MAX_MASK_VALUES:
            notes.append(f"{n} classes is a lot: check the masks folder does not hold images")
        return {"encoding": "index"}, placeholder, notes
    if n > MAX_MASK_VALUES:
        return None, [], looks_like_image
    return {"encoding": "gray_values", "values": found}, placeholder, [
        "class i has the i-th gray value (sorted); reorder values and classes together"]


def _show(kind: str, value: int) -> str:
    return str(value) if kind == "gray" else str(tuple(_colour(value)))


def _suggest(report: dict[str, Any], values: np.ndarray, pixels: np.ndarray) -> dict[str, Any]:
    """`channels`, `mask`, `classes`, `notes` and the same as a `data:` YAML snippet."""
    modes = report["image_modes"]
    gray = all(m.startswith("gray") or m == "1-bit" for m in modes)
    channels = 1 if gray else 3
    notes = []
    if not gray and any(m.startswith("gray") or m == "1-bit" for m in modes):
        notes.append("images mix gray and colour files: channels 3 repeats the gray ones into RGB")
    mask, classes, mask_notes = _suggest_mask(report["mask_kind"], values, pixels)
    lines = ["data:", f"  channels: {channels}"]
    if mask is not None:
        lines += [f"  classes: [{', '.join(classes)}]   # {len(classes)} classes: name them", "  mask:"]
        lines += [f"    {key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in mask.items()]
    return {"channels": channels, "mask": mask, "classes": classes, "notes": notes + mask_notes,
            "yaml": "\n".join(lines) + "\n"}


def format_inspection(report: dict) -> str:
    """The report of `inspect_folder` as readable text: counts, sizes, mask values, problems, suggestion."""
    out = [f"Dataset {report['folder']}", f"  images: {report['num_images']} in {report['images_dir']}"]
    if report["masks_dir"] is not None:
        out.append(f"  masks:  {report['num_masks']} in {report['masks_dir']} ({report['num_pairs']} paired by name)")
    else:
        out.append("  masks:  none (no masks folder): images only")
    for key, title in (("image_sizes", "image sizes (WxH)"), ("image_modes", "image modes"),
                       ("mask_sizes", "mask sizes (WxH)"), ("mask_modes", "mask modes")):
        if report[key]:
            out.append(f"  {title}: " + ", ".join(f"{k} ({n})" for k, n in report[key].items()))
    if report["mask_kind"] is not None:
        kind = {"gray": "gray", "rgb": "RGB", "mixed": "mixed gray and RGB"}[report["mask_kind"]]
        shown = len(report["mask_values"])
        more = f", the {shown} most common shown" if shown < report["num_mask_values"] else ""
        out += ["", f"Masks are {kind}: {report['num_mask_values']} distinct values{more}",
                f"  {'value':>16}  {'share':>8}  {'masks':>6}"]
        for row in report["mask_values"]:
            value = row["value"] if isinstance(row["value"], int) else tuple(row["value"])
            out.append(f"  {value!s:>16}  {row['share']:>8.2%}  {row['masks']:>6}")
    out += ["", "Problems:" if report["problems"] else "Problems: none found"]
    out += [f"  - {line}" for line in report["problems"]]
    suggestion = report["suggestion"]
    out += ["", "Suggested config:"] + [f"  {line}" for line in suggestion["yaml"].splitlines()]
    out += [f"  note: {note}" for note in suggestion["notes"]]
    return "\n".join(out)
