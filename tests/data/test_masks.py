import numpy as np
import pytest

from unetkit.config import IGNORE_INDEX, MaskConfig
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError

PALETTE = [(0, 0, 0), (230, 60, 60), (60, 160, 230)]
X = IGNORE_INDEX


def codec(n: int = 3, **kwargs: object) -> MaskCodec:
    return MaskCodec(MaskConfig(**kwargs), n)


@pytest.mark.parametrize(
    "kwargs, raw, expected",
    [
        ({"encoding": "binary"}, [[0, 255], [255, 0]], [[0, 1], [1, 0]]),
        ({"encoding": "binary", "foreground_value": 1}, [[0, 1], [1, 1]], [[0, 1], [1, 1]]),
        # foreground stored as 0: background may be 255 or 1
        ({"encoding": "binary", "foreground_value": 0}, [[0, 255], [1, 0]], [[1, 0], [0, 1]]),
        ({"encoding": "binary", "ignore_value": 128}, [[0, 128], [255, 0]], [[0, X], [1, 0]]),
    ],
)
def test_binary_decode(kwargs: dict, raw: list, expected: list) -> None:
    out = codec(2, **kwargs).decode(np.array(raw, np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_index_decode_with_ignore_value() -> None:
    raw = np.array([[0, 1, 2], [11, 2, 0]], np.uint8)  # CamVid-style void = 11
    np.testing.assert_array_equal(codec(3, ignore_value=11).decode(raw), [[0, 1, 2], [X, 2, 0]])


def test_gray_values_decode_unordered_values_16_bit() -> None:
    c = codec(3, encoding="gray_values", values=[1000, 0, 200], ignore_value=50)
    raw = np.array([[0, 200], [1000, 50]], np.uint16)
    np.testing.assert_array_equal(c.decode(raw), [[1, 2], [0, X]])


def test_palette_decode_with_ignore_colour() -> None:
    c = codec(3, encoding="palette", palette=PALETTE, ignore_color=(255, 255, 255))
    raw = np.array([[[230, 60, 60], [0, 0, 0]], [[255, 255, 255], [60, 160, 230]]], np.uint8)
    np.testing.assert_array_equal(c.decode(raw), [[1, 0], [X, 2]])


ENCODINGS = [
    (2, {"encoding": "binary", "ignore_value": 100}),
    (2, {"encoding": "binary", "foreground_value": 0, "ignore_value": 100}),
    (2, {"encoding": "binary", "foreground_value": 1, "ignore_value": 7}),
    (3, {"encoding": "index", "ignore_value": 11}),
    (3, {"encoding": "gray_values", "values": [10, 500, 3], "ignore_value": 0}),
    (3, {"encoding": "palette", "palette": PALETTE, "ignore_color": (1, 2, 3)}),
]


@pytest.mark.parametrize("n, kwargs", ENCODINGS)
def test_round_trip(n: int, kwargs: dict) -> None:
    c = codec(n, **kwargs)
    index = np.random.default_rng(0).integers(0, n, (7, 9)).astype(np.uint8)
    index[0, :2] = X  # every config above declares an ignore value or colour
    np.testing.assert_array_equal(c.decode(c.encode(index)), index)


def test_encode_uses_the_dataset_values_and_dtype() -> None:
    index = np.array([[0, 1]], np.uint8)
    np.testing.assert_array_equal(codec(2, encoding="binary").encode(index), [[0, 255]])
    np.testing.assert_array_equal(codec(2, encoding="binary", foreground_value=0).encode(index), [[255, 0]])
    np.testing.assert_array_equal(codec(2, encoding="binary", foreground_value=1).encode(index), [[0, 1]])
    assert codec(3).encode(index).dtype == np.uint8
    wide = codec(2, encoding="gray_values", values=[0, 1000]).encode(index)
    assert wide.dtype == np.uint16 and wide.tolist() == [[0, 1000]]
    colours = codec(3, encoding="palette", palette=PALETTE).encode(np.array([[2, 1]], np.uint8))
    assert colours.dtype == np.uint8 and colours.tolist() == [[[60, 160, 230], [230, 60, 60]]]
    with pytest.raises(ValueError):
        codec(3).encode(np.array([[3]], np.uint8))


def test_unexpected_values_are_named_with_the_file() -> None:
    raw = np.array([[0, 7, 9], [1, 200, 3]], np.uint8)
    with pytest.raises(UnetkitError) as err:
        codec(3).decode(raw, "masks/a.png")
    message = str(err.value)
    assert message.startswith("masks/a.png: mask holds 3, 7, 9, 200,")
    assert "'index'" in message and "[0, 1, 2]" in message


def test_at_most_five_unexpected_values_are_listed() -> None:
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with pytest.raises(UnetkitError, match=r"mask holds 2, 3, 4, 5, 6 \(10 distinct in all\)"):
        codec(2, encoding="index").decode(raw, "b.png")


def test_unexpected_binary_value_and_colour() -> None:
    with pytest.raises(UnetkitError, match=r"c.png: mask holds 1, .*binary values \[0, 255\]"):
        codec(2, encoding="binary").decode(np.array([[0, 1, 255]], np.uint8), "c.png")
    raw = np.zeros((1, 2, 3), np.uint8)
    raw[0, 1] = (9, 8, 7)
    with pytest.raises(UnetkitError, match=r"d.png: mask holds \(9, 8, 7\).*'palette'"):
        codec(3, encoding="palette", palette=PALETTE).decode(raw, "d.png")


def test_rgb_mask_with_index_encoding() -> None:
    gray_as_rgb = np.repeat(np.array([[0, 2], [1, 1]], np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(codec(3).decode(gray_as_rgb), [[0, 2], [1, 1]])
    colour = gray_as_rgb.copy()
    colour[0, 0] = (230, 60, 60)
    with pytest.raises(
        UnetkitError, match="e.png: mask is RGB but data.mask.encoding is 'index'; declare encoding: palette"
    ):
        codec(3).decode(colour, "e.png")


def test_gray_mask_with_palette_encoding() -> None:
    with pytest.raises(UnetkitError, match="f.png: mask is single-channel .* 'palette'"):
        codec(3, encoding="palette", palette=PALETTE).decode(np.zeros((2, 2), np.uint8), "f.png")


def test_float_and_bool_masks() -> None:
    np.testing.assert_array_equal(codec(3).decode(np.array([[0.0, 2.0]])), [[0, 2]])
    np.testing.assert_array_equal(codec(2).decode(np.array([[True, False]])), [[1, 0]])
    with pytest.raises(UnetkitError, match="non-integer"):
        codec(3).decode(np.array([[0.5]]), "g.png")


def test_config_mistakes() -> None:
    with pytest.raises(UnetkitError, match="share one raw value"):
        codec(2, encoding="gray_values", values=[5, 5])
    with pytest.raises(UnetkitError, match="ignore_value"):
        codec(3, ignore_value=1)
    with pytest.raises(UnetkitError, match="0..255"):
        codec(2, encoding="palette", palette=[(0, 0, 0), (300, 0, 0)])


def test_colors() -> None:
    assert codec(3, encoding="palette", palette=PALETTE).colors().tolist() == [list(c) for c in PALETTE]
    table = codec(12).colors()
    assert table.shape == (12, 3) and table.dtype == np.uint8
    assert table[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in table.tolist()}) == 12
