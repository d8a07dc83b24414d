"""Eclipse search for detached eclipsing binaries (EA): a two-box phase-folding statistic.

A detached binary is flat outside two narrow eclipses (each a few per cent of the orbit), so a
sinusoid describes it badly and the highest Lomb-Scargle peak often falls on a harmonic or an
alias of the orbital frequency. The eclipse search therefore runs on light curves that look like
eclipses (:func:`dip_like`: several points far *fainter* than the bulk, few far brighter) and
tests, instead of a sinusoid, a model made for them.

The model, at a trial frequency, is the folded curve as a constant level plus two "boxes" of
free depth: the primary eclipse, and a secondary eclipse centred ``0.5 +- SECONDARY_GAP`` in
phase away from it (a near-circular orbit). Its chi-square improvement over a constant is the
three-group analysis of variance (Schwarzenberg-Czerny 1989)

    dchi2 = Y1^2 / W1 + Y2^2 / W2 + (Y1 + Y2)^2 / (W - W1 - W2)

with ``W_i = sum(1/err^2)`` and ``Y_i = sum((mag - mean) / err^2)`` over the points of box ``i``;
with one box it is the BLS statistic of Kovacs et al. (2002). The phase is cut into ``N_BINS``
bins and a box is any run of ``BOX_WIDTHS`` bins. The first box is the best single dip, the
second the best dip opposite it (or none, if that does not help). ``SECONDARY_GAP`` allows
for the small ``e cos(omega)`` of most detached binaries; a more eccentric one is still found
from its primary eclipse alone.

Trial frequencies (:func:`eclipse_frequencies`): the ``N_PEAKS`` highest peaks of the coarse
Lomb-Scargle periodogram and their sub-harmonics ``f / k`` for ``k = 1..N_SUBHARMONICS`` (an
eclipse train puts power on every harmonic of the orbital frequency), each on a local grid fine
enough for the narrowest box. The best of them is either the orbital frequency or twice it (two
similar eclipses stacked). When half of it explains the curve nearly as well (``HALF_RATIO`` of
the chi-square improvement), half of it is the orbital frequency: the search reports twice the
orbital frequency, i.e. half the orbital period, when two different eclipses are seen, and the
orbital frequency itself when a single eclipse per orbit is.
"""

from __future__ import annotations

import numpy as np

from latentcat.features.clean import robust_sigma

N_BINS = 50
BOX_WIDTHS = (1, 2, 4)  # bins: boxes of 0.02, 0.04 and 0.08 in phase
SECONDARY_GAP = 0.05  # the secondary box is centred 0.5 +- this from the primary (phase)
DIP_NSIGMA = 3.0
MIN_DIP_POINTS = 2
N_PEAKS = 10
N_SUBHARMONICS = 10
HALF_RATIO = 0.93
GRID_STEP_PHASE = 1.0 / (2 * N_BINS)  # phase drift allowed between trial frequencies over the baseline
_MAX_CELLS_PER_BATCH = 2_000_000


def _windows() -> np.ndarray:
    """For every box (first bin, width), the boxes that can be its secondary.

    Returns
    -------
    secondary : int array (n_windows, n_max)
        Indices of the boxes centred ``0.5 +- SECONDARY_GAP`` in phase away (never overlapping);
        rows are padded with ``n_windows``, an always-empty box.
    """
    start = np.tile(np.arange(N_BINS), len(BOX_WIDTHS))
    width = np.repeat(BOX_WIDTHS, N_BINS)
    centre = (start + 0.5 * width) / N_BINS
    gap = np.abs((centre[:, None] - centre[None, :] + 0.5) % 1.0 - 0.5)
    bins = (start[:, None] + np.arange(max(BOX_WIDTHS))) % N_BINS
    inside = np.arange(max(BOX_WIDTHS)) < width[:, None]
    member = np.zeros((len(start), N_BINS), bool)
    member[np.repeat(np.arange(len(start)), inside.sum(axis=1)), bins[inside]] = True
    overlap = (member.astype(int) @ member.T.astype(int)) > 0
    allowed = (np.abs(gap - 0.5) <= SECONDARY_GAP) & ~overlap
    n_max = int(allowed.sum(axis=1).max())
    secondary = np.full((len(start), n_max), len(start))
    for i, row in enumerate(allowed):
        secondary[i, : row.sum()] = np.flatnonzero(row)
    return secondary


_SECONDARY = _windows()


