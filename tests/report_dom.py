"""Reading the numbers back out of a report page (the file, or the DOM a browser rendered from it).

The page marks each number with what it is: `id="miou"`, `data-key="iou"` inside the row of
`data-class="NAME"`, `data-key="count"` for confusion cells, `data-key="image-score"` for gallery scores.
`read_page` returns them as printed, so a test compares text with the JSON formatted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    ids: dict[str, str] = field(default_factory=dict)  # id -> first text inside
    per_class: dict[str, dict[str, str]] = field(default_factory=dict)  # class -> data-key -> text
    keyed: list[tuple[str, str]] = field(default_factory=list)  # (data-key, text) in document order
    images: list[str] = field(default_factory=list)  # src of every <img>
    body: dict[str, str] = field(default_factory=dict)  # attributes of <body>
    scripts: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self.row_class: str | None = None
        self.open: tuple[str, str] | None = None  # ("id" | "key", name) waiting for its first text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr":
            self.row_class = None
        if "data-class" in a:
            self.row_class = a["data-class"]
        if tag == "img":
            self.page.images.append(a.get("src", ""))
        if tag == "body":
            self.page.body = a
        if tag == "script":
            self.page.scripts += 1
        if "id" in a:
            self.open = ("id", a["id"])
        elif "data-key" in a:
            self.open = ("key", a["data-key"])

    def handle_data(self, data: str) -> None:
        if self.open is None or not data.strip():
            return
        kind, name = self.open
        text = data.strip()
        if kind == "id":
            self.page.ids.setdefault(name, text)
        else:
            self.page.keyed.append((name, text))
            if self.row_class is not None:
                self.page.per_class.setdefault(self.row_class, {}).setdefault(name, text)
        self.open = None


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    return reader.page


def values(page: Page, key: str) -> list[str]:
    """Every text marked `data-key=key`, in document order."""
    return [text for name, text in page.keyed if name == key]
