"""Period search: generalised Lomb-Scargle over 0.001-25 c/d with Gaia's scanning-law mask,
and an eclipse search for light curves that look like detached eclipsing binaries.

What ``period`` means. It is the time between successive minima of the light curve: the
pulsation period of a pulsator, and for a binary the time between successive eclipses, which
is **half the orbital period** when both eclipses are seen (EA, EB, EW, ELL) and the orbital
period itself when the secondary eclipse is too shallow to be seen. The fold stage folds at
twice ``period``, so it shows two cycles of a pulsator and, for a binary, one orbit with the
primary and the secondary eclipse once each (or the single visible eclipse twice). For the
sinusoid-like binaries (EB, EW, ELL) this is what the Lomb-Scargle peak gives anyway; for
detached binaries it is what the eclipse search reports (see below). The orbital period of a
binary is therefore ``2 * period`` (or ``period`` when one eclipse per orbit is seen).

The search runs in two passes, which together give the accuracy of a finely sampled
periodogram at a fraction of its cost:

1. A coarse periodogram with nifty-ls (NUFFT, O(N log N)) on a common grid of
   ``COARSE_SAMPLES_PER_PEAK = 2`` points per peak width ``1/T``, with ``T`` the larger of
   ``REFERENCE_BASELINE`` (1100 d, longer than any DR3 light curve) and the longest span in
   the batch, so for DR3 data every source gets the same grid whatever its neighbours.
2. The ``N_CANDIDATES`` highest local maxima of the coarse periodogram are refined with an
   exact generalised Lomb-Scargle (floating mean, ``1/err^2`` weights; Zechmeister & Kurster
   2009, the same statistic as astropy's ``LombScargle(..., normalization='standard')``) on
   ``REFINE_POINTS`` frequencies spanning +-1 coarse step around each, and the winner once
   more on a grid 10 times finer. The refinement is vectorised over all sources of a batch.

Spurious frequencies. Gaia's scanning law imprints the spin frequency ``F_SPIN = 4`` c/d
(6 h rotation) and the precession frequency ``F_PREC = 1/62.97`` c/d on the sampling. The
mask removes ``|f - f_k| < MASK_HALF_WIDTH`` (1e-3 c/d, about one peak width 1/T for the
34-month DR3 baseline) around every combination ``f_k = a * F_SPIN + b * F_PREC`` with
``a = 0..6`` and ``b = -2..2`` that lies in (0, 25] c/d (see ``SPURIOUS_FREQUENCIES``).

Detached eclipsing binaries. Narrow eclipses on a flat curve spread their power over many
harmonics of the orbital frequency, and the highest Lomb-Scargle peak is then often a harmonic
or an alias. For the light curves that look like eclipses (``eclipse.dip_like``: several points
far fainter than the bulk, few far brighter; pulsators and contact binaries are not), the
frequency is instead chosen by the eclipse search (:mod:`latentcat.features.eclipse`): the
frequencies that bring the faint points to one phase, searched over the whole range, compete
with the ``eclipse.N_PEAKS`` highest Lomb-Scargle peaks (each taken as the orbital frequency
or twice it), and the one whose fold is smoothest in phase (each point best predicted by its phase
neighbours) wins. The frequencies it tests are masked like the periodogram's.

``period_power`` and ``period_fap`` belong to the reported frequency: the exact Lomb-Scargle
power there and its false-alarm probability, Baluev's (2008) alias-free approximation as
``astropy``'s ``false_alarm_probability(method='baluev')`` with ``fmax = 25`` c/d. For an
eclipsing binary found by the eclipse search the power is that of a sinusoid at the eclipse
frequency, so a low power does not by itself make such a period doubtful.
"""

from __future__ import annotations

import numpy as np
import nifty_ls
from scipy.special import gammaln

from latentcat.features import eclipse

