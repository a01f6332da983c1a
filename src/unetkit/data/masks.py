"""Mask encodings: raw mask files <-> class-index maps.

Datasets store labels in four common ways (`MaskConfig.encoding`): two-value binary masks, class indices,
RGB colours per class, or arbitrary gray values per class. `MaskCodec` turns each into one internal form,
a `(H, W)` uint8 map of class indices with ignored pixels set to `IGNORE_INDEX`, and writes predictions back
in the dataset's own encoding so they open next to the ground truth. Any raw value the config did not
declare is an error naming the file: silently mapping it to a class would train on wrong labels.
"""

from __future__ import annotations

import colorsys

import numpy as np

from unetkit.config import IGNORE_INDEX, MaskConfig
from unetkit.data.instance_labels import instance_target
from unetkit.errors import UnetkitError

_INVALID = -1  # lookup-table entry for raw values the encoding does not declare
_MAX_RAW = 65536  # gray masks are at most 16-bit
MAX_MASK_VALUES = 32  # more distinct values than this and a "mask" is most likely an image
NEAR_BINARY_SHARE = 0.95  # share of pixels at the two extremes for a mask to count as almost binary


def extreme_share(values: np.ndarray, counts: np.ndarray) -> float:
    """Share of pixels within an eighth of the value range of the lowest or the highest value."""
    low, high = values.min(), values.max()
    span = (high - low) / 8
    return float(counts[(values <= low + span) | (values >= high - span)].sum() / counts.sum())


def near_binary_threshold(values: np.ndarray, counts: np.ndarray) -> int | None:
    """A `data.mask.threshold` for gray masks that are binary up to compression or anti-aliasing, else None.

    `values` (K,) distinct gray values, `counts` (K,) their pixels. Almost binary: more than two values, the
    lowest and highest far apart (at least 64 levels), at least 95% of the pixels within an eighth of that
    range of one of them, and at most a quarter of the pixels off the two extremes (a JPEG of a 0/255 mask
    keeps almost every pixel at 0-8 or 247-255). The suggested threshold is the midpoint.
    """
    if len(values) <= 2:
        return None
    low, high = int(values.min()), int(values.max())
    span = high - low
    if span < 64:
        return None
    if extreme_share(values, counts) < NEAR_BINARY_SHARE:
        return None
    strays = counts[(values != low) & (values != high)].sum()
    if strays > 0.25 * counts.sum():  # compression noise touches a few pixels, not a quarter of them
        return None
    return (low + high) // 2


