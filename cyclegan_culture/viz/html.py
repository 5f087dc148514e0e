"""Static HTML pages built with dominate: training visuals (web/index.html) and test galleries.

dominate escapes every text node and attribute, so file names, run names and culture.json fields show as text
(a file called ``<b>x.jpg`` reads as such, it is never markup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

import dominate
from dominate import tags

from cyclegan_culture.files import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.grid { border-collapse: collapse; }
table.grid td, table.grid th { padding: 4px 8px; vertical-align: top; text-align: center; }
table.grid img { max-width: 256px; max-height: 256px; display: block; margin: auto; }
p.caption { margin: 2px 0; font-size: 0.85em; overflow-wrap: anywhere; max-width: 256px; }
table.options td { padding: 0 10px 0 0; font-family: monospace; font-size: 0.85em; text-align: left; }
.culture { background: #f6f3ea; padding: 0.6em 1em; border-left: 4px solid #b33; max-width: 60em; }
"""


@dataclass
class Cell:
    """One image in a row: its path relative to the page, a caption, and where a click leads."""
    image: str
    caption: str
    link: str | None = None


@dataclass
class Section:
    heading: str
    columns: Sequence[str] = ()
    rows: list[list[Cell]] = field(default_factory=list)


def url(relative_path: str) -> str:
    """A relative path as a URL: spaces, '#', '?' and non-ASCII letters are percent-encoded."""
    return quote(relative_path.replace("\\", "/"))


def render_page(title: str, sections: Iterable[Section], intro: Iterable[tags.html_tag] = (),
                refresh_seconds: int | None = None, image_size: int = 256) -> str:
    """``image_size``: the largest width and height images are shown at (the reference's --display_winsize)."""
    doc = dominate.document(title=title)
    with doc.head:
        tags.meta(charset="utf-8")
        tags.style(STYLE.replace("256px", f"{int(image_size)}px"))
        if refresh_seconds:
            tags.meta(http_equiv="refresh", content=str(refresh_seconds))
    # built with explicit add() calls, not `with` blocks, so the order is exactly the order written here
    doc.body.add(tags.h1(title))
    for element in intro:
        doc.body.add(element)
    for section in sections:
        doc.body.add(tags.h3(section.heading))
        table = doc.body.add(tags.table(cls="grid"))
        if section.columns:
            table.add(tags.tr([tags.th(column) for column in section.columns]))
        for row in section.rows:
            cells = []
            for i, cell in enumerate(row):
                # a cell under a column header needs no caption repeating it; the header is its alt text
                alt = cell.caption or (section.columns[i] if i < len(section.columns) else "")
                td = tags.td(tags.a(tags.img(src=url(cell.image), alt=alt, loading="lazy"),
                                    href=url(cell.link or cell.image)))
                if cell.caption:
                    td.add(tags.p(cell.caption, cls="caption"))
                cells.append(td)
            table.add(tags.tr(cells))
    return doc.render()


def write_page(path: Path, title: str, sections: Iterable[Section], intro: Iterable[tags.html_tag] = (),
               refresh_seconds: int | None = None, image_size: int = 256) -> Path:
    atomic_write_text(Path(path), render_page(title, sections, intro, refresh_seconds, image_size))
    return Path(path)


def culture_block(culture: dict) -> tags.html_tag:
    """Name, native name, region, period and description of the run's culture."""
    block = tags.div(cls="culture")
    block.add(tags.h2(f"{culture.get('name', '')} {culture.get('native_name', '')}".strip()))
    facts = ", ".join(str(culture[k]) for k in ("region", "period") if culture.get(k))
    if facts:
        block.add(tags.p(facts))
    if culture.get("description"):
        block.add(tags.p(culture["description"]))
    return block


def options_table(options: dict, keys: Sequence[str] | None = None) -> tags.html_tag:
    details = tags.details()
    details.add(tags.summary("options"))
    table = tags.table(cls="options")
    for key in keys or sorted(options):
        if key in options:
            table.add(tags.tr(tags.td(key), tags.td(str(options[key]))))
    details.add(table)
    return details
