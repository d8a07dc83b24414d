"""Cleaning of G light curves before any feature is computed.

Two mild rules, applied after the archive's own ``rejected_by_photometry`` /
``rejected_by_variability`` flags have already been honoured at ingest:

1. Error-based MAD clipping. With ``s = 1.4826 * MAD(err)`` a point is removed when its
   magnitude error exceeds ``median(err) + ERR_NSIGMA * s`` *and* ``ERR_FACTOR * median(err)``.
   The second condition stops ordinary points being clipped when the errors of a source are
   nearly identical (MAD close to zero).
2. Faint outliers. A point fainter than ``median(mag) + FAINT_NSIGMA * 1.4826 * MAD(mag)`` is a
   faint-outlier candidate. The candidates are removed only when they are isolated: at most
   ``max(1, FAINT_MAX_FRACTION * n)`` of them. A group of faint points (the eclipses of an
   Algol, the minima of a Mira) is real variability and is kept.

Both rules are one-sided: bright excursions (flares, outbursts) are never removed.
"""

from __future__ import annotations

import warnings

import numpy as np

MAD_TO_SIGMA = 1.4826
ERR_NSIGMA = 5.0
ERR_FACTOR = 3.0
FAINT_NSIGMA = 5.0
FAINT_MAX_FRACTION = 0.02


def robust_sigma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise median and MAD-based sigma of a NaN-padded array.

    Parameters
    ----------
    x : float array (n, m), NaN where there is no data

    Returns
    -------
    median, sigma : float arrays (n,)
    """
    with warnings.catch_warnings():  # rows without data give NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=1)
        mad = np.nanmedian(np.abs(x - med[:, None]), axis=1)
    return med, MAD_TO_SIGMA * mad


def clean_mask(mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Which epochs survive cleaning.

    Parameters
    ----------
    mag, err : float arrays (n_sources, max_len)
        G magnitudes and their errors, NaN-padded.

    Returns
    -------
    keep : bool array (n_sources, max_len)
        True for real epochs that are kept; padding is always False.
    """
    valid = np.isfinite(mag)
    err_med, err_sig = robust_sigma(err)
    err_cut = np.maximum(err_med + ERR_NSIGMA * err_sig, ERR_FACTOR * err_med)
    bad_err = err > err_cut[:, None]

    mag_med, mag_sig = robust_sigma(np.where(bad_err, np.nan, mag))
    faint = valid & ~bad_err & (mag > (mag_med + FAINT_NSIGMA * mag_sig)[:, None])
    n_faint = faint.sum(axis=1)
    n_valid = valid.sum(axis=1)
    isolated = n_faint <= np.maximum(1, np.floor(FAINT_MAX_FRACTION * n_valid))
    faint &= isolated[:, None]
    return valid & ~bad_err & ~faint

