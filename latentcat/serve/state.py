"""What a request asks for: the page state in a URL, checked field by field.

Every parameter is a number, a source_id, or one of a fixed list; the one free text is the
neighbour filter, at most `MAX_WHERE` characters, which only `Catalog.similar(where=...)` sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from latentcat.encode import TIME_FORMATS as _TIME_FORMATS
from latentcat.errors import LatentcatError
from latentcat.limits import MAX_PAGE_ROWS
from latentcat.query.catalog import MODALITIES as _MODALITIES
from latentcat.serve.mapview import View

MAX_WHERE = 500
"""Longest neighbour filter accepted (characters)."""

MODALITIES = tuple(_MODALITIES.items())
"""The modalities a page offers: (name, what it compares)."""

CLICKS = (("open", "open the nearest source"), ("zoom", "zoom in here"), ("centre", "centre here"))
TIME_FORMATS = tuple(_TIME_FORMATS.items())
"""The time formats an upload may use: (name, what it is)."""
_ID = re.compile(r"\s*(\d{1,19})\s*", re.ASCII)


class PageError(LatentcatError):
    """A bad request: shown as one message on the page, with an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_source_id(text: str) -> int:
    """A Gaia source_id typed or passed in a URL; anything else is a one-line error."""
    match = _ID.fullmatch(str(text))
    if not match or int(match.group(1)) >= 2**63:
        shown = str(text)[:40]
        raise PageError(f"source_id {shown!r} is not a Gaia source_id: give a whole number such as 5853498713190525696")
    return int(match.group(1))


def _whole(name: str, text: str, top: int, status: int = 400) -> int:
    """``text`` as a whole number from 1 to ``top``, else a PageError naming ``name``."""
    try:
        value = int(str(text).strip()[:20])
    except ValueError:
        raise PageError(f"{name} {str(text)[:20]!r} is not a whole number: give 1 to {top}") from None
    if not 1 <= value <= top:
        raise PageError(f"{name} must be between 1 and {top}, got {value}", status)
    return value


def parse_k(text: str) -> int:
    return _whole("k", text, MAX_PAGE_ROWS)


def parse_page(text: str, last: int) -> int:
    """A page number of a listing of ``last`` pages (404 past the last)."""
    return _whole("page", text, max(last, 1), status=404)


def choice(name: str, text: str, choices) -> str:
    keys = [c[0] if isinstance(c, tuple) else c for c in choices]
    if text not in keys:
        raise PageError(f"unknown {name} {str(text)[:40]!r}: choose one of {', '.join(keys)}")
    return text


@dataclass(frozen=True)
class State:
    """What a page shows, all of it in its URL."""

    source_id: int | None = None
    k: int = 10
    modality: str = "space"
    where: str = ""
    colour: str = "class"
    view: View | None = None
    click: str = "open"

    def params(self, **changes) -> dict:
        """The URL parameters of this state (defaults left out), with ``changes``."""
        s = replace(self, **changes) if changes else self
        out = {"source_id": s.source_id, "k": s.k if s.k != 10 else None,
               "modality": s.modality if s.modality != "space" else None, "where": s.where or None,
               "colour": s.colour if s.colour != "class" else None,
               "view": s.view.param() if isinstance(s.view, View) else s.view, "click": s.click if s.click != "open" else None}
        return {k: v for k, v in out.items() if v is not None}


def parse_state(params: dict[str, str], colours) -> tuple[State, str | None]:
    """The state in a URL and the first problem found (the bad field then keeps its default)."""
    state, problem = State(), None
    parsers = {
        "source_id": lambda t: parse_source_id(t) if str(t).strip() else None,
        "k": parse_k,
        "modality": lambda t: choice("modality", t, MODALITIES),
        "where": lambda t: _checked_where(t),
        "colour": lambda t: choice("colour", t, list(colours)),
        "view": lambda t: View.parse(t) if str(t).strip() else None,
        "click": lambda t: choice("click", t, CLICKS),
    }
    values = {}
    for name, parse in parsers.items():
        if name not in params:
            continue
        try:
            values[name] = parse(params[name])
        except LatentcatError as err:
            problem = problem or str(err)
    return replace(state, **values), problem


def _checked_where(text: str) -> str:
    text = str(text).strip()
    if len(text) > MAX_WHERE:
        raise PageError(f"the filter is {len(text)} characters long; at most {MAX_WHERE}")
    return text


