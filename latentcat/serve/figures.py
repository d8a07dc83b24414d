"""The explorer's own figure: a raw G light curve beside its fold at the period.

The catalogue keeps the folds, dm-dt maps and spectra its models saw (drawn by
`latentcat.plots.plot_similar`); the raw epochs come from a staging folder or an upload.
"""

from __future__ import annotations

import io

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


def thumbnail_png(row: dict) -> bytes:
    """A small PNG of a feature row (docs/schemas.md): the fold (bright up), the XP spectrum (BP
    reversed, then RP: blue to red) and the dm-dt map, drawn with Pillow in a few milliseconds,
    for the tables of neighbours and outliers. The same three views as
    `latentcat.plots.plot_similar`, without axes; a missing one is a grey cross."""
    from PIL import Image, ImageDraw

    h = THUMB_HEIGHT
    picture = Image.new("RGB", (THUMB_WIDTH, h), (255, 255, 255))
    pen = ImageDraw.Draw(picture)
    fold_x, xp_x, dmdt_x = 0, _FOLD_W + _GAP, THUMB_WIDTH - _DMDT_W

    def missing(x0: int, w: int) -> None:
        pen.rectangle((x0, 0, x0 + w - 1, h - 1), fill=(238, 238, 238))
        left, right, top, bottom = x0 + w * 0.35, x0 + w * 0.65, h * 0.2, h * 0.8
        pen.line((left, top, right, bottom), fill=(170, 170, 170))
        pen.line((left, bottom, right, top), fill=(170, 170, 170))

    phase, mag = row.get("fold_phase"), row.get("fold_mag")
    if row.get("lc_reason") is None and phase is not None and mag is not None and len(phase):
        phase, mag = np.asarray(phase, np.float64), np.asarray(mag, np.float64)
        lo, hi = np.nanmin(mag), np.nanmax(mag)
        ys = (mag - lo) / max(hi - lo, 1e-9) * (h - 5) + 2
        xs = np.clip(phase, 0, 1) * (_FOLD_W - 3)
        for x, y in zip(xs.tolist(), ys.tolist()):
            if np.isfinite(y):
                pen.rectangle((fold_x + x, y, fold_x + x + 1, y + 1), fill=(40, 40, 40))
    else:
        missing(fold_x, _FOLD_W)

    flux = row.get("xp_flux")
    if row.get("xp_reason") is None and flux is not None and len(flux) % 2 == 0:
        flux = np.asarray(flux, np.float64)
        n = flux.size // 2
        top = max(float(np.nanmax(np.abs(flux))), 1e-9)
        y = (1 - (np.nan_to_num(flux) / top + 1) / 2) * (h - 5) + 2
        half = _XP_W // 2 - 2
        for xs, ys, colour in ((np.linspace(0, half, n), y[:n][::-1], (33, 102, 172)),           # BP, blue end first
                               (np.linspace(half + 4, _XP_W - 1, n), y[n:], (178, 24, 43))):  # RP
            pen.line(list(zip((xs + xp_x).tolist(), ys.tolist())), fill=colour)
    else:
        missing(xp_x, _XP_W)

    values = row.get("dmdt")
    if row.get("lc_reason") is None and values is not None and len(values) == 200:
        grid = np.clip(np.nan_to_num(np.asarray(values, np.float64).reshape(10, 20)), 0, 1) ** 0.5
        cells = Image.fromarray(_magma()[(grid[::-1] * 255).astype(int)], "RGB")  # dt grows upwards
        picture.paste(cells.resize((_DMDT_W, h), Image.Resampling.NEAREST), (dmdt_x, 0))
    else:
        missing(dmdt_x, _DMDT_W)
    for x0, w in ((fold_x, _FOLD_W), (xp_x, _XP_W)):  # a faint frame
        pen.rectangle((x0, 0, x0 + w - 1, h - 1), outline=(215, 215, 215))
    buf = io.BytesIO()
    picture.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
