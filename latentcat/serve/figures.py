"""The explorer's own figure: a raw G light curve beside its fold at the period.

The catalogue keeps the folds, dm-dt maps and spectra its models saw (drawn by
`latentcat.plots.plot_similar`); the raw epochs come from a staging folder or an upload.
"""

from __future__ import annotations

import numpy as np

from latentcat.plots.figure import figure_png, new_figure, plain_text


@plain_text
def light_curve_png(time, mag, err=None, period: float | None = None, title: str = "") -> bytes:
    """PNG of a G light curve in time and, with a period, folded at it (two cycles shown)."""
    time = np.asarray(time, np.float64)
    mag = np.asarray(mag, np.float64)
    err = None if err is None else np.asarray(err, np.float64)
    folded = period is not None and np.isfinite(period) and period > 0
    fig = new_figure(1200, 300)
    grid = fig.add_gridspec(1, 2 if folded else 1)
    ax = fig.add_subplot(grid[0, 0])
    ax.errorbar(time, mag, yerr=err, fmt="o", ms=2.5, lw=0, elinewidth=0.6, color="#333333", ecolor="0.65")
    ax.invert_yaxis()
    ax.set_xlabel("time (BJD - 2455197.5, d)")
    ax.set_ylabel("G (mag)")
    ax.set_title(f"{title}: {time.size} G epochs" if title else f"{time.size} G epochs", fontsize=10)
    if folded:
        ax2 = fig.add_subplot(grid[0, 1], sharey=ax)
        phase = np.mod(time - time.min(), period) / period
        for shift in (0.0, 1.0):
            ax2.errorbar(phase + shift, mag, yerr=err, fmt="o", ms=2.5, lw=0, elinewidth=0.6,
                         color="#2166ac", ecolor="0.7")
        ax2.set_xlim(0, 2)
        ax2.set_xlabel("phase (two cycles)")
        ax2.set_title(f"folded at P = {period:.6g} d", fontsize=10)
    for a in fig.axes:
        a.tick_params(labelsize=8)
    return figure_png(fig)


THUMB_HEIGHT = 72
_FOLD_W, _XP_W, _DMDT_W, _GAP = 150, 150, 100, 8
THUMB_WIDTH = _FOLD_W + _XP_W + _DMDT_W + 2 * _GAP
_MAGMA = None


def _magma() -> np.ndarray:
    global _MAGMA
    if _MAGMA is None:
        import matplotlib

        _MAGMA = (matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return _MAGMA


def _missing(panel: np.ndarray) -> None:
    """A panel with nothing to show: light grey with a grey cross."""
    panel[:] = 238
    h, w, _ = panel.shape
    for t in np.linspace(0, 1, 4 * max(h, w)):
        panel[int(t * (h - 1) * 0.6 + h * 0.2), int(t * (w - 1) * 0.3 + w * 0.35)] = 170
        panel[int((1 - t) * (h - 1) * 0.6 + h * 0.2), int(t * (w - 1) * 0.3 + w * 0.35)] = 170


def _polyline(panel: np.ndarray, x: np.ndarray, y: np.ndarray, colour) -> None:
    """Straight segments through (x, y) pixel positions, sampled densely."""
    h, w, _ = panel.shape
    if x.size < 2:
        return
    steps = int(np.abs(np.diff(x)).sum() + np.abs(np.diff(y)).sum()) * 2 + x.size
    t = np.linspace(0, x.size - 1, steps)
    xs = np.clip(np.interp(t, np.arange(x.size), x).round().astype(int), 0, w - 1)
    ys = np.clip(np.interp(t, np.arange(y.size), y).round().astype(int), 0, h - 1)
    panel[ys, xs] = colour


def thumbnail_png(row: dict) -> bytes:
    """A small PNG of a feature row (docs/schemas.md): the fold (bright up), the XP spectrum (BP
    reversed, then RP: blue to red) and the dm-dt map, drawn straight onto pixels with numpy:
    a few milliseconds, for the tables of neighbours and outliers. The same three views as
    `latentcat.plots.plot_similar`, without axes; a missing one is a grey cross."""
    from latentcat.serve.mapview import png_bytes

    h = THUMB_HEIGHT
    image = np.full((h, THUMB_WIDTH, 3), 255, np.uint8)
    fold = image[:, :_FOLD_W]
    xp = image[:, _FOLD_W + _GAP:_FOLD_W + _GAP + _XP_W]
    dmdt = image[:, THUMB_WIDTH - _DMDT_W:]

    phase, mag = row.get("fold_phase"), row.get("fold_mag")
    if row.get("lc_reason") is None and phase is not None and mag is not None and len(phase):
        phase, mag = np.asarray(phase, np.float64), np.asarray(mag, np.float64)
        lo, hi = np.nanmin(mag), np.nanmax(mag)
        ys = ((mag - lo) / max(hi - lo, 1e-9) * (h - 5) + 2).astype(int)
        xs = (np.clip(phase, 0, 1) * (_FOLD_W - 3)).astype(int)
        for dy in (0, 1):
            for dx in (0, 1):
                fold[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, _FOLD_W - 1)] = (40, 40, 40)
    else:
        _missing(fold)

    flux = row.get("xp_flux")
    if row.get("xp_reason") is None and flux is not None and len(flux) % 2 == 0:
        flux = np.asarray(flux, np.float64)
        n = flux.size // 2
        top = max(float(np.nanmax(np.abs(flux))), 1e-9)
        y = (1 - (np.nan_to_num(flux) / top + 1) / 2) * (h - 5) + 2
        half = _XP_W // 2 - 2
        _polyline(xp, np.linspace(0, half, n), y[:n][::-1], (33, 102, 172))        # BP, blue end first
        _polyline(xp, np.linspace(half + 4, _XP_W - 1, n), y[n:], (178, 24, 43))  # RP
    else:
        _missing(xp)

    values = row.get("dmdt")
    if row.get("lc_reason") is None and values is not None and len(values) == 200:
        grid = np.clip(np.nan_to_num(np.asarray(values, np.float64).reshape(10, 20)), 0, 1) ** 0.5
        cells = _magma()[(grid[::-1] * 255).astype(int)]  # dt grows upwards
        rows = np.minimum((np.arange(h) * 10) // h, 9)
        cols = np.minimum((np.arange(_DMDT_W) * 20) // _DMDT_W, 19)
        dmdt[:] = cells[rows][:, cols]
    else:
        _missing(dmdt)
    for panel in (fold, xp):  # a faint frame
        panel[[0, -1], :] = np.minimum(panel[[0, -1], :], 215)
        panel[:, [0, -1]] = np.minimum(panel[:, [0, -1]], 215)
    return png_bytes(image)
