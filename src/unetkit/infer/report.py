"""One self-contained HTML page per run (`report.html`) and per evaluation (`evaluation_NAME.html`).

What a reader needs to judge a model, in one file they can mail or open on a phone: the scores (headline,
per-class table, confusion matrix, object scores), the training curves, the best and worst images with their
errors, the data the numbers come from, and the exact config. The page is rendered from the very report dict
that is written to JSON (for a run: the scores whose rounding is the last `metrics.csv` row), never from a
second computation. Standard library only (`string.Template`, `html.escape`); inline CSS, images as data
URIs, no script and nothing fetched, so it reads the same offline. The layout is one column that narrows to
a phone's width (viewport meta tag; wide tables scroll sideways inside their box).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from unetkit.atomic import atomic_write
from unetkit.infer.gallery import Gallery, Pictured
from unetkit.infer.report_html import cell, class_table, confusion_table, gallery_row, img, legend, num, table

CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1b1f24;background:#f6f7f9}main{max-width:1080px;margin:0 auto;padding:12px}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin:1.4em 0 .5em;border-bottom:1px solid #d5d9de}
h4{margin:.6em 0 .3em;font-size:1em}section{background:#fff;border-radius:6px;padding:4px 14px 12px;
margin:10px 0;box-shadow:0 1px 2px #0001}.facts{display:flex;flex-wrap:wrap;gap:8px;padding:0;list-style:none}
.facts li{background:#eef1f5;border-radius:4px;padding:4px 8px}.big{font-size:1.5em;font-weight:600}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}table{border-collapse:collapse;
margin:4px 0}th,td{padding:4px 8px;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}
th:first-child{text-align:left}td small{display:block;font-size:.75em;opacity:.8}
.sw{display:inline-block;width:.9em;height:.9em;margin-right:6px;vertical-align:-1px;border:1px solid #0003}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;padding:0;list-style:none;margin:6px 0}
img{max-width:100%;height:auto}.quad{display:grid;max-width:780px;grid-template-columns:repeat(4,minmax(0,1fr));gap:6px}
.quad img{width:100%;image-rendering:pixelated;border:1px solid #d5d9de}figure{margin:0}
figcaption{font-size:.8em;color:#555;text-align:center}pre{background:#f0f2f5;padding:8px;overflow-x:auto;
font-size:.85em;max-height:36em}.shot{margin-bottom:10px}
@media (max-width:600px){.quad{grid-template-columns:repeat(2,minmax(0,1fr))}main{padding:6px}
section{padding:2px 8px 8px}}
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head>
<body><main>
<h1>$title</h1>
$body
</main></body></html>
""")


@dataclass
class ReportPage:
    """What one page shows. `report` is the dict written to JSON: a `unetkit.metrics.scores` result with
    `confusion_matrix` and, when present, `gallery` (`Gallery.as_dict`), `loss`, `instance_scores`,
    `em_scores`; `gallery` holds the pictures of the images `report["gallery"]` names."""

    title: str
    report: dict[str, Any]
    classes: list[str]
    colors: np.ndarray  # (num_classes, 3) uint8
    facts: list[tuple[str, str]] = field(default_factory=list)  # (label, value) lines at the top
    config_yaml: str = ""
    data: dict[str, Any] | None = None  # `unetkit.infer.report_data.data_summary`
    gallery: Gallery | None = None
    curves: bytes | None = None  # a PNG of the training curves


def render(page: ReportPage) -> str:
    """The whole HTML document of `page`."""
    parts = [_headline(page), _section("Scores per class", class_table(page.report, page.colors)),
             _section("Confusion matrix", "<p>Pixels: rows are the true class, columns the predicted one; the "
                      "tint and the percentage are the share of the row.</p>"
                      + confusion_table(page.report["confusion_matrix"], page.classes))]
    if page.report.get("instance_scores"):
        parts.append(_section("Object scores", _objects(page.report["instance_scores"])))
    if page.report.get("em_scores"):
        parts.append(_section("EM scores", _key_values(page.report["em_scores"], "em")))
    if page.gallery is not None and "gallery" in page.report:
        parts.append(_section("Best and worst images", _gallery(page)))
    if page.curves is not None:
        parts.append(_section("Training curves", img(page.curves, "loss and mIoU per epoch")))
    if page.data is not None:
        parts.append(_section("Data", _data(page.data)))
    if page.config_yaml:
        parts.append(_section("Config", f"<pre>{escape(page.config_yaml)}</pre>"))
    return PAGE.substitute(title=escape(page.title), css=CSS, body="\n".join(parts))