def _pack(rgb: np.ndarray) -> np.ndarray:
    """`(..., 3)` colours -> `(...)` int32 keys 0xRRGGBB, so colours compare as single numbers."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class MaskCodec:
    """Decode mask files to class indices and encode class indices back, for one `MaskConfig`."""

    def __init__(self, cfg: MaskConfig, num_classes: int) -> None:
        if not 2 <= num_classes <= IGNORE_INDEX:
            raise UnetkitError(f"data.classes has {num_classes} classes; unetkit supports 2 to {IGNORE_INDEX}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.encoding = cfg.encoding
        # raw value (gray encodings) or packed colour (palette) of each class, and of ignored pixels
        self._class_raw: list[int] = self._declared_values()
        self._ignore_raw: int | None = None
        if self.encoding == "palette" and cfg.ignore_color is not None:
            self._ignore_raw = int(_pack(np.array(cfg.ignore_color)))
        elif self.encoding != "palette" and cfg.ignore_value is not None:
            self._ignore_raw = cfg.ignore_value
        pairs = [(raw, cls) for cls, raw in enumerate(self._class_raw)]
        if self.encoding == "binary" and cfg.foreground_value == 0:
            pairs.append((1, 0))  # foreground 0: background may be stored as 255 or as 1
        if self._ignore_raw is not None:
            if self._ignore_raw in self._class_raw:
                key = "ignore_color" if self.encoding == "palette" else "ignore_value"
                raise UnetkitError(f"data.mask.{key} is also the raw value of a class; pick one no class uses")
            pairs.append((self._ignore_raw, IGNORE_INDEX))
        self._keys, self._classes = self._build_table(pairs)
        if self.encoding != "palette":
            self._lut = np.full(_MAX_RAW, _INVALID, dtype=np.int16)
            for raw, cls in pairs:
                self._lut[raw] = cls

    def _declared_values(self) -> list[int]:
        cfg, n = self.cfg, self.num_classes
        if self.encoding == "binary":
            fg = cfg.foreground_value
            return [0 if fg != 0 else 255, fg]
        if self.encoding in ("index", "instances"):
            return list(range(n))
        if self.encoding == "gray_values":
            values = list(cfg.values or [])
        else:
            colours = np.array(cfg.palette or [], dtype=np.int64).reshape(-1, 3)
            if colours.size and (colours.min() < 0 or colours.max() > 255):
                raise UnetkitError(f"data.mask.palette has colours outside 0..255: {cfg.palette}")
            values = [int(k) for k in _pack(colours)]
        if len(values) != n:
            key = "values" if self.encoding == "gray_values" else "palette"
            raise UnetkitError(f"data.mask.{key} has {len(values)} entries for {n} classes; give one per class")
        if len(set(values)) != n:
            raise UnetkitError(f"data.mask: two classes share one raw value/colour in {values}; make them distinct")
        return values

    def _build_table(self, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        if self.encoding != "palette":
            bad = [raw for raw, _ in pairs if not 0 <= raw < _MAX_RAW]
            if bad:
                raise UnetkitError(f"data.mask: raw values {bad} are outside 0..{_MAX_RAW - 1}")
        table = dict(pairs)
        keys = np.array(sorted(table), dtype=np.int64)
        return keys, np.array([table[k] for k in keys], dtype=np.uint8)

    def decode(self, raw: np.ndarray, path: str = "mask") -> np.ndarray:
        """Raw mask `(H, W)` or `(H, W, 3)` -> `(H, W)` uint8 class indices, ignored pixels = `IGNORE_INDEX`."""
        raw = self._check_layout(self._as_integer(raw, path), path)
        if self.encoding == "instances":
            return self._instances(raw, path)
        if self.encoding == "binary" and self.cfg.threshold is not None:
            return self._threshold(raw)
        if self.encoding == "palette":
            keys = _pack(raw)
            pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
            found = self._keys[pos] == keys
            out = self._classes[pos]
            invalid = ~found
        else:
            if raw.dtype in (np.uint8, np.uint16):
                looked_up = self._lut[raw]
                invalid = looked_up == _INVALID
            else:  # wider or signed integers: values outside the table are undeclared by definition
                in_range = (raw >= 0) & (raw < _MAX_RAW)
                looked_up = self._lut[np.where(in_range, raw, 0)]
                invalid = ~in_range | (looked_up == _INVALID)
            out = looked_up.astype(np.uint8)
            keys = raw
        if invalid.any():
            raise self._unexpected(np.unique(keys[invalid]), path, raw)
        return out

    def _instances(self, raw: np.ndarray, path: str) -> np.ndarray:
        """An instance label image -> object / background (2 classes) or background / interior / boundary (3)."""
        if raw.ndim != 2:
            raise UnetkitError(f"{path}: an instance label image must have one channel, not {raw.shape[2]}")
        if self.num_classes not in (2, 3):
            raise UnetkitError(f"data.mask.encoding 'instances' trains 2 classes (background, object) or 3 "
                               f"(background, interior, boundary), not {self.num_classes}")
        if raw.size and raw.min() < 0:
            raise UnetkitError(f"{path}: instance labels must be 0 (background) or positive object ids")
        ignored = raw == self._ignore_raw if self._ignore_raw is not None else None
        labels = np.where(ignored, 0, raw) if ignored is not None else raw
        out = instance_target(labels, self.num_classes, self.cfg.boundary_px)
        if ignored is not None:
            out[ignored] = IGNORE_INDEX
        return out

    def _threshold(self, raw: np.ndarray) -> np.ndarray:
        """Binary masks read with `data.mask.threshold`: raw > threshold is the high value (255), the rest the
        low value (0); `foreground_value` then says which of the two is class 1."""
        high = raw > self.cfg.threshold
        out = (high if self.cfg.foreground_value != 0 else ~high).astype(np.uint8)
        if self._ignore_raw is not None:
            out[raw == self._ignore_raw] = IGNORE_INDEX
        return out

    @staticmethod
    def _as_integer(raw: np.ndarray, path: str) -> np.ndarray:
        if raw.dtype == np.bool_:
            return raw.astype(np.uint8)
        if np.issubdtype(raw.dtype, np.floating):
            if not np.array_equal(raw, np.round(raw)):
                raise UnetkitError(f"{path}: mask holds non-integer values; masks must store whole numbers")
            return raw.astype(np.int64)
        return raw

    def _check_layout(self, raw: np.ndarray, path: str) -> np.ndarray:
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw = raw[..., :3]
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[..., 0]
        if not (raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 3)):
            raise UnetkitError(f"{path}: mask has shape {raw.shape}; expected (H, W) or (H, W, 3)")
        if self.encoding == "palette":
            if raw.ndim == 2:
                raise UnetkitError(
                    f"{path}: mask is single-channel but data.mask.encoding is 'palette'; declare encoding: index "
                    "or gray_values (a paletted PNG stores class indices, read as encoding: index)"
                )
            return raw
        if raw.ndim == 3 and self.encoding == "binary" and self.cfg.threshold is not None:
            return raw.max(axis=2)  # a compressed RGB copy of a binary mask: channels differ a little
        if raw.ndim == 3:
            if not ((raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all()):
                raise UnetkitError(
                    f"{path}: mask is RGB but data.mask.encoding is '{self.encoding}'; declare encoding: palette"
                )
            raw = raw[..., 0]  # an RGB file of gray values
        return raw

    def _unexpected(self, values: np.ndarray, path: str, raw: np.ndarray) -> UnetkitError:
        if self.encoding == "palette":
            shown = [f"({v >> 16}, {(v >> 8) & 255}, {v & 255})" for v in values[:5].tolist()]
            declared = f"palette {[tuple(c) for c in self.cfg.palette or []]}"
            if self.cfg.ignore_color is not None:
                declared += f" and ignore_color {tuple(self.cfg.ignore_color)}"
        else:
            shown = [str(v) for v in values[:5].tolist()]
            names = {"binary": "binary values", "index": "index values", "gray_values": "values"}
            declared = f"{names[self.encoding]} {self._class_raw}"
            if self.encoding == "binary" and self.cfg.foreground_value == 0:
                declared += " (or 1 for background)"
            if self.cfg.ignore_value is not None:
                declared += f" and ignore_value {self.cfg.ignore_value}"
        more = f" ({len(values)} distinct in all)" if len(values) > 5 else ""
        found, counts = np.unique(raw, return_counts=True) if self.encoding != "palette" else (values, values)
        threshold = near_binary_threshold(found, counts) if self.encoding == "binary" else None
        if threshold is not None:
            low, high = int(found.min()), int(found.max())
            extremes = extreme_share(found, counts)
            return UnetkitError(
                f"{path}: mask holds {len(found)} values from {low} to {high}, {extremes:.1%} of pixels near {low} "
                f"or {high}: an almost binary mask (JPEG-compressed or anti-aliased); set data.mask.threshold: "
                f"{threshold} to read values above {threshold} as {high}")
        return UnetkitError(
            f"{path}: mask holds {', '.join(shown)}{more}, not declared by data.mask.encoding "
            f"'{self.encoding}' ({declared}); fix the mask or data.mask"
        )

    def encode(self, index: np.ndarray) -> np.ndarray:
        """`(H, W)` class indices -> the dataset's encoding: `(H, W)` uint8/uint16, or `(H, W, 3)` uint8 colours.

        `IGNORE_INDEX` pixels become the declared ignore value/colour, so `decode(encode(x)) == x`.
        """
        raws = list(self._class_raw)
        table = np.zeros(IGNORE_INDEX + 1, dtype=np.int64)
        table[: self.num_classes] = raws
        allowed = np.zeros(IGNORE_INDEX + 1, dtype=bool)
        allowed[: self.num_classes] = True
        if self._ignore_raw is not None:
            table[IGNORE_INDEX] = self._ignore_raw
            allowed[IGNORE_INDEX] = True
        if index.size and (index.min() < 0 or index.max() > IGNORE_INDEX or not allowed[index].all()):
            raise ValueError(f"class indices must be in 0..{self.num_classes - 1}, got {np.unique(index)}")
        out = table[index]
        if self.encoding == "palette":
            return np.stack([(out >> 16) & 255, (out >> 8) & 255, out & 255], axis=-1).astype(np.uint8)
        return out.astype(np.uint8 if table.max() <= 255 else np.uint16)

    def colors(self) -> np.ndarray:
        """`(num_classes, 3)` uint8 display colours: the palette when declared, else distinct hues, class 0 black."""
        if self.encoding == "palette":
            return np.array(self.cfg.palette, dtype=np.uint8)
        colours = [(0, 0, 0)]
        for i in range(1, self.num_classes):
            # golden-ratio hue steps keep neighbouring classes far apart on the colour wheel
            r, g, b = colorsys.hsv_to_rgb(((i - 1) * 0.618034) % 1.0, 0.8, 0.95)
            colours.append((round(r * 255), round(g * 255), round(b * 255)))
        return np.array(colours, dtype=np.uint8)