def dip_like(mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Which light curves look like eclipses: faint excursions far outnumber bright ones.

    A point is an excursion when it lies more than ``DIP_NSIGMA`` times the larger of the robust
    scatter (1.4826 MAD) and the median error from the median magnitude. A curve is dip-like
    with at least ``MIN_DIP_POINTS`` faint excursions and more than three times as many faint
    as bright ones.

    Parameters
    ----------
    mag, err : float arrays (n, m)
        NaN-padded magnitudes and errors.

    Returns
    -------
    bool array (n,)
    """
    med, sig = robust_sigma(mag)
    err_med, _ = robust_sigma(err)
    scale = DIP_NSIGMA * np.fmax(sig, err_med)[:, None]
    dev = np.where(np.isfinite(mag), mag - med[:, None], 0.0)
    faint = (dev > scale).sum(axis=1)
    bright = (-dev > scale).sum(axis=1)
    return (faint >= MIN_DIP_POINTS) & (faint > 3 * bright)


def two_box_statistic(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Chi-square improvement of the best primary + secondary box model at each trial frequency.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves (d, mag, mag).
    freq : float array (n, k)
        Trial frequencies (c/d) of each source.

    Returns
    -------
    float64 array (n, k), >= 0; NaN for a source with fewer than 3 points.
    """
    n, k = freq.shape
    out = np.full((n, k), np.nan)
    valid = np.isfinite(mag) & np.isfinite(time)
    n_pts = valid.sum(axis=1)
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, int(n_pts.mean() if n else 1) * k))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(n, lo + step))
        rows = rows[n_pts[rows] >= 3]
        if len(rows) == 0:
            continue
        # the valid points of the chunk, flattened: (p,) with their row in the chunk
        v = valid[rows]
        src, col = np.nonzero(v)
        r = rows[src]
        w = 1.0 / err[r, col] ** 2
        w_tot = np.bincount(src, w, len(rows))
        y = mag[r, col] - np.bincount(src, w * mag[r, col], len(rows))[src] / w_tot[src]
        t = time[r, col] - np.nanmin(np.where(v, time[rows], np.nan), axis=1)[src]
        phase = np.mod(t[:, None] * freq[r], 1.0)  # (p, k)
        cell = np.minimum((phase * N_BINS).astype(np.int64), N_BINS - 1)
        cell += (src[:, None] * k + np.arange(k)[None, :]) * N_BINS
        size = len(rows) * k * N_BINS
        shape = (len(rows), k, N_BINS)
        W = np.bincount(cell.ravel(), np.repeat(w, k), size).reshape(shape)
        Y = np.bincount(cell.ravel(), np.repeat(w * y, k), size).reshape(shape)
        out[rows] = _best_two_boxes(_box_sums(W), _box_sums(Y), w_tot[:, None, None])
    return out


def _box_sums(binned: np.ndarray) -> np.ndarray:
    """Sums over every box (..., n_windows + 1) of binned sums (..., N_BINS); the last box is empty."""
    wrap = np.concatenate([binned, binned[..., : max(BOX_WIDTHS)]], axis=-1)
    csum = np.concatenate([np.zeros(binned.shape[:-1] + (1,)), np.cumsum(wrap, axis=-1)], axis=-1)
    sums = [csum[..., w : w + N_BINS] - csum[..., :N_BINS] for w in BOX_WIDTHS]
    return np.concatenate(sums + [np.zeros(binned.shape[:-1] + (1,))], axis=-1)


def _best_two_boxes(Ww: np.ndarray, Yw: np.ndarray, W_all: np.ndarray) -> np.ndarray:
    """Best three-group chi-square from box sums (b, k, n_windows + 1): primary, then secondary."""
    with np.errstate(invalid="ignore", divide="ignore"):
        one = np.where((Yw > 0) & (Ww < W_all), Yw**2 * W_all / (Ww * (W_all - Ww)), 0.0)
        first = np.argmax(one, axis=2)
        W1 = np.take_along_axis(Ww, first[..., None], axis=2)
        Y1 = np.take_along_axis(Yw, first[..., None], axis=2)
        second = _SECONDARY[first]  # (b, k, n_max)
        W2 = np.take_along_axis(Ww, second, axis=2)
        Y2 = np.take_along_axis(Yw, second, axis=2)
        rest = W_all - W1 - W2
        two = np.where(
            (Y2 > 0) & (W1 > 0) & (rest > 0),
            Y1**2 / W1 + Y2**2 / W2 + (Y1 + Y2) ** 2 / rest,
            0.0,
        )
    return np.maximum(one.max(axis=2), two.max(axis=2))


