"""A small document model for the sweep report: a list of blocks rendered to Markdown and to self-contained HTML.

Why self-contained: MLflow 3.17 shows an HTML artifact in a sandboxed iframe loaded from a ``blob:`` URL, where a
relative ``<img src='figures/x.png'>`` resolves to nothing (every figure showed as its alt text). The HTML
therefore carries its figures as ``data:`` URIs, and opens the same from disk, from MLflow, or as an e-mail
attachment. MLflow's Markdown preview draws only images with an absolute http(s) address (a relative one shows
as the text ``[alt](figures/x.png)``), so the Markdown names its figures by a caller-given URL function (the
tracking server's artifact endpoint, when there is one) or relative paths beside the file otherwise.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "to_html", "to_markdown"]

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass
class Block:
    """kind: "h1", "h2", "p" (a paragraph; lines starting with "- " are list items), "md_table" (our Markdown
    tables, with header lines before them), "img" (text: the image's path relative to the report's folder),
    "caption" (a figure's caption, after its "img"), "code"."""

    kind: str
    text: str


def to_markdown(blocks: list[Block], image_url: Callable[[str], str] | None = None) -> str:
    """The blocks as Markdown; images as ``![name](image_url(path))`` (default: the relative path)."""
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind in ("p", "md_table"):
            out.append(b.text)
        elif b.kind == "caption":
            out.append(f"*{b.text}*")
        elif b.kind == "img":
            out.append(f"![{Path(b.text).stem}]({image_url(b.text) if image_url else b.text})")
        elif b.kind == "code":
            out.append(f"```\n{b.text}\n```")
        else:
            raise ValueError(f"to_markdown: unknown block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escaped text with our Markdown's inline marks: **bold** and `code`."""
    out, code, bold = [], False, False
    for part in _split_marks(text):
        if part == "`":
            out.append("</code>" if code else "<code>")
            code = not code
        elif part == "**" and not code:
            out.append("</b>" if bold else "<b>")
            bold = not bold
        else:
            out.append(html.escape(part))
    if code:
        out.append("</code>")
    if bold:
        out.append("</b>")
    return "".join(out)


def _split_marks(text: str) -> list[str]:
    parts, i, start = [], 0, 0
    while i < len(text):
        mark = "**" if text.startswith("**", i) else "`" if text[i] == "`" else None
        if mark:
            parts += [text[start:i], mark]
            i += len(mark)
            start = i
        else:
            i += 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _lines_to_html(lines: list[str]) -> str:
    """Paragraph lines: runs of "- " lines become a list, other lines paragraphs."""
    out, items = [], []
    for line in [*lines, ""]:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)


def _md_table_to_html(text: str) -> str:
    """Our own Markdown tables (lines before the | rows | are paragraphs or list items) to HTML."""
    rows, before = [], []
    align: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                align = ["right" if c.endswith(":") else "left" for c in cells]
            else:
                rows.append(cells)
        else:
            before.append(line)

    def cell(c: str, tag: str, j: int) -> str:
        style = f" style='text-align:{align[j]}'" if j < len(align) else ""
        return f"<{tag}{style}>{_inline(c)}</{tag}>"

    table = ""
    if rows:
        head = "".join(cell(c, "th", j) for j, c in enumerate(rows[0]))
        body = "".join("<tr>" + "".join(cell(c, "td", j) for j, c in enumerate(r)) + "</tr>" for r in rows[1:])
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return _lines_to_html(before) + table


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"to_html: cannot embed {path.name}: expected one of {sorted(_MIME)}")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:0.5em 0;display:block;overflow-x:auto;max-width:100%}"
          "td,th{border:1px solid #ccc;padding:3px 8px}"
          "figure{margin:1.5em 0}img{max-width:100%;height:auto}figcaption{color:#444;font-size:0.9em}"
          "pre{background:#f6f6f6;padding:8px;overflow-x:auto}code{background:#f6f6f6}")


def to_html(blocks: list[Block], title: str, root: Path) -> str:
    """The blocks as one self-contained HTML page: every "img" block's file (relative to root) is embedded as a
    data: URI, so the page needs nothing beside it."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>"]
    for i, b in enumerate(blocks):
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(_lines_to_html(b.text.splitlines()))
        elif b.kind == "md_table":
            parts.append(_md_table_to_html(b.text))
        elif b.kind == "img":
            path = root / b.text
            caption = blocks[i + 1].text if i + 1 < len(blocks) and blocks[i + 1].kind == "caption" else ""
            parts.append(f"<figure><img src='{_data_uri(path)}' alt='{html.escape(path.stem)}' "
                         f"data-file='{html.escape(b.text)}'>"
                         + (f"<figcaption>{_inline(caption)}</figcaption>" if caption else "") + "</figure>")
        elif b.kind == "caption":
            continue  # drawn with its image
        elif b.kind == "code":
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
        else:
            raise ValueError(f"to_html: unknown block kind {b.kind!r}")
    return "\n".join(parts) + "</body></html>\n"
