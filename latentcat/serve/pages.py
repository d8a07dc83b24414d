"""HTML of the explorer's pages: every value that reaches a page goes through `esc` (text and
attributes alike) and every link through `href`, so nothing from a catalogue, a URL or an
upload is ever read as markup. The one script a page loads is the explorer's own map script (/static/map.js)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode

from latentcat import __version__

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0; line-height: 1.4; }
header { background: #1d3f66; color: #fff; padding: .5em 1em; display: flex; flex-wrap: wrap; gap: 1.2em; align-items: center; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header a.home { font-size: 1.15em; }
header form { margin-left: auto; }
main { padding: .6em 1.2em 2em; max-width: 1500px; }
h1 { font-size: 1.45em; margin: .4em 0; }
h2 { font-size: 1.15em; color: #1d3f66; margin: 1.2em 0 .4em; }
p.message { background: #fde8e8; border: 1px solid #d62728; color: #8b0000; padding: .5em .8em; font-weight: 600; }
p.note { color: #666; font-size: .88em; }
table { border-collapse: collapse; font-size: .88em; }
th, td { padding: .2em .6em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { width: 13em; font-weight: normal; color: #444; }
img.figure { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
img.thumb { border: 1px solid #ddd; }
input.map { border: 1px solid #ccc; cursor: crosshair; }
.mapbox { position: relative; display: inline-block; line-height: 0; }
.mapbox a.point { position: absolute; width: 10px; height: 10px; border-radius: 50%; }
.mapbox a.point:hover { outline: 2px solid #000; }
.mapbox .box { position: absolute; border: 1px dashed #000; background: rgba(29, 63, 102, .12); pointer-events: none; }
.mapbox .tip { position: absolute; background: #fff; border: 1px solid #999; padding: 4px; font-size: 12px;
  line-height: 1.3; pointer-events: none; z-index: 2; white-space: nowrap; }
.columns { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.controls a { display: inline-block; padding: .15em .55em; margin: 0 .15em .3em 0; border: 1px solid #aac;
              border-radius: 3px; text-decoration: none; background: #f4f6fb; color: #1d3f66; }
.legend span.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: middle; }
.legend div { font-size: .85em; }
.gradient { width: 16em; height: .9em; display: inline-block; vertical-align: middle; }
form.inline label { margin-right: .8em; }
fieldset { border: 1px solid #ccd; margin: .5em 0; }
"""


def esc(value) -> str:
    """Text or an attribute value, HTML-escaped (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, params: Mapping[str, object] | None = None) -> str:
    """``path`` with URL-encoded parameters (those not None or empty)."""
    query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None and v != ""])
    return path + ("?" + query if query else "")


def href(path: str, params: Mapping[str, object] | None = None) -> str:
    """A link to ``path`` with URL-encoded parameters, escaped for an attribute."""
    return esc(url(path, params))


def fmt(value) -> str:
    """A value for a table cell (escaped): floats to 5 significant digits, ids in full."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return esc(value)
    if isinstance(value, float):
        return esc(f"{value:.5g}")
    return esc(value)


def cell(value) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{fmt(value)}</td>' if numeric else f"<td>{fmt(value)}</td>"


def hidden(params: Mapping[str, object], skip: Iterable[str] = ()) -> str:
    """Hidden form fields carrying the page's state (those not in ``skip``)."""
    skip = set(skip)
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                   for k, v in params.items() if k not in skip and v is not None and v != "")


def select(name: str, options: Sequence[tuple[str, str]], chosen: str) -> str:
    """A <select> of (value, label) options."""
    items = "".join(f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(label)}</option>'
                    for v, label in options)
    return f'<select name="{esc(name)}">{items}</select>'


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Mapping], row_attrs=None) -> str:
    """An HTML table: ``columns`` are (key, heading); a row value that is an `Raw` is put in as is."""
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    body = []
    for row in rows:
        attrs = row_attrs(row) if row_attrs else ""
        cells = "".join(f"<td>{row[k]}</td>" if isinstance(row.get(k), Raw) else cell(row.get(k)) for k, _ in columns)
        body.append(f"<tr{attrs}>{cells}</tr>")
    if not body:
        return '<p class="note">(none)</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw(str):
    """Markup this module built itself (links, images), put into a table cell unescaped."""


def layout(title: str, body: str, catalogue: str, message: str | None = None, search_value: str = "",
           state_fields: str = "") -> str:
    """A whole page: the header (navigation and the source_id box), one message and the body."""
    note = f'<p class="message" id="message">{esc(message)}</p>' if message else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} - latentcat</title><style>{CSS}</style>"
        '<script src="/static/map.js" defer></script></head><body>'
        "<header>"
        f'<a class="home" href="/">latentcat explorer</a><span>{esc(catalogue)}</span>'
        '<a href="/">Map</a><a href="/upload">My light curve</a>'
        '<a href="/outliers">Outliers</a><a href="/discover">Discovery</a><a href="/classes">Classes</a><a href="/latent">Latent traversal</a>'
        '<form method="get" action="/">'
        f'<input type="text" name="source_id" size="22" placeholder="Gaia DR3 source_id" value="{esc(search_value)}">'
        f"{state_fields}<button type=\"submit\">Open</button></form>"
        "</header><main>"
        f"{note}{body}"
        f'<p class="note">latentcat {esc(__version__)}: a read-only view of the catalogue.</p>'
        "</main></body></html>"
    )