FMIN = 1e-3
FMAX = 25.0
COARSE_SAMPLES_PER_PEAK = 2
N_CANDIDATES = 5
REFERENCE_BASELINE = 1100.0  # d; sets the coarse grid step (DR3 spans up to ~1050 d)
REFINE_POINTS = 21

F_SPIN = 4.0
F_PREC = 1.0 / 62.97
MASK_HALF_WIDTH = 1e-3
SPURIOUS_FREQUENCIES = np.array(
    sorted(
        {
            round(a * F_SPIN + b * F_PREC, 12)
            for a in range(0, 7)
            for b in range(-2, 3)
            if 0 < a * F_SPIN + b * F_PREC <= FMAX
        }
    )
)

_MAX_CELLS_PER_BATCH = 2_000_000
_COARSE_BATCH = 16  # sources sharing one NUFFT plan
_ECLIPSE_BATCH = 32  # light curves per eclipse search (bounds memory)


def spurious_mask(freq: np.ndarray) -> np.ndarray:
    """True where a frequency lies within ``MASK_HALF_WIDTH`` of a scanning-law frequency.

    Parameters
    ----------
    freq : float array, any shape (c/d)

    Returns
    -------
    bool array of the same shape
    """
    freq = np.asarray(freq)
    idx = np.searchsorted(SPURIOUS_FREQUENCIES, freq)
    lo = SPURIOUS_FREQUENCIES[np.clip(idx - 1, 0, len(SPURIOUS_FREQUENCIES) - 1)]
    hi = SPURIOUS_FREQUENCIES[np.clip(idx, 0, len(SPURIOUS_FREQUENCIES) - 1)]
    return (np.abs(freq - lo) < MASK_HALF_WIDTH) | (np.abs(freq - hi) < MASK_HALF_WIDTH)


