"""The pieces of an HTML report: numbers as tables, pictures as embedded PNGs, the class legend.

Every number is printed from the report dict that goes to JSON (or from the `metrics.csv` row), with one
format (`num`: 4 decimals, '-' for undefined), so the page and the file agree to the printed digit. Pictures
are PNG data URIs (`data:image/png;base64,...`): the page is one file that needs nothing else, offline.
Text from the outside (class names, file names, the config) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

import numpy as np
from PIL import Image

from unetkit.config import IGNORE_INDEX
from unetkit.infer.gallery import Pictured
from unetkit.infer.pictures import IGNORE_COLOR, colorize

ERROR_COLOR = np.array([255, 200, 0], dtype=np.uint8)  # a wrong pixel in the errors picture
MAX_MATRIX_CLASSES = 40  # larger confusion matrices are left to the JSON


def num(value: float | None, digits: int = 4) -> str:
    """A score as the report prints it: `digits` decimals, '-' when undefined (None)."""
    return "-" if value is None else f"{value:.{digits}f}"


def png_uri(picture: np.ndarray | bytes) -> str:
    """A `data:` URI of a PNG: an (H, W, 3) / (H, W) uint8 array is encoded, bytes are taken as PNG as is."""
    if isinstance(picture, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
        picture = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(picture).decode("ascii")


def img(picture: np.ndarray | bytes, alt: str, css: str = "") -> str:
    """An `<img>` of an embedded PNG."""
    return f'<img src="{png_uri(picture)}" alt="{escape(alt)}"{f" class={css!r}" if css else ""}>'


def swatch(color: np.ndarray | tuple[int, int, int]) -> str:
    r, g, b = (int(c) for c in color)
    return f'<span class="sw" style="background:rgb({r},{g},{b})"></span>'


def legend(classes: list[str], colors: np.ndarray) -> str:
    """The class colours of the truth and prediction pictures, plus the two colours that are no class."""
    items = [f"<li>{swatch(colors[i])}{escape(name)}</li>" for i, name in enumerate(classes)]
    items.append(f"<li>{swatch(IGNORE_COLOR)}not labelled (ignored)</li>")
    items.append(f"<li>{swatch(ERROR_COLOR)}errors: predicted class differs from the truth</li>")
    return f'<ul class="legend">{"".join(items)}</ul>'


def table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """A table in a horizontally scrolling box (wide tables stay readable on a phone); cells are HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def cell(text: str, key: str = "", header: bool = False) -> str:
    """One cell; `key` becomes `data-key`, naming which number of the report it shows."""
    tag = "th" if header else "td"
    return f'<{tag}{f" data-key={key!r}" if key else ""}>{text}</{tag}>'


def class_table(report: dict[str, Any], colors: np.ndarray) -> str:
    """IoU, Dice, precision, recall and pixel share per class, from a `unetkit.metrics.scores` result."""
    total = report.get("num_pixels") or 0
    rows = []
    for i, (name, row) in enumerate(report["per_class"].items()):
        share = f"{100 * row['support'] / total:.1f}%" if total else "-"
        rows.append([f'<th data-class="{escape(name)}">{swatch(colors[i])}{escape(name)}</th>',
                     *(cell(num(row[key]), key) for key in ("iou", "dice", "precision", "recall")),
                     cell(share, "share")])
    return table(["class", "IoU", "Dice", "precision", "recall", "pixels"], rows, "classes")


def confusion_table(matrix: list[list[int]], classes: list[str]) -> str:
    """Pixel counts, rows the true class and columns the predicted one; each cell tinted by its share of the
    row (the class's recall on the diagonal), so where a class's pixels go shows at a glance."""
    if len(classes) > MAX_MATRIX_CLASSES:
        return f"<p>{len(classes)} classes: the confusion matrix is in the JSON report.</p>"
    counts = np.asarray(matrix, dtype=np.int64)
    sums = counts.sum(axis=1)
    rows = []
    for i, name in enumerate(classes):
        cells = [cell(escape(name), header=True)]
        for j in range(len(classes)):
            share = counts[i, j] / sums[i] if sums[i] else 0.0
            ink = "#fff" if share > 0.55 else "#111"
            cells.append(f'<td data-key="count" style="background:rgba(49,95,160,{share:.3f});color:{ink}">'
                         f'{counts[i, j]}<small>{100 * share:.1f}%</small></td>')
        rows.append(cells)
    header = ["true \\ predicted", *(escape(c) for c in classes)]
    return table(header, rows, "confusion")


def error_picture(item: Pictured) -> np.ndarray:
    """(h, w, 3): the image dimmed where the prediction is right, red where it is wrong, gray where ignored."""
    out = (item.image.astype(np.float32) * 0.45).astype(np.uint8)
    ignored = item.truth == IGNORE_INDEX
    out[(item.pred != item.truth) & ~ignored] = ERROR_COLOR
    out[ignored] = IGNORE_COLOR
    return out


def gallery_row(item: Pictured, score: float | None, colors: np.ndarray) -> str:
    """image | truth | prediction | errors of one ranked image, with its name and score (from the report)."""
    pictures = [(item.image, "image"), (colorize(item.truth, colors), "truth"),
                (colorize(item.pred, colors), "prediction"), (error_picture(item), "errors")]
    figures = "".join(f"<figure>{img(p, f'{item.name} {what}')}<figcaption>{what}</figcaption></figure>"
                      for p, what in pictures)
    return (f'<div class="shot"><h4><span class="name">{escape(item.name)}</span> '
            f'<span data-key="image-score">{num(score)}</span></h4><div class="quad">{figures}</div></div>')
