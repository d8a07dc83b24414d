"""The 2-D latent map, rasterised so that millions of sources draw in seconds.

Points are binned straight onto the pixels of the plot area (a sparse map uses bins of up to
6 x 6 pixels so that single sources stay visible) and coloured by `latentcat.plots.raster`,
the rules the explorer's map views follow too: with ``categories`` each pixel is the mean of
its categories' colours weighted by their counts (a legend lists them), with ``color``
(numbers) the mean value of its sources on viridis (a colour bar), with neither the log source
density (a colour bar); the opacity follows the log of the pixel's count.

One data unit spans the same number of pixels on both axes, so the map's shape is not
stretched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import cm, colors
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latentcat.errors import InputError, LatentcatError
from latentcat.plots import raster
from latentcat.plots.figure import figure_of, finish, new_figure, plain_text

# The plot area as a fraction of the figure; the right margin holds the legend or colour bar.
AXES_RECT = (0.06, 0.07, 0.70, 0.87)
COLORBAR_RECT = (0.79, 0.07, 0.02, 0.87)


def _extent(x: np.ndarray, y: np.ndarray, nx: int, ny: int) -> tuple[float, float, float, float]:
    """Data limits padded by 2 % and widened so a data unit is as many pixels in x as in y."""
    x0, x1 = float(x.min()), float(x.max())
    y0, y1 = float(y.min()), float(y.max())
    wx, wy = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = max(wx / nx, wy / ny) * 1.04  # data units per pixel
    return cx - scale * nx / 2, cx + scale * nx / 2, cy - scale * ny / 2, cy + scale * ny / 2


def _pixel_index(x: np.ndarray, y: np.ndarray, extent, nx: int, ny: int) -> np.ndarray:
    """Flat pixel index (row-major, row 0 at the bottom) of every point."""
    x0, x1, y0, y1 = extent
    ix = ((x - x0) * (nx / (x1 - x0))).astype(np.int64)
    iy = ((y - y0) * (ny / (y1 - y0))).astype(np.int64)
    np.clip(ix, 0, nx - 1, out=ix)
    np.clip(iy, 0, ny - 1, out=iy)
    return iy * nx + ix


@plain_text
def plot_map(x, y, color=None, categories=None, highlight=None, ids=None, out: str | Path | None = None,
             size: tuple[int, int] = (1200, 900), title: str | None = None, color_label: str = "",
             ax: Axes | None = None) -> Figure | Axes:
    """The 2-D latent map, rasterised onto the plot's pixels.

    Parameters
    ----------
    x, y : array_like (n,)
        Map coordinates; non-finite points are an error (they would be silently lost).
    color : array_like (n,), optional
        A number per source (e.g. log period): pixels show the mean over their sources,
        with a colour bar labelled ``color_label``. NaN values are left out of the mean.
    categories : array_like (n,), optional
        A label per source (e.g. the DR3 class; None = "unlabelled"): colours blended per
        pixel, with a legend of the categories and their counts. Not with ``color``.
    highlight : sequence of int or mapping, optional
        Sources to mark with a cross and a label: source_ids (with ``ids``) or row indices
        (without); a mapping ``{id: label}`` sets the labels, otherwise the id is shown.
    ids : array_like of int (n,), optional
        The source_id of every point, to find the highlighted sources.
    out : path, optional
        Where to write the PNG.
    size : (int, int)
        Width and height of the figure in pixels.
    title : str, optional
    color_label : str
        Label of the colour bar for ``color``.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (binned on their own pixels; the legend or colour bar beside
        them) instead of a new figure of ``size``.

    Returns
    -------
    matplotlib.figure.Figure, or ``ax`` when given
        The raster is the AxesImage with gid ``"map"``; the crosses are the Line2D
        ``"highlight"`` and their labels Text artists with gid ``"highlight_label"``.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n = x.size
    if y.size != n:
        raise InputError(f"plot_map: x has {n} values, y has {y.size}")
    if n == 0:
        raise InputError("plot_map: no points to draw")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise InputError(f"plot_map: point {int(np.argmax(bad))} has a non-finite coordinate")
    if color is not None and categories is not None:
        raise InputError("plot_map: give color or categories, not both")

    given = ax is not None
    if given:
        fig = figure_of(ax, out, "plot_map")
    else:
        fig = new_figure(int(size[0]), int(size[1]), layout=None)
        ax = fig.add_axes(AXES_RECT)
    screen_x, screen_y = max(1, round(ax.bbox.width)), max(1, round(ax.bbox.height))
    extent = _extent(x, y, screen_x, screen_y)
    # A sparse map uses bins of a few screen pixels, so a lone source stays visible.
    block = int(np.clip(np.sqrt(screen_x * screen_y / n), 1, 6))
    nx, ny = max(1, screen_x // block), max(1, screen_y // block)
    pixel = _pixel_index(x, y, extent, nx, ny)
    if categories is not None:
        try:
            codes, names, counts, palette = raster.categories(categories, n)
        except ValueError as err:
            raise InputError(f"plot_map: categories: {err}") from None
        rgb, alpha = raster.rasterise(pixel, nx * ny, codes=codes, colours=palette)
        handles = [Line2D([], [], ls="", marker="s", ms=8, color=palette[k], label=f"{name} ({counts[k]:,})")
                   for k, name in enumerate(names)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  title="category (sources)", title_fontsize=9, borderaxespad=0)
    else:
        cmap = matplotlib.colormaps["viridis"]
        if color is not None:
            values = np.asarray(color, dtype=np.float32).reshape(-1)
            if values.size != n:
                raise InputError(f"plot_map: color has {values.size} values for {n} points")
            ok = np.isfinite(values)
            lo, hi = (np.percentile(values[ok], [1, 99]) if ok.any() else (0.0, 1.0))
            norm = colors.Normalize(vmin=float(lo), vmax=float(hi) if hi > lo else float(lo) + 1)
            rgb, alpha = raster.rasterise(pixel, nx * ny, values=values, lo=norm.vmin, hi=norm.vmax)
            label = color_label or "mean value per pixel"
        else:
            rgb, alpha = raster.rasterise(pixel, nx * ny)
            norm = colors.LogNorm(vmin=1, vmax=raster.density_top(np.bincount(pixel, minlength=nx * ny)))
            label = "sources per pixel"
        mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(mappable, ax=ax) if given else fig.colorbar(mappable, cax=fig.add_axes(COLORBAR_RECT))
        bar.set_label(label)
    rgba = np.concatenate([rgb, alpha[:, None]], axis=1)

    image = ax.imshow(rgba.reshape(ny, nx, 4), origin="lower", extent=extent, interpolation="nearest",
                      aspect="auto")
    image.set_gid("map")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.set_title(title or f"latent map, {n:,} sources")
    if highlight is not None:
        _mark(ax, x, y, highlight, ids)
    return ax if given else finish(fig, out)


def _mark(ax, x: np.ndarray, y: np.ndarray, highlight, ids) -> None:
    """Crosses and labels at the highlighted sources."""
    labels = dict(highlight) if isinstance(highlight, Mapping) else None
    keys = np.asarray(list(labels) if labels is not None else list(highlight), dtype=np.int64).reshape(-1)
    if ids is not None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size != x.size:
            raise InputError(f"plot_map: ids has {ids.size} values for {x.size} points")
        order = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids[order], keys)
        found = (pos < ids.size) & (ids[order][np.minimum(pos, ids.size - 1)] == keys)
        if not found.all():
            raise LatentcatError(f"plot_map: highlighted source_id {int(keys[~found][0])} is not on the map")
        rows = order[pos]
    else:
        if ((keys < 0) | (keys >= x.size)).any():
            raise LatentcatError(f"plot_map: highlighted row {int(keys[(keys < 0) | (keys >= x.size)][0])} "
                                 f"is outside the {x.size} points (give ids= to highlight by source_id)")
        rows = keys
    ax.plot(x[rows], y[rows], ls="", marker="x", ms=11, mew=2.2, color="black", gid="highlight",
            path_effects=[patheffects.withStroke(linewidth=4, foreground="white")])
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for key, row in zip(keys, rows):
        text = str(labels[int(key)]) if labels is not None else str(int(key))
        ax.annotate(text, (float(x[row]), float(y[row])), xytext=(7, 7), textcoords="offset points", fontsize=8,
                    path_effects=outline, gid="highlight_label")
