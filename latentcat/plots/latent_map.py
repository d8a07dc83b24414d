"""The 2-D latent map, rasterised so that millions of sources draw in seconds.

Points are binned straight onto the pixels of the plot area (one ``numpy.bincount`` per
map; a sparse map uses bins of up to 6 x 6 pixels so that single sources stay visible),
so the cost grows with the number of points only through a few vectorised passes and
the image never holds more than one value per screen pixel.

- With ``categories``: each pixel's colour is the mean of its categories' colours weighted
  by their counts (a mixed pixel looks mixed), and its opacity follows the log of its count.
- With ``color`` (numbers): each pixel shows the mean value of its sources on a colour map,
  with a colour bar; opacity again follows the log count.
- With neither: the log source density, with a colour bar.

One data unit spans the same number of pixels on both axes, so the map's shape is not
stretched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib import cm, colors
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latentcat.errors import InputError, LatentcatError
from latentcat.plots.figure import finish, new_figure, plain_text

# The plot area as a fraction of the figure; the right margin holds the legend or colour bar.
AXES_RECT = (0.06, 0.07, 0.70, 0.87)
COLORBAR_RECT = (0.79, 0.07, 0.02, 0.87)
MAX_CATEGORIES = 20  # further categories are drawn together as "other"
UNLABELLED = "unlabelled"
_PALETTE = [colors.to_rgb(c) for c in (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#637939", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#9edae5", "#dbdb8d", "#393b79")]
_OTHER_RGB = colors.to_rgb("#b0b0b0")


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


def _encode_categories(categories, n: int) -> tuple[np.ndarray, list[str], list[int]]:
    """Category codes per point, sorted by size; beyond MAX_CATEGORIES - 1 they become "other"."""
    arr = pa.array(categories) if not isinstance(categories, (pa.Array, pa.ChunkedArray)) else categories
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) != n:
        raise InputError(f"plot_map: categories has {len(arr)} values for {n} points")
    arr = pc.cast(arr, pa.string()).fill_null(UNLABELLED)
    encoded = arr.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    counts = np.bincount(codes, minlength=len(names))
    order = np.lexsort((np.array(names, dtype=object).astype(str), -counts))
    if len(order) > MAX_CATEGORIES:
        keep = order[: MAX_CATEGORIES - 1]
        rank = np.full(len(names), MAX_CATEGORIES - 1)
        rank[keep] = np.arange(keep.size)
        new_names = [names[k] for k in keep] + ["other"]
    else:
        rank = np.empty(len(names), np.int64)
        rank[order] = np.arange(order.size)
        new_names = [names[k] for k in order]
    codes = rank[codes]
    new_counts = np.bincount(codes, minlength=len(new_names)).tolist()
    return codes, new_names, new_counts


def _category_colours(names: list[str]) -> np.ndarray:
    """RGB per category: the palette in order of size, grey for "unlabelled" and "other"."""
    rgb, k = [], 0
    for name in names:
        if name in (UNLABELLED, "other"):
            rgb.append(_OTHER_RGB)
        else:
            rgb.append(_PALETTE[k % len(_PALETTE)])
            k += 1
    return np.asarray(rgb, dtype=np.float32)


def _density_alpha(count: np.ndarray) -> np.ndarray:
    """Opacity of a pixel from its count: 0 when empty, 0.35 .. 1 with the log of the count."""
    log = np.log1p(count.astype(np.float32))
    top = float(log.max()) if log.size else 0.0
    alpha = np.where(count > 0, 0.35 + 0.65 * log / max(top, 1e-9), 0.0)
    return alpha.astype(np.float32)


@plain_text
def plot_map(x, y, color=None, categories=None, highlight=None, ids=None, out: str | Path | None = None,
             size: tuple[int, int] = (1200, 900), title: str | None = None, color_label: str = "") -> Figure:
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

    Returns
    -------
    matplotlib.figure.Figure
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

    width, height = int(size[0]), int(size[1])
    fig = new_figure(width, height, layout=None)
    ax = fig.add_axes(AXES_RECT)
    screen_x, screen_y = max(1, round(width * AXES_RECT[2])), max(1, round(height * AXES_RECT[3]))
    extent = _extent(x, y, screen_x, screen_y)
    # A sparse map uses bins of a few screen pixels, so a lone source stays visible.
    block = int(np.clip(np.sqrt(screen_x * screen_y / n), 1, 6))
    nx, ny = max(1, screen_x // block), max(1, screen_y // block)
    pixel = _pixel_index(x, y, extent, nx, ny)
    count = np.bincount(pixel, minlength=nx * ny)
    alpha = _density_alpha(count)
    rgba = np.ones((nx * ny, 4), dtype=np.float32)
    rgba[:, 3] = alpha

    if categories is not None:
        codes, names, counts = _encode_categories(categories, n)
        palette = _category_colours(names)
        mixed = np.zeros((nx * ny, 3), dtype=np.float32)
        for channel in range(3):  # count-weighted mean colour, one bincount per channel
            mixed[:, channel] = np.bincount(pixel, weights=palette[codes, channel], minlength=nx * ny)
        rgba[:, :3] = mixed / np.maximum(count, 1)[:, None]
        handles = [Line2D([], [], ls="", marker="s", ms=8, color=palette[k], label=f"{name} ({counts[k]:,})")
                   for k, name in enumerate(names)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  title="category (sources)", title_fontsize=9, borderaxespad=0)
    else:
        if color is not None:
            values = np.asarray(color, dtype=np.float32).reshape(-1)
            if values.size != n:
                raise InputError(f"plot_map: color has {values.size} values for {n} points")
            ok = np.isfinite(values)
            total = np.bincount(pixel[ok], weights=values[ok], minlength=nx * ny)
            used = np.bincount(pixel[ok], minlength=nx * ny)
            shown = np.where(used > 0, total / np.maximum(used, 1), np.nan)
            lo, hi = (np.nanpercentile(values, [1, 99]) if ok.any() else (0.0, 1.0))
            norm = colors.Normalize(vmin=float(lo), vmax=float(hi) if hi > lo else float(lo) + 1)
            cmap = matplotlib.colormaps["viridis"]
            rgba[:, :3] = cmap(norm(np.nan_to_num(shown, nan=lo)))[:, :3]
            rgba[:, 3] = np.where(used > 0, alpha, np.where(count > 0, 0.25, 0.0))
            label = color_label or "mean value per pixel"
        else:
            norm = colors.LogNorm(vmin=1, vmax=max(2, int(count.max())))
            cmap = matplotlib.colormaps["viridis"]
            rgba[:, :3] = cmap(norm(np.maximum(count, 1)))[:, :3]
            rgba[:, 3] = (count > 0).astype(np.float32)
            label = "sources per pixel"
        cax = fig.add_axes(COLORBAR_RECT)
        bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.set_label(label)

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
    return finish(fig, out)


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
