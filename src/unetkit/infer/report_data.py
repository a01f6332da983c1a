"""The data summary of a report: what a run or an evaluation knows about its images, as plain JSON values.

A score means little without the data behind it: 3 validation images or 300, one size or many, a class that
covers 0.2% of the pixels. Training knows every split's image count, size and class pixels from the scan
that checks each pair before the run starts (`unetkit.data.dataset.scan_pairs`); an evaluation knows the
images it scored and the truth's pixels per class (the confusion matrix's rows). Nothing is read again here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def describe_sizes(sizes: Sequence[tuple[int, int]]) -> str:
    """'64x64' when every image has one size, else 'HxW to HxW (median HxW)', by pixel count; '-' for none."""
    if not sizes:
        return "-"
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    if by_area[0] == by_area[-1]:
        return f"{by_area[0][0]}x{by_area[0][1]}"
    (h0, w0), (h1, w1) = by_area[0], by_area[-1]
    hm, wm = by_area[len(by_area) // 2]
    return f"{h0}x{w0} to {h1}x{w1} (median {hm}x{wm})"


def split_entry(name: str, sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """One split of the summary: its name, image count and sizes ((H, W) per image)."""
    return {"split": name, "images": len(sizes), "sizes": describe_sizes(sizes)}


def class_entries(classes: list[str], pixels: Sequence[int] | np.ndarray,
                  masks_with: Sequence[int] | np.ndarray | None = None, where: str = "") -> list[dict[str, Any]]:
    """Per class: its share of the labelled pixels (`pixels`, `(C,)` counts) and, when known, in how many
    masks it occurs (`masks_with`, `(C,)`). `where` says whose pixels they are ("train", "evaluated")."""
    counts = np.asarray(pixels, dtype=np.int64)
    total = int(counts.sum())
    return [{"name": name, "pixels": int(counts[i]), "share": counts[i] / total if total else None,
             "masks": None if masks_with is None else int(masks_with[i]), "of": where}
            for i, name in enumerate(classes)]


def data_summary(splits: list[dict[str, Any]], classes: list[dict[str, Any]], channels: int, encoding: str
                 ) -> dict[str, Any]:
    """The summary a report shows: splits (`split_entry`), classes (`class_entries`), channels, mask encoding."""
    return {"splits": splits, "classes": classes, "channels": channels, "mask_encoding": encoding}
