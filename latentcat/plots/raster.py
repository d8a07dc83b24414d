"""The one rasteriser of latentcat's maps: the 2-D latent map of figures (`latentcat.plots.latent_map`)
and of the explorer's views (`latentcat.serve.mapview`) are drawn by the same rules.

Points are binned straight onto pixels (the caller gives each point's pixel); every pixel then
gets a colour and an opacity from its points alone, a few ``numpy.bincount`` passes in all:

- categories (e.g. the DR3 class): the count-weighted mean of its points' category colours (a
  mixed pixel looks mixed). The `MAX_CATEGORIES` largest labelled categories have their own
  colour (`PALETTE`, largest first); further ones are drawn together as "other", sources without
  a label as "unlabelled", both grey and listed last;
- numbers (e.g. log period): the mean value of its points on viridis between ``lo`` and ``hi``
  (callers use the 1st and 99th percentiles); a pixel whose points have no value is grey and
  faint;
- neither: the pixel's count on viridis, on a log scale from 1 to the fullest pixel.

Opacity, for categories and numbers, follows the log of the count: 0 for an empty pixel, from
0.35 for one source to 1 for the fullest (`density_alpha`); the density colouring is opaque
wherever there is a source.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_CATEGORIES = 20
"""Labelled categories drawn in their own colour; further ones are drawn together as "other"."""

UNLABELLED, OTHER = "unlabelled", "other"
"""Names of the sources without a category, and of the categories beyond `MAX_CATEGORIES`."""

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#637939", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#9edae5", "#dbdb8d", "#393b79")
"""The categories' colours, largest category first (`MAX_CATEGORIES` of them)."""

GREY = "#b0b0b0"
"""Colour of "other" and "unlabelled"."""

NO_VALUE_GREY, NO_VALUE_ALPHA = 0.6, 0.25
"""Colour (0..1) and opacity of a pixel whose sources have no value of the number shown."""

VIRIDIS = (matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
"""The 256-step viridis colour table (RGB, 0..255) that numbers and densities are drawn with."""


def png_bytes(rgb: np.ndarray) -> bytes:
    """An (h, w, 3) uint8 image as PNG bytes (Pillow; fast compression: the explorer draws
    its views on request)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def hex_rgb(colour: str) -> tuple[float, float, float]:
    """``"#rrggbb"`` as RGB in 0..1."""
    return tuple(int(colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


def categories(labels, n: int | None = None) -> tuple[np.ndarray, list[str], list[int], np.ndarray]:
    """Encode one label per point by the rule of the module docstring.

    Parameters
    ----------
    labels : array_like or pyarrow array (n,)
        A label per point; None (null) is "unlabelled".
    n : int, optional
        The number of points expected (checked).

    Returns
    -------
    codes : int64 array (n,)
        Category number per point.
    names : list of str
        The categories drawn, largest labelled first, then "other" and "unlabelled" where present.
    counts : list of int
        Points per category.
    colours : float32 array (len(names), 3)
        RGB in 0..1 per category.
    """
    arr = labels if isinstance(labels, (pa.Array, pa.ChunkedArray)) else pa.array(labels)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if n is not None and len(arr) != n:
        raise ValueError(f"{len(arr)} labels for {n} points")
    encoded = pc.cast(arr, pa.string()).fill_null(UNLABELLED).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    counts = np.bincount(codes, minlength=len(names))
    labelled = sorted((j for j in range(len(names)) if names[j] != UNLABELLED), key=lambda j: (-counts[j], names[j]))
    rank = np.full(len(names), -1, np.int64)
    kept = labelled[:MAX_CATEGORIES]
    rank[kept] = np.arange(len(kept))
    drawn = [names[j] for j in kept]
    if len(labelled) > MAX_CATEGORIES:
        drawn.append(OTHER)
        rank[labelled[MAX_CATEGORIES:]] = len(drawn) - 1
    if UNLABELLED in names:
        drawn.append(UNLABELLED)
        rank[names.index(UNLABELLED)] = len(drawn) - 1
    codes = rank[codes]
    colours = np.array([hex_rgb(GREY) if i >= len(kept) else hex_rgb(PALETTE[i]) for i in range(len(drawn))],
                       np.float32).reshape(-1, 3)
    return codes, drawn, np.bincount(codes, minlength=len(drawn)).tolist(), colours


def density_alpha(count: np.ndarray) -> np.ndarray:
    """Opacity of each pixel from its count: 0 when empty, 0.35 .. 1 with the log of the count."""
    log = np.log1p(count.astype(np.float32))
    top = float(log.max()) if log.size else 0.0
    return np.where(count > 0, 0.35 + 0.65 * log / max(top, 1e-9), 0.0).astype(np.float32)


def density_top(count: np.ndarray) -> int:
    """The top of the density colouring's log scale (at least 2): its colour bar runs from 1 to it."""
    return max(2, int(count.max()) if count.size else 0)


def rasterise(pixel: np.ndarray, n_pixels: int, codes: np.ndarray | None = None,
              colours: np.ndarray | None = None, values: np.ndarray | None = None,
              lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Colour and opacity of every pixel from the points binned on it.

    Parameters
    ----------
    pixel : int array (m,)
        The flat pixel index of every point drawn.
    n_pixels : int
        Pixels in the image.
    codes, colours : int array (m,), float array (k, 3)
        Categories: each point's category number and the categories' RGB (from `categories`).
    values : float array (m,), optional
        Numbers: each point's value (NaN: none), drawn from ``lo`` to ``hi``.

    Returns
    -------
    rgb : float32 array (n_pixels, 3)
        RGB in 0..1.
    alpha : float32 array (n_pixels,)
        Opacity in 0..1.
    """
    count = np.bincount(pixel, minlength=n_pixels)
    alpha = density_alpha(count)
    if codes is not None:
        rgb = np.stack([np.bincount(pixel, weights=colours[codes, c], minlength=n_pixels) for c in range(3)], 1)
        return (rgb / np.maximum(count, 1)[:, None]).astype(np.float32), alpha
    if values is not None:
        ok = np.isfinite(values)
        total = np.bincount(pixel[ok], weights=values[ok], minlength=n_pixels)
        used = np.bincount(pixel[ok], minlength=n_pixels)
        scaled = np.clip((total / np.maximum(used, 1) - lo) / max(hi - lo, 1e-12), 0, 1)
        rgb = VIRIDIS[(scaled * 255).astype(np.int64)].astype(np.float32) / 255.0
        rgb[used == 0] = NO_VALUE_GREY
        alpha = np.where(used > 0, alpha, np.where(count > 0, NO_VALUE_ALPHA, 0.0)).astype(np.float32)
        return rgb, alpha
    scaled = np.log(np.maximum(count, 1)) / np.log(density_top(count))
    rgb = VIRIDIS[(np.clip(scaled, 0, 1) * 255).astype(np.int64)].astype(np.float32) / 255.0
    return rgb, (count > 0).astype(np.float32)
