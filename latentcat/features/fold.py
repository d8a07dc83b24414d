"""Folded G light curves, as the folded-light-curve VAE sees them.

A curve with a reliable period (``period_reliable``, :mod:`latentcat.features.period`) is
folded at **twice** that period (an eclipsing binary then shows both eclipses; a pulsator
shows two cycles), and phase 0 is put at the maximum brightness (minimum magnitude) of the
folded curve smoothed with a circular Gaussian kernel of width ``KERNEL_SIGMA`` (in phase),
evaluated on ``N_GRID`` phases and weighted by ``1/err^2``. A curve without a reliable period
is not folded: its "phase" is the time since its first epoch over its time span (just below 1
at the last epoch), so the model sees the variation in time order, as the period of
``fold_period`` = the span (`fold_periods`) says. Magnitudes are min-max scaled to [0, 1] over
the cleaned points, errors divided by the same range; a curve with zero range keeps scale 1.
All points are kept, sorted by phase.
"""

from __future__ import annotations

import numpy as np

KERNEL_SIGMA = 0.03
N_GRID = 100
_MAX_CELLS_PER_BATCH = 2_000_000


def smoothed_minimum_phase(phase: np.ndarray, mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Phase of the brightest point of a circularly kernel-smoothed folded curve.

    Parameters
    ----------
    phase : float array (n, m)
        Phases in [0, 1), NaN-padded.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded.

    Returns
    -------
    float64 array (n,) in [0, 1): the grid phase where the smoothed magnitude is smallest.
    """
    n, m = phase.shape
    grid = np.arange(N_GRID) / N_GRID
    out = np.zeros(n)
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, m * N_GRID))
    for lo in range(0, n, step):
        sl = slice(lo, min(n, lo + step))
        valid = np.isfinite(mag[sl])
        d = grid[None, :, None] - np.where(valid, phase[sl], 0.0)[:, None, :]
        d -= np.round(d)  # circular distance in [-0.5, 0.5]
        w = np.exp(-0.5 * (d / KERNEL_SIGMA) ** 2)
        w *= np.where(valid, 1.0 / np.where(valid, err[sl], 1.0) ** 2, 0.0)[:, None, :]
        y = np.where(valid, mag[sl], 0.0)[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            smooth = (w * y).sum(axis=2) / w.sum(axis=2)
        smooth[~np.isfinite(smooth)] = np.inf
        out[sl] = grid[np.argmin(smooth, axis=1)]
    return out


def fold_periods(period: np.ndarray, reliable: np.ndarray, time_span: np.ndarray) -> np.ndarray:
    """The period each light curve is folded at: twice ``period`` where ``reliable``, else a
    hair more than ``time_span`` (the curve in time order).

    Parameters
    ----------
    period, time_span : float arrays (n,)
        Best period and last - first epoch (d).
    reliable : bool array (n,)

    Returns
    -------
    float64 array (n,)
    """
    return np.where(reliable, 2.0 * np.asarray(period, np.float64), (1.0 + SPAN_MARGIN) * np.asarray(time_span, np.float64))


#: Relative margin added to the time span when a curve is shown in time order, so that its
#: last epoch gets a phase just below 1.
SPAN_MARGIN = 1e-6


def fold_curves(time: np.ndarray, mag: np.ndarray, err: np.ndarray, fold_period: np.ndarray,
                align: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold light curves, align and scale them.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded at the end of each row.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded likewise.
    fold_period : float array (n,)
        The period to fold at (`fold_periods`: twice the best period, or the time span).
        Rows with NaN give all-NaN output.
    align : bool array (n,), optional
        Rows whose phase 0 is moved to the smoothed maximum brightness (default all); a curve
        shown in time order keeps phase 0 at its first epoch.

    Returns
    -------
    phase, mag_scaled, err_scaled : float32 arrays (n, m)
        Sorted by phase within each row, NaN-padded at the end (same row lengths as input).
    """
    fold_period = np.asarray(fold_period, dtype=np.float64)
    t0 = np.nanmin(time, axis=1, keepdims=True)
    phase = np.mod((time - t0) / fold_period[:, None], 1.0)
    if align is None:
        shift = smoothed_minimum_phase(phase, mag, err)
    else:  # rows are independent: align only the curves that have a reliable period
        align = np.asarray(align, bool)
        shift = np.zeros(len(phase))
        if align.any():
            shift[align] = smoothed_minimum_phase(phase[align], mag[align], err[align])
    phase = np.mod(phase - shift[:, None], 1.0)
    valid = np.isfinite(phase) & np.isfinite(mag)
    order = np.argsort(np.where(valid, phase, np.inf), axis=1, kind="stable")
    phase = np.take_along_axis(np.where(valid, phase, np.nan), order, axis=1)
    m_sorted = np.take_along_axis(mag.astype(np.float64), order, axis=1)
    e_sorted = np.take_along_axis(err.astype(np.float64), order, axis=1)
    lo = np.nanmin(m_sorted, axis=1, keepdims=True)
    span = np.nanmax(m_sorted, axis=1, keepdims=True) - lo
    span = np.where(span > 0, span, 1.0)
    keep = np.isfinite(phase)
    scaled = np.where(keep, (m_sorted - lo) / span, np.nan)
    scaled_err = np.where(keep, e_sorted / span, np.nan)
    phase32 = np.minimum(phase.astype(np.float32), np.nextafter(np.float32(1), np.float32(0)))
    return phase32, scaled.astype(np.float32), scaled_err.astype(np.float32)
