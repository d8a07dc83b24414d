"""Summary statistics of cleaned G light curves."""

from __future__ import annotations

import warnings

import numpy as np


def summary_stats(time: np.ndarray, mag: np.ndarray) -> dict[str, np.ndarray]:
    """Per-source statistics of NaN-padded G light curves.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded.
    mag : float array (n, m)
        G magnitudes, NaN-padded.

    Returns
    -------
    dict of arrays (n,)
        ``n_obs`` (int32), and float32 ``g_mean``, ``g_median``, ``g_std`` (sample standard
        deviation, ddof=1), ``g_amplitude`` (95th - 5th percentile, linear interpolation),
        ``g_skew`` (Fisher-Pearson skewness, biased estimator as ``scipy.stats.skew``) and
        ``time_span`` (last - first epoch). NaN where a row has too few points.
    """
    m = mag.astype(np.float64)
    n_obs = np.isfinite(m).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m, axis=1)
        median = np.nanmedian(m, axis=1)
        std = np.nanstd(m, axis=1, ddof=1)
        p5, p95 = np.nanpercentile(m, [5.0, 95.0], axis=1)
        d = m - mean[:, None]
        m2 = np.nanmean(d**2, axis=1)
        m3 = np.nanmean(d**3, axis=1)
        skew = np.where(m2 > 0, m3 / np.where(m2 > 0, m2, 1.0) ** 1.5, 0.0)
        span = np.nanmax(time, axis=1) - np.nanmin(time, axis=1)
    skew[n_obs < 3] = np.nan
    return {
        "n_obs": n_obs.astype(np.int32),
        "g_mean": mean.astype(np.float32),
        "g_median": median.astype(np.float32),
        "g_std": std.astype(np.float32),
        "g_amplitude": (p95 - p5).astype(np.float32),
        "g_skew": skew.astype(np.float32),
        "time_span": span.astype(np.float32),
    }
