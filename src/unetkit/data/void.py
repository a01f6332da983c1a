"""Which mask value marks unlabelled pixels (void), so that training and scores skip them instead of learning
them as one more class.

The pixels alone cannot tell a void value from a class: CamVid-style masks store void as the last index, like
any class. So the user names it (`--ignore 11`, `--ignore 0,0,0` for a colour mask) and the one convention the
values do show is applied by itself: index masks holding the classes 0..K and also 255, far above K, follow the
Pascal VOC / Cityscapes habit of 255 = void. `--ignore none` turns that off.

`with_void` rewrites the `data.mask` mapping and the class names that `data inspect` suggested; the fingerprint
applies it to the training masks and to the test masks alike.
"""

from __future__ import annotations

from typing import Any

from unetkit.errors import UnetkitError

CONVENTIONAL_VOID = 255


def parse_ignore(text: str | None) -> int | tuple[int, int, int] | str | None:
    """`--ignore` as given: None (apply the 255 convention), "none" (no void), a value, or an R,G,B colour."""
    if text is None or text.strip().lower() == "none":
        return None if text is None else "none"
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise UnetkitError(f"--ignore {text}: give a mask value (e.g. 11), a colour R,G,B (e.g. 0,0,0) or none"
                           ) from None
    if len(numbers) == 3:
        return (numbers[0], numbers[1], numbers[2])
    if len(numbers) != 1:
        raise UnetkitError(f"--ignore {text}: give one value or three (R,G,B)")
    return numbers[0]


def with_void(mask: dict[str, Any], names: list[str], ignore: int | tuple[int, int, int] | str | None
              ) -> tuple[dict[str, Any], list[str], str | None]:
    """(`data.mask`, class names, a note saying why) once the void value is taken out of the classes; the note
    is None when nothing is void."""
    encoding = mask["encoding"]
    if ignore == "none" or encoding in ("binary", "instances"):
        if ignore not in (None, "none"):
            raise UnetkitError(f"--ignore {ignore}: the masks are {encoding}; there is no class value to ignore")
        return mask, names, None
    if encoding == "palette":
        colours = [tuple(c) for c in mask["palette"]]
        if ignore is None:
            return mask, names, None
        if not isinstance(ignore, tuple) or ignore not in colours:
            raise UnetkitError(f"--ignore {ignore}: not one of the mask colours {colours}")
        kept = [list(c) for c in colours if c != ignore]
        return ({"encoding": "palette", "palette": kept, "ignore_color": list(ignore)}, names[:len(kept)],
                f"colour {ignore} is void (--ignore): skipped by training and scores")
    values = list(range(len(names))) if encoding == "index" else list(mask["values"])
    if ignore is None:
        rest = [v for v in values if v != CONVENTIONAL_VOID]
        if len(rest) == len(values) or rest != list(range(len(rest))) or len(rest) < 2:
            return mask, names, None
        ignore = CONVENTIONAL_VOID
        why = (f"values 0..{len(rest) - 1} and 255: 255 is read as void (unlabelled), the index-mask convention; "
               "--ignore none learns it as a class")
    else:
        if not isinstance(ignore, int) or ignore not in values:
            raise UnetkitError(f"--ignore {ignore}: not one of the mask values {values}")
        why = f"value {ignore} is void (--ignore): skipped by training and scores"
    rest = [v for v in values if v != ignore]
    if len(rest) < 2:
        raise UnetkitError(f"--ignore {ignore}: that leaves {len(rest)} class; segmentation needs two")
    out = ({"encoding": "index", "ignore_value": ignore} if rest == list(range(len(rest)))
           else {"encoding": "gray_values", "values": rest, "ignore_value": ignore})
    return out, [f"class_{i}" for i in range(len(rest))], why
