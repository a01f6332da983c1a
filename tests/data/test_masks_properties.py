"""`MaskCodec` round trips for every encoding, with random classes, raw values, colours and ignore values.

decode(encode(x)) == x for any class-index map x (ignored pixels included when an ignore value is declared),
also through a PNG file; and encode(decode(raw)) == raw for a mask written in the declared values.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unetkit.config import IGNORE_INDEX, MaskConfig
from unetkit.data.io import read_raw
from unetkit.data.masks import MaskCodec
from unetkit.data.writers import write_mask

PROPERTY = settings(max_examples=50, deadline=None)
COLOUR = st.tuples(*[st.integers(0, 255)] * 3)


@st.composite
def codecs(draw: st.DrawFn) -> MaskCodec:
    """A codec of any encoding: 2 classes for binary, 2 to 12 otherwise, with or without an ignore value."""
    encoding = draw(st.sampled_from(["binary", "index", "palette", "gray_values"]))
    n = 2 if encoding == "binary" else draw(st.integers(2, 12))
    ignore = draw(st.booleans())
    if encoding == "binary":
        cfg = MaskConfig(encoding="binary", foreground_value=draw(st.sampled_from([255, 1, 0, 128])))
        used = {0, 1, 255, cfg.foreground_value}  # every raw value a binary mask may hold (1 = background for fg 0)
    elif encoding == "index":
        cfg, used = MaskConfig(encoding="index"), set(range(n))
    elif encoding == "gray_values":
        values = draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n, unique=True))
        cfg, used = MaskConfig(encoding="gray_values", values=values), set(values)
    else:
        palette = draw(st.lists(COLOUR, min_size=n, max_size=n, unique=True))
        if ignore:
            colour = draw(COLOUR.filter(lambda c: c not in palette))
            return MaskCodec(MaskConfig(encoding="palette", palette=palette, ignore_color=colour), n)
        return MaskCodec(MaskConfig(encoding="palette", palette=palette), n)
    if ignore:
        cfg = cfg.model_copy(update={"ignore_value": draw(st.integers(0, 65535).filter(lambda v: v not in used))})
    return MaskCodec(cfg, n)


@st.composite
def index_maps(draw: st.DrawFn, codec: MaskCodec) -> np.ndarray:
    """(H, W) uint8 class indices of `codec`, IGNORE_INDEX among them when it declares an ignore value."""
    ignorable = (codec.cfg.ignore_color if codec.encoding == "palette" else codec.cfg.ignore_value) is not None
    labels = list(range(codec.num_classes)) + ([IGNORE_INDEX] if ignorable else [])
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return draw(arrays(np.uint8, shape, elements=st.sampled_from(labels)))


@PROPERTY
@given(st.data())
def test_decode_undoes_encode(data: st.DataObject) -> None:
    codec = data.draw(codecs())
    index = data.draw(index_maps(codec))
    raw = codec.encode(index)
    assert raw.shape == (index.shape if codec.encoding != "palette" else (*index.shape, 3))
    np.testing.assert_array_equal(codec.decode(raw), index)


@PROPERTY
@given(st.data())
def test_encode_undoes_decode_of_declared_values(data: st.DataObject) -> None:
    codec = data.draw(codecs())
    raw = codec.encode(data.draw(index_maps(codec)))  # a mask holding only the canonical declared values
    np.testing.assert_array_equal(codec.encode(codec.decode(raw)), raw)


@PROPERTY
@given(st.data())
def test_masks_survive_a_png_file(data: st.DataObject) -> None:
    codec = data.draw(codecs())
    index = data.draw(index_maps(codec))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mask.png"
        write_mask(path, codec.encode(index))  # 8-bit, 16-bit (gray values above 255) or RGB
        np.testing.assert_array_equal(codec.decode(read_raw(path), str(path)), index)
