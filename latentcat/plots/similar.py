"""A query source and its neighbours, one row each, in the three views the models see.

Columns: a label (source_id, class, G, distance), the folded G light curve, the XP
spectrum and the dm-dt map. The three panels show the feature rows exactly as stored
(docs/schemas.md, "Features"), so what the eye compares is what the models compared.

- Folded light curve: ``fold_phase`` vs ``fold_mag`` with ``fold_err`` error bars; the
  magnitude axis is inverted (bright up). Curves are folded at twice the best period,
  so a pulsator shows two cycles and an eclipsing binary both eclipses.
- XP spectrum: ``xp_flux`` (BP then RP, divided by ``xp_scale``) with its error band. BP's
  pseudo-wavelength runs from red to blue, so BP is drawn with a reversed axis on the left
  and RP on the right: the spectrum reads blue to red like a wavelength axis.
- dm-dt map: ``dmdt`` reshaped to 10 dt x 20 |dm| bins, dt up the rows, |dm| along the
  columns, bin edges from :mod:`latentcat.features.dmdt` on the axes; one colour scale for
  all rows.

A missing modality is stated in its panel ("no XP", "too few epochs", ...), never drawn as
an empty or made-up panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from latentcat.errors import InputError
from latentcat.features import dmdt as dmdt_grid
from latentcat.gaia.xp import XP_SAMPLING
from latentcat.plots.figure import finish, new_figure, plain_text

N_XP = XP_SAMPLING.size
RP_OFFSET = 70.0  # x position of RP pseudo-wavelength 0, leaving a gap after BP
BP_COLOUR, RP_COLOUR, FOLD_COLOUR = "#2166ac", "#b2182b", "#333333"
DMDT_NORM = dict(vmin=0.0, vmax=1.0, gamma=0.5)  # p(|dm| | dt); sqrt stretch shows the tails
LC_REASON_TEXT = {
    "too_few_epochs": "too few epochs",
    "no_light_curve": "no light curve",
    "no_time_span": "no time span",
}
_WIDTH_PX, _ROW_PX, _EXTRA_PX = 1200, 165, 70


def _rows_as_dicts(rows, what: str) -> list[dict]:
    """Feature rows given as a pyarrow Table, one mapping or a sequence of mappings -> list of dicts."""
    if isinstance(rows, (pa.Table, pa.RecordBatch)):
        return rows.to_pylist()
    if isinstance(rows, Mapping):
        return [dict(rows)]
    if isinstance(rows, Sequence):
        return [dict(r) for r in rows]
    raise InputError(f"plot_similar: {what} must be a pyarrow Table or mappings of feature columns, got {type(rows).__name__}")


def _missing(ax, text: str) -> None:
    """State why a panel has nothing to show, with no axes drawn."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11,
            color="0.35", style="italic", gid="missing")


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def _label(ax, row: dict, info: Mapping, title: str, is_query: bool) -> None:
    """The row's label: role, source_id, class, G magnitude and distance to the query."""
    ax.set_axis_off()
    g_mag = info.get("g_mag", row.get("g_mean"))
    lines = [
        title,
        f"{row['source_id']}",
        f"class: {info.get('class') or 'n/a'}",
        f"G = {_fmt(g_mag, '.2f')}",
        f"distance = {_fmt(info.get('distance'), '.3g')}",
    ]
    ax.text(0.0, 0.5, "\n".join(lines), transform=ax.transAxes, ha="left", va="center", fontsize=9,
            linespacing=1.5, family="monospace", gid="label",
            bbox=dict(boxstyle="round,pad=0.4", fc="#fff3c4" if is_query else "#f2f2f2", ec="0.7"))


def _fold_panel(ax, row: dict, last: bool) -> None:
    """Folded G light curve, bright up, period in the title."""
    phase, mag = row.get("fold_phase"), row.get("fold_mag")
    if row.get("lc_reason") is not None or phase is None or mag is None:
        _missing(ax, LC_REASON_TEXT.get(row.get("lc_reason"), row.get("lc_reason") or "no folded light curve"))
        return
    phase = np.asarray(phase, dtype=np.float32)
    mag = np.asarray(mag, dtype=np.float32)
    err = row.get("fold_err")
    err = None if err is None else np.asarray(err, dtype=np.float32)
    cont = ax.errorbar(phase, mag, yerr=err, fmt="o", ms=2.5, lw=0, elinewidth=0.7, color=FOLD_COLOUR,
                       ecolor="0.6", capsize=0)
    cont.lines[0].set_gid("fold")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_ylabel("scaled G", fontsize=8)
    period = row.get("period")
    ax.set_title(f"P = {_fmt(period, '.6g')} d (folded at 2P), {phase.size} epochs", fontsize=9)
    if last:
        ax.set_xlabel("phase")


