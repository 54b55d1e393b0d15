"""The report as a list of blocks, rendered twice: a self-contained HTML page (every picture embedded
as a data: URI, so it opens with no network and no files beside it) and Markdown (pictures by
relative path, next to it). Sections only build blocks; nothing here computes a number.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import Path


@dataclasses.dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str | None = None


@dataclasses.dataclass
class Text:
    """A paragraph; `**bold**` and `` `code` `` are the only markup."""

    text: str


@dataclasses.dataclass
class Code:
    text: str


@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[list]
    anchor: str | None = None  # the HTML table's id (tests find tables by it)
    caption: str | None = None
    digits: int = 3


@dataclasses.dataclass
class Picture:
    path: Path  # a file inside the report folder
    alt: str
    width: int | None = None


@dataclasses.dataclass
class Tile:
    path: Path
    lines: list[str]


@dataclasses.dataclass
class Gallery:
    title: str
    tiles: list[Tile]
    anchor: str | None = None


@dataclasses.dataclass
class Row:
    """Blocks shown side by side in HTML (one after the other in Markdown)."""

    blocks: list


def cell(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "-"
    return str(value)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _align(value) -> str:
    return ' class="n"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_block(block, root: Path) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{block.anchor}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, Table):
        anchor = f' id="{block.anchor}"' if block.anchor else ""
        caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
        body = "".join("<tr>" + "".join(f"<td{_align(v)}>{_inline(cell(v, block.digits))}</td>" for v in row) + "</tr>"
                       for row in block.rows)
        return f"<table{anchor}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Picture):
        width = f' style="max-width:{block.width}px"' if block.width else ""
        return (f'<figure><img src="{_data_uri(root / block.path)}" alt="{html.escape(block.alt)}"'
                f' data-file="{html.escape(str(block.path))}"{width}><figcaption>{html.escape(block.alt)}'
                "</figcaption></figure>")
    if isinstance(block, Gallery):
        anchor = f' id="{block.anchor}"' if block.anchor else ""
        tiles = "".join(
            f'<div class="tile"><img src="{_data_uri(root / tile.path)}" alt="{html.escape(tile.lines[0])}"'
            f' data-file="{html.escape(str(tile.path))}">'
            + "".join(f"<div>{html.escape(line)}</div>" for line in tile.lines) + "</div>"
            for tile in block.tiles)
        return f'<h4>{html.escape(block.title)}</h4><div class="gallery"{anchor}>{tiles}</div>'
    if isinstance(block, Row):
        return '<div class="row">' + "".join(f"<div>{_html_block(b, root)}</div>" for b in block.blocks) + "</div>"
    raise TypeError(f"unknown block {block!r}")


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #345; } h2 { border-bottom: 1px solid #bbb; margin-top: 2.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.n { text-align: right; } th { background: #eef2f6; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
figure { margin: 0.8em 0; } img { max-width: 100%; } figcaption { font-size: 0.8em; color: #555; }
.row { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { width: 128px; font-size: 0.72em; overflow-wrap: anywhere; }
.tile img { height: 96px; display: block; margin-bottom: 2px; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; }
nav ol { columns: 2; }
"""


def render_html(title: str, blocks: list, root: Path) -> str:
    toc = "".join(f'<li><a href="#{b.anchor}">{html.escape(b.text)}</a></li>' for b in blocks
                  if isinstance(b, Heading) and b.level == 2 and b.anchor)
    body = "\n".join(_html_block(block, root) for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav><ol>{toc}</ol></nav>\n"
            f"{body}\n</body></html>\n")


def _md_block(block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + block.text
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Code):
        return "```\n" + block.text + "\n```"
    if isinstance(block, Table):
        lines = [f"**{block.caption}**", ""] if block.caption else []
        lines += ["| " + " | ".join(block.columns) + " |", "|" + "---|" * len(block.columns)]
        lines += ["| " + " | ".join(cell(v, block.digits).replace("|", "\\|") for v in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Picture):
        return f"![{block.alt}]({block.path.as_posix()})"
    if isinstance(block, Gallery):
        lines = [f"#### {block.title}", ""]
        lines += [f"![{tile.lines[0]}]({tile.path.as_posix()}) " + " · ".join(tile.lines) + "  " for tile in block.tiles]
        return "\n".join(lines)
    if isinstance(block, Row):
        return "\n\n".join(_md_block(b) for b in block.blocks)
    raise TypeError(f"unknown block {block!r}")


def render_markdown(title: str, blocks: list) -> str:
    return f"# {title}\n\n" + "\n\n".join(_md_block(block) for block in blocks) + "\n"
