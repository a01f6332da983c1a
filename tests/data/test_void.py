"""Void (unlabelled) mask values: named by the user or found by the 255 convention, and then counted for no
class, in the fingerprint and in the plan's `data.mask`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.data.fingerprint import fingerprint
from unetkit.data.void import parse_ignore, with_void
from unetkit.errors import UnetkitError

NAMES4 = [f"class_{i}" for i in range(4)]


def test_the_last_index_named_void_leaves_an_index_mask_of_the_others() -> None:
    mask, names, note = with_void({"encoding": "index"}, NAMES4, 3)
    assert mask == {"encoding": "index", "ignore_value": 3} and names == NAMES4[:3] and "value 3" in note


def test_a_void_value_inside_the_range_turns_the_rest_into_gray_values() -> None:
    mask, names, _ = with_void({"encoding": "index"}, NAMES4, 0)
    assert mask == {"encoding": "gray_values", "values": [1, 2, 3], "ignore_value": 0} and len(names) == 3


def test_255_beside_small_indices_is_void_by_convention_unless_told_none() -> None:
    suggested = {"encoding": "gray_values", "values": [0, 1, 2, 255]}
    mask, names, note = with_void(suggested, NAMES4, None)
    assert mask == {"encoding": "index", "ignore_value": 255} and len(names) == 3 and "convention" in note
    assert with_void(suggested, NAMES4, "none") == (suggested, NAMES4, None)
    gray = {"encoding": "gray_values", "values": [0, 128, 255]}  # 255 is one of three gray levels here
    assert with_void(gray, NAMES4[:3], None)[0] == gray


def test_a_palette_colour_and_the_one_line_errors() -> None:
    palette = {"encoding": "palette", "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    mask, names, _ = with_void(palette, NAMES4[:3], parse_ignore("0,0,0"))
    assert mask == {"encoding": "palette", "palette": [[255, 0, 0], [0, 255, 0]], "ignore_color": [0, 0, 0]}
    assert names == NAMES4[:2]
    with pytest.raises(UnetkitError, match="not one of the mask values"):
        with_void({"encoding": "index"}, NAMES4, 9)
    with pytest.raises(UnetkitError, match="the masks are binary"):
        with_void({"encoding": "binary", "foreground_value": 255}, NAMES4[:2], 0)
    with pytest.raises(UnetkitError, match="give a mask value"):
        parse_ignore("void")
    assert parse_ignore("None") == "none" and parse_ignore(None) is None and parse_ignore(" 11") == 11


def test_the_fingerprint_counts_void_pixels_for_no_class(tmp_path: Path) -> None:
    root = tmp_path / "train"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    mask[:8] = 2  # a void band across the top
    for i in range(3):
        Image.fromarray((mask * 60).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    assert len(fingerprint(root).classes) == 3
    fp = fingerprint(root, ignore=2)
    assert fp.mask == {"encoding": "index", "ignore_value": 2} and len(fp.classes) == 2
    assert [c.share for c in fp.classes] == pytest.approx([0.5, 0.5])  # the void band counts for neither
    assert "value 2 is void" in fp.void_note