def _xp_panel(ax, row: dict, last: bool) -> None:
    """BP and RP spectra (flux / xp_scale) with error bands, reading blue to red."""
    flux = row.get("xp_flux")
    if row.get("xp_reason") is not None or flux is None:
        _missing(ax, "no XP")
        return
    flux = np.asarray(flux, dtype=np.float32)
    if flux.size != 2 * N_XP:
        raise InputError(f"source_id {row['source_id']}: xp_flux has {flux.size} values, expected {2 * N_XP}")
    error = row.get("xp_flux_error")
    error = None if error is None else np.asarray(error, dtype=np.float32)
    x_bp = XP_SAMPLING.max() - XP_SAMPLING  # BP pseudo-wavelength grows towards the blue
    x_rp = RP_OFFSET + XP_SAMPLING
    for band, x, sl, colour in (("BP", x_bp, slice(0, N_XP), BP_COLOUR), ("RP", x_rp, slice(N_XP, None), RP_COLOUR)):
        if error is not None:
            ax.fill_between(x, flux[sl] - error[sl], flux[sl] + error[sl], color=colour, alpha=0.2, lw=0)
        ax.plot(x, flux[sl], color=colour, lw=1.3, label=band, gid=f"xp_{band.lower()}")
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    ticks = np.array([0, 20, 40, 60])
    ax.set_xticks(np.concatenate([XP_SAMPLING.max() - ticks, RP_OFFSET + ticks]),
                  [str(t) for t in ticks] * 2, fontsize=7)
    ax.set_xlim(-2, RP_OFFSET + XP_SAMPLING.max() + 2)
    ax.set_ylabel("flux / xp_scale", fontsize=8)
    ax.set_title(f"XP spectrum (xp_scale = {_fmt(row.get('xp_scale'), '.4g')} e-/s)", fontsize=9)
    ax.legend(loc="upper right", fontsize=7, frameon=False, handlelength=1.2)
    if last:
        ax.set_xlabel("pseudo-wavelength: BP (reversed) | RP   (blue to red)")


def _dmdt_panel(ax, row: dict, last: bool):
    """dm-dt map as an image, dt bins up the rows and |dm| bins along the columns."""
    values = row.get("dmdt")
    if row.get("lc_reason") is not None or values is None:
        _missing(ax, LC_REASON_TEXT.get(row.get("lc_reason"), row.get("lc_reason") or "no dm-dt map"))
        return None
    values = np.asarray(values, dtype=np.float32)
    if values.size != dmdt_grid.N_CELLS:
        raise InputError(f"source_id {row['source_id']}: dmdt has {values.size} values, expected {dmdt_grid.N_CELLS}")
    image = ax.imshow(values.reshape(dmdt_grid.N_DT, dmdt_grid.N_DM), origin="lower", aspect="auto",
                      cmap="magma", norm=colors.PowerNorm(**DMDT_NORM), interpolation="nearest")
    image.set_gid("dmdt")
    # image pixel k spans k - 0.5 .. k + 0.5, so bin edge e sits at e - 0.5
    dt_edges = dmdt_grid.DT_EDGES
    ax.set_yticks(np.arange(dt_edges.size) - 0.5, [f"{e:.2g}" if e < 10 else f"{e:.0f}" for e in dt_edges], fontsize=6)
    dm_ticks = np.array([0.0, 1.0, 2.0, 3.0])  # the last column holds |dm| > 3
    ax.set_xticks(dm_ticks / dmdt_grid.DM_STEP - 0.5, [f"{t:g}" for t in dm_ticks], fontsize=7)
    ax.set_ylabel("dt (d)", fontsize=8)
    ax.set_title("dm-dt: p(|dm| | dt)", fontsize=9)
    if last:
        ax.set_xlabel("|dm| / std (last column: > 3)")
    return image


def _panel(draw, row, ax, size: tuple[int, int]):
    """One source's panel drawn by ``draw`` into ``ax`` (a new figure of ``size`` pixels when
    None); returns the Axes."""
    row = _rows_as_dicts(row, "row")[0]
    if ax is None:
        ax = new_figure(*size).add_subplot()
    draw(ax, row, True)
    return ax


