"""How a source's colour follows its brightness: the slope of BP - RP against G over its transits.

Gaia measures G, BP and RP in the same field-of-view transit, BP about 27 s and RP about 35 s
after G (DR3 epoch photometry). For each cleaned G epoch the BP and RP epochs of the same
transit (within ``MATCH_TOLERANCE``) give one colour, c = BP - RP, and the weighted straight
line c = a + s (G - <G>) through those points gives the *colour slope* s = d(BP - RP)/dG.

The slope tells variables apart that the G light curve alone confuses: a pulsating star is
hotter, hence bluer, when it is brighter, so its BP amplitude exceeds its RP amplitude and s is
large (RR Lyrae and Cepheids: A(B)/A(V) ~ 1.25-1.5 and A(I)/A(V) ~ 0.6, e.g. Klagyivik &
Szabados 2009, A&A 504, 959), while an eclipsing or ellipsoidal binary of two similar stars
dims almost equally in every band (s near 0). It is the same for a star at any distance or
reddening, and it needs no period.

Weights are 1 / (sigma_BP^2 + sigma_RP^2); G's own errors, several times smaller than BP's
and RP's at the same magnitude, are ignored, so where they are as large as the variability
itself (a faint source of small amplitude) the slope is pulled towards 0 and its error is large.
Points more than ``CLIP`` robust sigmas off the first line (a BP or RP epoch hit by a
neighbour) are dropped and the line fitted again. The error of s is the formal one scaled by sqrt(reduced chi^2) when that exceeds 1. Fewer than
``MIN_POINTS`` transits with all three bands, or no spread in G, give NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

MATCH_TOLERANCE = 1e-3
"""Largest time difference (d, 86 s) between a G epoch and the BP or RP epoch of its transit.
Successive transits are at least 106 min apart (the angle between Gaia's two fields of view)."""

MIN_POINTS = 5
"""Fewest transits with G, BP and RP for a slope."""

CLIP = 4.0
"""Points further than this many robust sigmas (1.4826 x MAD of the weighted residuals) from
the first line are dropped before the second fit."""


def colour_slopes(g_time: np.ndarray, g_mag: np.ndarray, bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Colour slope d(BP - RP)/dG and its error for a batch of sources.

    Parameters
    ----------
    g_time, g_mag : float arrays (n, m)
        Cleaned G epochs (d) and magnitudes, NaN where a point is missing or was clipped.
    bands : dict
        ``"bp"`` and ``"rp"`` -> (time, mag, err), float arrays (n, m_band), NaN-padded, each
        row ascending in time (the light_curves table of docs/schemas.md).

    Returns
    -------
    slope, slope_err : float32 arrays (n,)
        NaN where a source has fewer than ``MIN_POINTS`` matched transits or no G spread.
    """
    matched = {name: _matched(g_time, *bands[name]) for name in ("bp", "rp")}
    colour = matched["bp"][0] - matched["rp"][0]
    var = matched["bp"][1] ** 2 + matched["rp"][1] ** 2
    ok = np.isfinite(colour) & np.isfinite(g_mag) & np.isfinite(var) & (var > 0)
    slope, err, resid_sigma = _weighted_line(g_mag, colour, var, ok)
    with np.errstate(invalid="ignore"):
        ok &= ~(np.abs(resid_sigma) > CLIP * _robust_sigma(resid_sigma, ok)[:, None])
    slope, err, _ = _weighted_line(g_mag, colour, var, ok)
    bad = ok.sum(axis=1) < MIN_POINTS
    slope[bad], err[bad] = np.nan, np.nan
    return slope.astype(np.float32), err.astype(np.float32)


def _matched(g_time: np.ndarray, time: np.ndarray, mag: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band's magnitude and error at each G epoch (its nearest epoch in the same row within
    ``MATCH_TOLERANCE``), NaN where there is none: (n, m) arrays like ``g_time``."""
    n, m = g_time.shape
    out_mag, out_err = np.full((n, m), np.nan), np.full((n, m), np.nan)
    have = np.isfinite(time) & np.isfinite(mag) & np.isfinite(err)
    if not have.any() or m == 0:
        return out_mag, out_err
    # One flat search for the whole batch: each row's times shifted by its row number times a
    # stride longer than any mission, so rows never meet.
    stride = 2.0 * (np.nanmax(np.abs(np.concatenate([time[have], g_time[np.isfinite(g_time)]]))) + 1.0)
    rows_b, cols_b = np.nonzero(have)
    key_b = rows_b * stride + time[rows_b, cols_b]
    order = np.argsort(key_b, kind="stable")
    key_b, rows_b, cols_b = key_b[order], rows_b[order], cols_b[order]
    rows_g, cols_g = np.nonzero(np.isfinite(g_time))
    key_g = rows_g * stride + g_time[rows_g, cols_g]
    right = np.clip(np.searchsorted(key_b, key_g), 0, len(key_b) - 1)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(key_b[left] - key_g) < np.abs(key_b[right] - key_g), left, right)
    close = np.abs(key_b[nearest] - key_g) <= MATCH_TOLERANCE
    src = (rows_b[nearest[close]], cols_b[nearest[close]])
    out_mag[rows_g[close], cols_g[close]] = mag[src]
    out_err[rows_g[close], cols_g[close]] = err[src]
    return out_mag, out_err


def _weighted_line(x: np.ndarray, y: np.ndarray, var: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares slope of y on x per row over ``ok``, its error (scaled by the
    reduced chi^2 when above 1) and each point's residual in units of its sigma."""
    w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    x0, y0 = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    wsum = np.maximum(w.sum(axis=1), 1e-300)
    dx = np.where(ok, x0 - ((w * x0).sum(axis=1) / wsum)[:, None], 0.0)
    dy = np.where(ok, y0 - ((w * y0).sum(axis=1) / wsum)[:, None], 0.0)
    sxx = (w * dx * dx).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 0, (w * dx * dy).sum(axis=1) / sxx, np.nan)
        resid = np.where(ok, (dy - slope[:, None] * dx) * np.sqrt(w), np.nan)
        dof = np.maximum(ok.sum(axis=1) - 2, 1)
        chi2 = np.nansum(resid**2, axis=1) / dof
        err = np.sqrt(np.maximum(chi2, 1.0) / sxx)
    return slope, err, resid


def _robust_sigma(resid: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """1.4826 x the median absolute residual of each row's ``ok`` points (at least 1: the
    residuals are already in units of their errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no point
        mad = np.nanmedian(np.abs(np.where(ok, resid, np.nan)), axis=1)
    return np.maximum(np.nan_to_num(1.4826 * mad, nan=1.0), 1.0)
