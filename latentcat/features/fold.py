"""Folded G light curves, as the folded-light-curve VAE sees them.

Each curve is folded at **twice** the best period (an eclipsing binary then shows both
eclipses; a pulsator shows two cycles). Phase 0 is put at the maximum brightness (minimum
magnitude) of the folded curve smoothed with a circular Gaussian kernel of width
``KERNEL_SIGMA`` (in phase), evaluated on ``N_GRID`` phases and weighted by ``1/err^2``.
Magnitudes are min-max scaled to [0, 1] over the cleaned points, errors divided by the same
range; a curve with zero range keeps scale 1. All points are kept, sorted by phase.
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


def fold_curves(time: np.ndarray, mag: np.ndarray, err: np.ndarray, period: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold light curves at twice their period, align and scale them.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded at the end of each row.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded likewise.
    period : float array (n,)
        Best period (d), not doubled. Rows with NaN period give all-NaN output.

    Returns
    -------
    phase, mag_scaled, err_scaled : float32 arrays (n, m)
        Sorted by phase within each row, NaN-padded at the end (same row lengths as input).
    """
    fold_period = 2.0 * np.asarray(period, dtype=np.float64)
    t0 = np.nanmin(time, axis=1, keepdims=True)
    phase = np.mod((time - t0) / fold_period[:, None], 1.0)
    shift = smoothed_minimum_phase(phase, mag, err)
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