def _local_grid(centres: np.ndarray, half_width: np.ndarray, step: np.ndarray, n_steps: int) -> np.ndarray:
    """Frequencies centre + j * step, |j| <= n_steps, clipped to +-half_width: (n, n_centres * (2 n_steps + 1))."""
    j = np.arange(-n_steps, n_steps + 1)
    off = np.clip(j[None, None, :] * step[:, None, None], -half_width[..., None], half_width[..., None])
    return (centres[..., None] + off).reshape(len(centres), -1)


def eclipse_frequencies(
    time: np.ndarray, mag: np.ndarray, err: np.ndarray, peaks: np.ndarray, df: np.ndarray, fmin: float, fmax: float, masked
) -> np.ndarray:
    """Frequency of successive eclipses of each light curve, from an eclipse search.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.
    peaks : float array (n, N_PEAKS)
        Coarse Lomb-Scargle peak frequencies (c/d), best first.
    df : float array (n,)
        The coarse grid step of each row (c/d).
    fmin, fmax : float
        The searched range (c/d); the returned frequency lies inside it.
    masked : callable
        ``masked(freq) -> bool array``: frequencies never to return (the scanning law's).

    Returns
    -------
    float64 array (n,)
        Twice the orbital frequency when a secondary eclipse is seen, the orbital frequency
        when only one eclipse per orbit is (see :mod:`latentcat.features.period`).
    """
    n = len(time)
    span = np.nanmax(time, axis=1) - np.nanmin(time, axis=1)
    step = GRID_STEP_PHASE / np.maximum(span, 1.0)  # the phase drifts by at most one step over the span
    k = np.arange(1, N_SUBHARMONICS + 1)
    centres = (peaks[:, :, None] / k).reshape(n, -1)  # (n, N_PEAKS * N_SUBHARMONICS)
    # a coarse peak lies within half a coarse step of the true one: df / 2k around f / k
    half = np.broadcast_to((0.5 * df[:, None] / k)[:, None, :], (n, peaks.shape[1], len(k))).reshape(n, -1)
    n_steps = int(np.ceil(np.nanmax(half / step[:, None]))) if n else 0
    grid = _local_grid(centres, half, step, n_steps)
    # duplicates (the clipped ends of small sub-harmonic intervals) cost time but change nothing
    grid = np.sort(grid, axis=1)
    grid = np.where(np.diff(grid, axis=1, prepend=-1.0) > 0.25 * step[:, None], grid, np.nan)
    grid = np.sort(grid, axis=1)[:, : int(np.isfinite(grid).sum(axis=1).max())]
    grid = np.where(np.isfinite(grid), grid, grid[:, :1])
    stat = _masked_statistic(time, mag, err, grid, fmin, fmax, masked)
    best = np.argmax(stat, axis=1)
    f_best = np.take_along_axis(grid, best[:, None], axis=1)[:, 0]
    s_best = np.take_along_axis(stat, best[:, None], axis=1)[:, 0]
    # is half the frequency (each eclipse seen once per cycle) nearly as good?
    half_grid = _local_grid(0.5 * f_best[:, None], 0.5 * step[:, None], 0.1 * step, 5)
    half_stat = _masked_statistic(time, mag, err, half_grid, fmin, fmax, masked)
    hb = np.argmax(half_stat, axis=1)
    f_half = np.take_along_axis(half_grid, hb[:, None], axis=1)[:, 0]
    use_half = np.take_along_axis(half_stat, hb[:, None], axis=1)[:, 0] >= HALF_RATIO * s_best
    f_orbit = np.where(use_half, f_half, f_best)
    return np.where(np.isfinite(s_best) & (s_best > 0), 2.0 * f_orbit, np.nan)


def _masked_statistic(time, mag, err, grid, fmin, fmax, masked) -> np.ndarray:
    """two_box_statistic, -inf where the grid or twice it is outside (fmin, fmax) or masked."""
    stat = two_box_statistic(time, mag, err, np.clip(grid, fmin / 2, fmax))
    bad = (grid < fmin / 2) | (2 * grid > fmax) | masked(grid) | masked(2 * grid) | ~np.isfinite(stat)
    stat[bad] = -np.inf
    return stat