@plain_text
def plot_fold(row, ax: Axes | None = None) -> Axes:
    """A source's folded G light curve (bright up; the period in the title) in ``ax``.

    Parameters
    ----------
    row : mapping or one-row pyarrow.Table
        The source's feature row (`read_feature_rows`).
    ax : matplotlib.axes.Axes, optional
        Where to draw (a new 480 x 320 pixel figure when None).

    Returns
    -------
    matplotlib.axes.Axes
        The points are the Line2D with gid ``"fold"``; without a fold, a Text with gid ``"missing"``.
    """
    return _panel(_fold_panel, row, ax, (480, 320))


@plain_text
def plot_xp(row, ax: Axes | None = None) -> Axes:
    """A source's BP and RP spectra (flux / xp_scale, blue to red, with error bands) in ``ax``;
    as `plot_fold` (gids ``"xp_bp"`` and ``"xp_rp"``)."""
    return _panel(_xp_panel, row, ax, (560, 320))


@plain_text
def plot_dmdt(row, ax: Axes | None = None) -> Axes:
    """A source's dm-dt map (p(|dm| | dt)) in ``ax``; as `plot_fold` (the image's gid: ``"dmdt"``)."""
    return _panel(_dmdt_panel, row, ax, (360, 320))


@plain_text
def plot_similar(query_row, neighbour_rows, meta: Mapping[int, Mapping] | None = None,
                 out: str | Path | None = None) -> Figure:
    """A query source and its nearest neighbours, one row per source.

    Parameters
    ----------
    query_row : mapping or one-row pyarrow.Table
        The query's feature row (docs/schemas.md, "Features"), e.g. from
        :func:`latentcat.plots.read_feature_rows`.
    neighbour_rows : pyarrow.Table or sequence of mappings
        The neighbours' feature rows, nearest first; may be empty (the figure then shows
        one source, e.g. as an outlier's thumbnail).
    meta : dict, optional
        ``source_id -> {"class": str, "g_mag": float, "distance": float}``, shown in each
        row's label; a missing entry shows "n/a" (G falls back to the row's ``g_mean``).
    out : path, optional
        Where to write the figure as a PNG.

    Returns
    -------
    matplotlib.figure.Figure
        Row ``i``'s axes are labelled ``"label-i"``, ``"fold-i"``, ``"xp-i"`` and ``"dmdt-i"``
        (``Axes.get_label``); inside them the fold points are the Line2D with gid ``"fold"``,
        the spectra ``"xp_bp"``/``"xp_rp"``, the dm-dt image ``"dmdt"``, and a missing
        modality is a Text with gid ``"missing"``.
    """
    rows = _rows_as_dicts(query_row, "query_row")[:1] + _rows_as_dicts(neighbour_rows, "neighbour_rows")
    if not rows:
        raise InputError("plot_similar: no query row given")
    meta = meta or {}
    n = len(rows)
    fig = new_figure(_WIDTH_PX, _EXTRA_PX + _ROW_PX * n)
    grid = fig.add_gridspec(n, 5, width_ratios=[1.15, 2.3, 2.5, 1.6, 0.06])
    images = []
    fold_axes = []
    for i, row in enumerate(rows):
        last = i == n - 1
        ax_label = fig.add_subplot(grid[i, 0])
        ax_fold = fig.add_subplot(grid[i, 1], sharex=fold_axes[0] if fold_axes else None)
        ax_xp = fig.add_subplot(grid[i, 2])
        ax_dmdt = fig.add_subplot(grid[i, 3])
        for ax, name in ((ax_label, "label"), (ax_fold, "fold"), (ax_xp, "xp"), (ax_dmdt, "dmdt")):
            ax.set_label(f"{name}-{i}")  # row i's panels can be found by name
            ax.tick_params(labelsize=7)
        role = ("QUERY" if n > 1 else "source") if i == 0 else f"neighbour {i}"
        _label(ax_label, row, meta.get(int(row["source_id"]), {}), role, i == 0 and n > 1)
        _fold_panel(ax_fold, row, last)
        if ax_fold.axison:
            fold_axes.append(ax_fold)
        _xp_panel(ax_xp, row, last)
        image = _dmdt_panel(ax_dmdt, row, last)
        if image is not None:
            images.append(image)
    if images:  # one colour scale for every map, on a bar the height of the figure
        bar = fig.colorbar(images[0], cax=fig.add_subplot(grid[:, 4]))
        bar.set_label("p(|dm| | dt)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return finish(fig, out)
