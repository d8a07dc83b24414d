"""Figure creation and saving shared by the plotting functions."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from latentcat.atomic import write_file

DPI = 100  # figure sizes below are chosen in pixels at this resolution
# Importing gaiaxpy's plotter turns on text.usetex for the whole process; our figures must
# not depend on a LaTeX installation, so they are drawn and saved with it off.
PLAIN_TEXT = {"text.usetex": False}


def plain_text(function):
    """Run a plotting function with LaTeX text rendering off, whatever the global setting."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(PLAIN_TEXT):
            return function(*args, **kwargs)

    return wrapper


def new_figure(width_px: int, height_px: int, layout: str | None = "constrained") -> Figure:
    """A figure of ``width_px x height_px`` pixels when saved (no pyplot, Agg renderer)."""
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)


def figure_of(ax, out, name: str) -> Figure:
    """The figure of an ``ax=`` a caller gave (its drawing goes there; saving is the caller's:
    ``out`` with ``ax`` is refused)."""
    if out is not None:
        from latentcat.errors import InputError

        raise InputError(f"{name}: give out= or ax=, not both (save ax.figure yourself)")
    return ax.figure


@plain_text
def finish(fig: Figure, out: str | Path | None) -> Figure:
    """Write ``fig`` as a PNG to ``out`` when given (parent folders created); return ``fig``."""
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_file(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return fig


@plain_text
def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at the pixel size it was made with.

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    bytes
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
