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