def write_html_report(page: ReportPage, path: Path) -> Path:
    """Render `page` into `path` atomically (a reader finds the previous page or the new one, whole)."""
    text = render(page)
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def _headline(page: ReportPage) -> str:
    r = page.report
    facts = [f'<li>mIoU <span class="big" id="miou">{num(r.get("miou"))}</span></li>',
             f'<li>mean Dice <span id="mean-dice">{num(r.get("mean_dice"))}</span></li>',
             f'<li>pixel accuracy <span id="pixel-accuracy">{num(r.get("pixel_accuracy"))}</span></li>']
    if r.get("loss") is not None:
        facts.append(f'<li>loss <span id="loss">{num(r["loss"])}</span></li>')
    facts += [f"<li>{escape(label)}: {escape(value)}</li>" for label, value in page.facts]
    return f'<section><ul class="facts">{"".join(facts)}</ul></section>'


def _gallery(page: ReportPage) -> str:
    """The best images, then the worst, each row image | truth | prediction | errors."""
    ranked = page.report["gallery"]
    kept: dict[str, Pictured] = {p.name: p for p in page.gallery.best() + page.gallery.worst()}
    parts = [f"<p>Each image is scored on its own pixels ({escape(ranked['score'])}); "
             f"{len(ranked['per_image'])} images were scored.</p>",
             legend(page.classes, page.colors)]
    for title, entries in (("Best", ranked["best"]), ("Worst", ranked["worst"])):
        rows = [gallery_row(kept[e["image"]], e["score"], page.colors) for e in entries if e["image"] in kept]
        if rows:
            parts.append(f'<h3 data-key="{title.lower()}">{title}</h3>' + "".join(rows))
    return "".join(parts)


def _objects(objects: dict[str, Any]) -> str:
    """Object precision, recall, F1, PQ, DSB score, AJI and the counts, from `instance_scores`."""
    names = [("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("panoptic_quality", "PQ"),
             ("dsb_score", "DSB score"), ("aji", "AJI")]
    scores = [[cell(label, header=True), cell(num(objects.get(key)), key)] for key, label in names]
    counts = [[cell(label, header=True), cell(str(objects[key]), key)]
              for key, label in (("tp", "matched objects (IoU > 0.5)"), ("fp", "false objects"),
                                 ("fn", "missed objects"))]
    total = [[cell("true / predicted objects", header=True),
              cell(f"{sum(objects['true_counts'])} / {sum(objects['predicted_counts'])}", "objects")]]
    return table(["object score", "value"], scores + counts + total, "objects")


def _key_values(values: dict[str, Any], css: str) -> str:
    rows = [[cell(escape(str(k)), header=True), cell(num(v) if isinstance(v, float) else escape(str(v)), str(k))]
            for k, v in values.items()]
    return table(["score", "value"], rows, css)


def _data(data: dict[str, Any]) -> str:
    """Splits (images, sizes) and classes (pixel share, masks holding them)."""
    splits = table(["split", "images", "sizes (HxW)"],
                   [[cell(escape(s["split"]), header=True), cell(str(s["images"]), "images"), cell(s["sizes"])]
                    for s in data["splits"]], "splits")
    classes = [[cell(escape(c["name"]), header=True),
                cell("-" if c["share"] is None else f"{100 * c['share']:.2f}%"),
                cell("-" if c["masks"] is None else str(c["masks"]))] for c in data["classes"]]
    where = escape(data["classes"][0]["of"]) if data["classes"] else ""
    return (splits + f"<p>{data['channels']} channel(s); masks encoded as {escape(data['mask_encoding'])}.</p>"
            + table(["class", f"share of {where} pixels", "masks holding it"], classes, "data-classes"))