def gls_power(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Exact generalised Lomb-Scargle power ('standard' normalisation) for a batch of sources.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.
    freq : float array (n, k)
        Frequencies (c/d) to evaluate for each source.

    Returns
    -------
    float64 array (n, k), in [0, 1]; NaN for a source with fewer than 3 points.
    """
    n, m = time.shape
    out = np.empty(freq.shape, dtype=np.float64)
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, m * freq.shape[1]))
    for lo in range(0, n, step):
        sl = slice(lo, min(n, lo + step))
        valid = np.isfinite(mag[sl])
        w = np.where(valid, 1.0 / np.where(valid, err[sl], 1.0) ** 2, 0.0)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        y = np.where(valid, mag[sl], 0.0)
        y = y - (w * y).sum(axis=1, keepdims=True)
        t = np.where(valid, time[sl] - np.nanmin(time[sl], axis=1, keepdims=True), 0.0)
        arg = 2.0 * np.pi * freq[sl][:, :, None] * t[:, None, :]
        c, s = np.cos(arg), np.sin(arg)
        wy = (w * y)[:, :, None]
        wb = w[:, None, :]
        yy = (w * y * y).sum(axis=1)[:, None]
        C = np.einsum("bfl,bl->bf", c, w)
        S = np.einsum("bfl,bl->bf", s, w)
        YC = np.matmul(c, wy)[..., 0]
        YS = np.matmul(s, wy)[..., 0]
        CC = (c * c * wb).sum(axis=2) - C * C
        SS = (s * s * wb).sum(axis=2) - S * S
        CS = (c * s * wb).sum(axis=2) - C * S
        D = CC * SS - CS * CS
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (SS * YC * YC + CC * YS * YS - 2.0 * CS * YC * YS) / (yy * D)
        p[valid.sum(axis=1) < 3] = np.nan
        out[sl] = p
    return out


def baluev_fap(power: np.ndarray, n_obs: np.ndarray, time: np.ndarray, err: np.ndarray, fmax: float = FMAX) -> np.ndarray:
    """Baluev (2008) false-alarm probability of the highest peak ('standard' normalisation).

    Parameters
    ----------
    power : float array (n,)
        Power of the best peak.
    n_obs : int array (n,)
        Number of points of each light curve.
    time, err : float arrays (n, m)
        NaN-padded epochs and errors (the errors weight the effective time span).
    fmax : float
        Highest frequency searched (c/d).

    Returns
    -------
    float64 array (n,)
    """
    N = n_obs.astype(np.float64)
    w = np.where(np.isfinite(time), 1.0 / np.where(np.isfinite(err), err, 1.0) ** 2, 0.0)
    tt = np.where(np.isfinite(time), time - np.nanmin(time, axis=1, keepdims=True), 0.0)
    wsum = w.sum(axis=1)
    dt2 = (w * tt**2).sum(axis=1) / wsum - ((w * tt).sum(axis=1) / wsum) ** 2
    W = fmax * np.sqrt(4 * np.pi * dt2)
    z = np.clip(power, 0.0, 1.0)
    nh, nk = N - 1, N - 3
    gamma = np.sqrt(2 / nh) * np.exp(gammaln(nh / 2) - gammaln((nh - 1) / 2))
    fap_single = (1 - z) ** (0.5 * nk)
    tau = gamma * W * (1 - z) ** (0.5 * (nk - 1)) * np.sqrt(0.5 * nh * z)
    return -np.expm1(-tau) + fap_single * np.exp(-tau)


def coarse_candidates(time: np.ndarray, mag: np.ndarray, err: np.ndarray, n_peaks: int = N_CANDIDATES) -> tuple[np.ndarray, float]:
    """The best local maxima of the coarse periodograms of a small batch of sources.

    nifty-ls batches series that share one time array, so the batch is put on the union of
    its epochs: each source keeps its own points and gets zero weight (infinite error) on the
    others', which leaves its periodogram exactly unchanged. One NUFFT plan then serves the
    whole batch.

    Parameters
    ----------
    time, mag, err : float arrays (b, m)
        NaN-padded light curves, each with at least 2 distinct epochs.
    n_peaks : int
        Number of peaks to return.

    Returns
    -------
    freq : float array (b, n_peaks)
        Candidate frequencies (c/d), best first; fewer peaks than n_peaks repeat the best.
    df : float
        The coarse grid step (c/d).
    """
    valid = np.isfinite(mag)
    t_all = time[valid]
    t0 = t_all.min()
    order = np.argsort(t_all, kind="stable")
    rows = np.nonzero(valid)[0][order]
    y = np.zeros((len(time), len(t_all)))
    dy = np.full((len(time), len(t_all)), np.inf)
    cols = np.arange(len(t_all))
    y[rows, cols] = mag[valid][order]
    dy[rows, cols] = err[valid][order]
    span = np.nanmax(time, axis=1) - np.nanmin(time, axis=1)
    df = 1.0 / (COARSE_SAMPLES_PER_PEAK * max(REFERENCE_BASELINE, span.max()))
    res = nifty_ls.lombscargle(
        t_all[order] - t0, y, dy, fmin=FMIN, fmax=FMAX, Nf=int(np.ceil((FMAX - FMIN) / df)) + 1,
        backend="finufft", nthreads=1,
    )
    freq = res.freq()
    power = np.where(spurious_mask(freq)[None, :], -np.inf, res.power)
    peak = np.full(power.shape, -np.inf)
    inner = (power[:, 1:-1] >= power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    peak[:, 1:-1] = np.where(inner, power[:, 1:-1], -np.inf)
    peak[:, 0] = np.where(power[:, 0] >= power[:, 1], power[:, 0], -np.inf)  # the ends of the range count too
    peak[:, -1] = np.where(power[:, -1] >= power[:, -2], power[:, -1], -np.inf)
    k = min(n_peaks, peak.shape[1])
    top = np.argpartition(-peak, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(peak, top, axis=1), axis=1), axis=1)
    top = np.where(np.isfinite(np.take_along_axis(peak, top, axis=1)), top, top[:, :1])
    return freq[top], res.df


def find_periods(time: np.ndarray, mag: np.ndarray, err: np.ndarray) -> dict[str, np.ndarray]:
    """Best Lomb-Scargle period of each light curve in a batch.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded at the end of each row, ascending.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded likewise.

    Returns
    -------
    dict of arrays (n,)
        ``period`` (d, float64), ``frequency`` (c/d), ``period_power`` (float32) and
        ``period_fap`` (float64). NaN for a row with fewer than 3 points or no time span.
    """
    n = time.shape[0]
    lengths = np.isfinite(mag).sum(axis=1)
    span = np.nanmax(time, axis=1, initial=-np.inf) - np.nanmin(time, axis=1, initial=np.inf)
    todo = np.flatnonzero((lengths >= 3) & (span > 0))
    n_peaks = max(N_CANDIDATES, eclipse.N_PEAKS)
    peaks = np.full((n, n_peaks), np.nan)
    dfs = np.full(n, np.nan)
    for lo in range(0, len(todo), _COARSE_BATCH):
        idx = todo[lo : lo + _COARSE_BATCH]
        w = int(lengths[idx].max())
        peaks[idx], dfs[idx] = coarse_candidates(time[idx, :w], mag[idx, :w], err[idx, :w], n_peaks)
    ok = np.isfinite(peaks[:, 0])
    # pass 2: every candidate over +-1 coarse step; pass 3: the winner over +-1 step of pass 2
    f_best, p_best = _refine(time, mag, err, peaks[:, :N_CANDIDATES], dfs, ok)
    f_best, p_best = _refine(time, mag, err, f_best[:, None], 2 * dfs / (REFINE_POINTS - 1), ok)
    # detached eclipsing binaries: the eclipse search replaces the sinusoid's frequency
    ecl = np.flatnonzero(ok & eclipse.dip_like(mag, err))
    for lo in range(0, len(ecl), _ECLIPSE_BATCH):
        idx = ecl[lo : lo + _ECLIPSE_BATCH]
        w = int(lengths[idx].max())
        f_ecl = eclipse.eclipse_frequencies(
            time[idx, :w], mag[idx, :w], err[idx, :w], peaks[idx, : eclipse.N_PEAKS], dfs[idx], FMIN, FMAX, spurious_mask
        )
        found = np.isfinite(f_ecl)
        idx, f_ecl = idx[found], f_ecl[found]
        f_best[idx] = f_ecl
        p_best[idx] = gls_power(time[idx, :w], mag[idx, :w], err[idx, :w], f_ecl[:, None])[:, 0]
    f_best[~ok] = np.nan
    p_best[~ok] = np.nan
    fap = np.full(n, np.nan)
    fap[ok] = baluev_fap(p_best[ok], lengths[ok], time[ok], err[ok])
    return {
        "frequency": f_best,
        "period": 1.0 / f_best,
        "period_power": p_best.astype(np.float32),
        "period_fap": fap,
    }


def _refine(time, mag, err, centres, half_width, ok):
    """Best exact GLS frequency and power on REFINE_POINTS frequencies over +-half_width of each centre."""
    n = len(centres)
    offsets = np.linspace(-1.0, 1.0, REFINE_POINTS)  # odd count: the centre itself is included
    grid = np.clip((centres[:, :, None] + half_width[:, None, None] * offsets).reshape(n, -1), FMIN, FMAX)
    power = np.full(grid.shape, -np.inf)
    power[ok] = gls_power(time[ok], mag[ok], err[ok], grid[ok])
    power[spurious_mask(grid) | ~np.isfinite(power)] = -np.inf
    best = np.argmax(power, axis=1)[:, None]
    return np.take_along_axis(grid, best, axis=1)[:, 0], np.take_along_axis(power, best, axis=1)[:, 0]
