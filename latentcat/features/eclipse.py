"""Eclipse search for detached eclipsing binaries (EA): dip alignment, then a smoothness test.

A detached binary is flat outside two narrow eclipses (each a few per cent of the orbit), so a
sinusoid describes it badly and the highest Lomb-Scargle peak often falls on a harmonic or an
alias of the orbital frequency. The eclipse search runs on light curves that look like eclipses
(:func:`dip_like`: several points far *fainter* than the bulk, few far brighter) and has three
steps.

1. Dip alignment (:func:`alignment_frequencies`), a search of the whole range whose cost
   grows with the number of faint points, not of all points. At the frequency ``F`` of successive
   eclipses (twice the orbital one when both eclipses are seen, the orbital one or twice it when
   one is) every faint point (``DIP_NSIGMA`` above the median) lies near the same phase. The
   deepest faint point is the anchor; the deepest one at least ``MIN_ANCHOR_GAP`` days from it
   must then lie within ``ALIGN_HALF_WIDTH`` in phase of it, which leaves the fraction
   ``2 * ALIGN_HALF_WIDTH`` of the frequencies up to ``2 * MAX_ORBITAL_FREQUENCY``. On that
   set, on a grid whose phase error over the baseline stays below ``ALIGN_SMEAR``, every
   frequency is scored by how close (triangular kernel of half-width ``ALIGN_HALF_WIDTH``) the
   ``MAX_FAINT`` deepest faint points come to the anchor's phase; the ``N_ALIGN`` best are kept.
2. Selection (:func:`neighbour_statistic`). The orbital-frequency candidates are ``F / 2`` and
   ``F`` for each alignment frequency, and ``f`` and ``f / 2`` for each of the ``N_PEAKS`` highest
   Lomb-Scargle peaks, so the sinusoid's answer competes on equal terms. Each is scored by how
   well every point is predicted by the mean of the *other* points near it in phase
   (leave-one-out): ``1 - R / R0``, with ``R`` the leave-one-out residual sum of squares and
   ``R0`` that of the global mean. An eclipse needs no model of its shape: its points are
   predicted by their neighbours at any depth, while a wrong frequency leaves faint points
   among bright ones. The neighbourhood is the point's bin of ``N_BINS`` and the bins within
   ``MIN_DURATION / 2`` days (at least one bin each side), ``MIN_DURATION`` being about as long
   as the shortest eclipses of stars: a wrong, high frequency then cannot stack a few faint
   points into an eclipse of minutes. The ``N_REFINE`` best candidates are refined on a grid
   of ``GRID_STEP_PHASE`` phase drift over the baseline, and the best of all is kept.
3. Orbit or half orbit (:func:`two_box_statistic`). The best frequency is either the orbital
   frequency or twice it (two similar eclipses stacked). The model of a constant level plus two
   "boxes" of free depth, a primary eclipse and a secondary ``0.5 +- SECONDARY_GAP`` in phase
   away, decides: when half the frequency explains the curve nearly as well (``HALF_RATIO`` of
   the chi-square improvement), half of it is the orbital frequency. The search reports twice
   the orbital frequency, i.e. half the orbital period, when two different eclipses are seen,
   and the orbital frequency itself when a single eclipse per orbit is.

The two-box chi-square improvement over a constant is the three-group analysis of variance
(Schwarzenberg-Czerny 1989)

    dchi2 = Y1^2 / W1 + Y2^2 / W2 + (Y1 + Y2)^2 / (W - W1 - W2)

with ``W_i = sum(1/err^2)`` and ``Y_i = sum((mag - mean) / err^2)`` over the points of box ``i``;
with one box it is the BLS statistic of Kovacs et al. (2002). The phase is cut into ``N_BINS``
bins and a box is any run of ``BOX_WIDTHS`` bins.

What the data allow. An EA's period is fixed by the eclipses that were caught. On a simulated
DR3-like survey (100,000 sources, seed 11; EA with >= 40 cleaned epochs and G < 18) the period
is recovered within 1 % for 93-100 % of the EA with eight or more distinct eclipses holding an
epoch at least 5 sigma deep, 84 % with six or seven, 75 % with four or five and 24 % with two or
three (77 % of all 811 EA; benchmarks/features.py): with few eclipses on the curve, other
periods fold it just as well. With eclipse widths from Kepler's third law (narrower at long
periods; 20,000 sources, seeds 41 and 51) 62-67 % of the EA are recovered: 89-99 % of those with
eight or more eclipses caught, 22 % of those with two or three.
"""

from __future__ import annotations

import numpy as np

from latentcat.features.clean import robust_sigma

N_BINS = 50
BOX_WIDTHS = (1, 2, 4)  # bins: boxes of 0.02, 0.04 and 0.08 in phase
SECONDARY_GAP = 0.05  # the secondary box is centred 0.5 +- this from the primary (phase)
DIP_NSIGMA = 3.0
MIN_DIP_POINTS = 2
HALF_RATIO = 0.93
GRID_STEP_PHASE = 1.0 / (2 * N_BINS)  # phase drift allowed between trial frequencies over the baseline

# dip alignment
MAX_FAINT = 16  # deepest faint points used
MAX_ORBITAL_FREQUENCY = 5.0  # c/d: orbital periods >= 0.2 d, the limit of the DR3 EB catalogue (Mowlavi et al. 2023)
MIN_ANCHOR_GAP = 1.0  # d between the two anchors (points of one visit say nothing about the period)
ALIGN_HALF_WIDTH = 0.15  # phase: the eclipse points around the anchor (wide eclipses, e cos w)
ALIGN_SMEAR = 0.05  # phase error of the alignment grid over the baseline
N_ALIGN = 256  # alignment frequencies kept

# selection
N_PEAKS = 5  # Lomb-Scargle peaks competing with the alignment frequencies
N_REFINE = 16  # candidates refined
#: Frequency ratios that fold the same eclipses (the margin's runner-up excludes them).
UNIQUE_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0, 1.5, 2.0 / 3.0)
#: Time span (d) of the neighbourhood in the selection, about the shortest eclipse of main-sequence
#: binaries (~1 h). A central eclipse of two main-sequence stars
#: lasts (P / pi) (R1 + R2) / a = 0.076 d (R1 + R2)/Rsun (M/Msun)^(-1/3) (P/d)^(1/3) (Kepler's
#: third law): 0.6 h for two 0.2 Msun dwarfs at P = 0.2 d, 1.4 h for two 0.5 Msun ones at 0.5 d.
MIN_DURATION = 0.04
_MAX_CELLS_PER_BATCH = 2_000_000


def _point_chunks(time: np.ndarray, mag: np.ndarray, k: int):
    """Chunks of sources with >= 3 valid points, sized so chunk points x ``k`` stay bounded.

    Yields ``(rows, v, src, col, n_pts)``: the chunk's row numbers, its valid-point mask, the
    valid points flattened as (row in the chunk, column), and every source's point count.
    """
    n = len(mag)
    valid = np.isfinite(mag) & np.isfinite(time)
    n_pts = valid.sum(axis=1)
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, int(n_pts.mean() if n else 1) * k))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(n, lo + step))
        rows = rows[n_pts[rows] >= 3]
        if len(rows):
            v = valid[rows]
            src, col = np.nonzero(v)
            yield rows, v, src, col, n_pts


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


def excursions(mag: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points far fainter and far brighter than the bulk of each light curve (for an
    eclipsing binary, the faint ones are its points in eclipse).

    A point is an excursion when it lies more than ``DIP_NSIGMA`` times the larger of the robust
    scatter (1.4826 MAD) and the median error from the median magnitude.

    Parameters
    ----------
    mag, err : float arrays (n, m)
        NaN-padded magnitudes and errors.

    Returns
    -------
    faint, bright : bool arrays (n, m)
    """
    med, sig = robust_sigma(mag)
    err_med, _ = robust_sigma(err)
    scale = DIP_NSIGMA * np.fmax(sig, err_med)[:, None]
    dev = np.where(np.isfinite(mag), mag - med[:, None], 0.0)
    return dev > scale, -dev > scale


def dip_like(mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Which light curves look like eclipses: faint excursions far outnumber bright ones.

    A curve is dip-like with at least ``MIN_DIP_POINTS`` faint `excursions` and more than three
    times as many faint as bright ones.

    Parameters
    ----------
    mag, err : float arrays (n, m)
        NaN-padded magnitudes and errors.

    Returns
    -------
    bool array (n,)
    """
    faint, bright = excursions(mag, err)
    faint, bright = faint.sum(axis=1), bright.sum(axis=1)
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
    for rows, v, src, col, n_pts in _point_chunks(time, mag, k):
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


def neighbour_statistic(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """How well each point of the folded curve is predicted by its phase neighbours (leave-one-out).

    The phase is cut into ``N_BINS`` bins; a point in bin ``b`` is predicted by the mean of the
    other points in bins ``b - h .. b + h``, with ``h`` the larger of one bin and
    ``MIN_DURATION / 2`` days at the trial frequency (at most a quarter of the bins), and by the
    global mean when it has no neighbour. Errors are not used: the statistic asks whether the
    curve is smooth in phase, not how precisely.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves (d, mag, mag); ``err`` is accepted for a uniform signature.
    freq : float array (n, k)
        Trial frequencies (c/d) of each source.

    Returns
    -------
    float64 array (n, k)
        ``1 - R / R0``: ``R`` the leave-one-out residual sum of squares, ``R0`` the sum of
        squared deviations from the mean. Near 0 for noise, 1 for a perfectly smooth fold;
        NaN for a source with fewer than 3 points.
    """
    n, k = freq.shape
    out = np.full((n, k), np.nan)
    h_max = N_BINS // 4
    for rows, v, src, col, n_pts in _point_chunks(time, mag, k):
        r = rows[src]
        y = mag[r, col] - (np.bincount(src, mag[r, col], len(rows)) / n_pts[rows])[src]
        t = time[r, col] - np.nanmin(np.where(v, time[rows], np.nan), axis=1)[src]
        phase = np.mod(t[:, None] * freq[r], 1.0)  # (p, k)
        cell = np.minimum((phase * N_BINS).astype(np.int64), N_BINS - 1)
        cell += (src[:, None] * k + np.arange(k)[None, :]) * N_BINS
        size, shape = len(rows) * k * N_BINS, (len(rows), k, N_BINS)
        N = np.bincount(cell.ravel(), None, size).reshape(shape)
        Y = np.bincount(cell.ravel(), np.repeat(y, k), size).reshape(shape)
        Q = np.bincount(cell.ravel(), np.repeat(y * y, k), size).reshape(shape)
        h = np.clip(np.ceil(0.5 * MIN_DURATION * freq[rows] * N_BINS), 1, h_max).astype(np.int64)[..., None]
        c, S = _circular_window_sums(N, h, h_max), _circular_window_sums(Y, h, h_max)
        # sum over the points i of bin b of (y_i - (S - y_i) / (c - 1))^2, from the bin sums
        with np.errstate(invalid="ignore", divide="ignore"):
            res = np.where(c > 1, (c * c * Q - 2 * c * S * Y + N * S * S) / (c - 1.0) ** 2, Q)
        out[rows] = 1.0 - res.sum(axis=2) / np.bincount(src, y * y, len(rows))[:, None]
    return out


def _circular_window_sums(x: np.ndarray, h: np.ndarray, h_max: int) -> np.ndarray:
    """Sums of x (..., B) over the circular windows b - h .. b + h, h (..., 1) <= h_max per row."""
    ext = np.concatenate([x[..., -h_max:], x, x[..., : h_max + 1]], axis=-1)
    csum = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(ext, axis=-1)], axis=-1)
    b = np.arange(x.shape[-1]) + h_max
    return np.take_along_axis(csum, b + h + 1, axis=-1) - np.take_along_axis(csum, b - h, axis=-1)


def alignment_frequencies(time: np.ndarray, mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Frequencies that bring the faint points of each light curve to one phase.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.

    Returns
    -------
    float64 array (n, N_ALIGN)
        The best-aligning frequencies (c/d), unordered; all NaN for a curve with fewer than 3
        faint points or none at least ``MIN_ANCHOR_GAP`` days from the deepest.
    """
    n = len(time)
    out = np.full((n, N_ALIGN), np.nan)
    med, sig = robust_sigma(mag)
    err_med, _ = robust_sigma(err)
    dev = np.where(np.isfinite(mag), mag - med[:, None], -np.inf)
    order = np.argsort(-dev, axis=1)[:, :MAX_FAINT]
    faint = np.take_along_axis(dev, order, axis=1) > DIP_NSIGMA * np.fmax(sig, err_med)[:, None]
    t_faint = np.where(faint, np.take_along_axis(time, order, axis=1), np.nan)  # deepest first
    rel = t_faint - t_faint[:, :1]
    far = np.abs(rel) > MIN_ANCHOR_GAP  # NaN compares False
    delta = np.abs(np.take_along_axis(rel, np.argmax(far, axis=1)[:, None], axis=1)[:, 0])
    todo = np.flatnonzero(far.any(axis=1) & (faint.sum(axis=1) >= 3))
    if len(todo) == 0:
        return out
    span = np.nanmax(time[todo], axis=1) - np.nanmin(time[todo], axis=1)
    df = ALIGN_SMEAR / span  # the phase of any point moves by at most ALIGN_SMEAR per step
    d = delta[todo]
    # F in ((j - w) / d, (j + w) / d) for j = 1, 2, ...: n_per points per integer j
    n_per = np.ceil(2 * ALIGN_HALF_WIDTH / (df * d)).astype(np.int64) + 1
    n_grid = np.floor(2 * MAX_ORBITAL_FREQUENCY * d + ALIGN_HALF_WIDTH).astype(np.int64) * n_per
    width = int(n_grid.max())
    chunk = max(1, _MAX_CELLS_PER_BATCH // max(1, width * MAX_FAINT))
    keep = min(N_ALIGN, width)
    # the score only ranks frequencies within a row: a point that is not faint may count as a
    # constant 1 (time 0), and float32 keeps the phase to ~1e-3 cycle at 10^4 cycles
    rel32 = np.where(np.isfinite(rel), rel, 0.0).astype(np.float32)
    for lo in range(0, len(todo), chunk):
        sl = slice(lo, lo + chunk)
        g = np.arange(width)[None, :]
        j, u = g // n_per[sl, None] + 1, g % n_per[sl, None]
        F = (j - ALIGN_HALF_WIDTH) / d[sl, None] + u * df[sl, None]
        F = np.where(g < n_grid[sl, None], F, np.nan)
        cycles = F.astype(np.float32)[:, :, None] * rel32[todo[sl]][:, None, :]
        cycles -= np.rint(cycles)
        np.abs(cycles, out=cycles)  # the phase distance to the anchor, in cycles
        np.multiply(cycles, np.float32(-1.0 / ALIGN_HALF_WIDTH), out=cycles)
        cycles += np.float32(1.0)
        np.maximum(cycles, np.float32(0.0), out=cycles)  # the triangular kernel
        score = cycles.sum(axis=2)
        score[np.isnan(F)] = -np.inf
        best = np.argpartition(-score, keep - 1, axis=1)[:, :keep]
        out[todo[sl], :keep] = np.take_along_axis(F, best, axis=1)
    return out


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
    freq : float64 array (n,)
        Twice the orbital frequency when a secondary eclipse is seen, the orbital frequency
        when only one eclipse per orbit is (see :mod:`latentcat.features.period`); NaN where
        no candidate could be tested.
    margin : float64 array (n,)
        How much better the chosen fold is than the best other candidate (`neighbour_statistic`
        of the winner minus that of the best candidate that is not a multiple or fraction of
        it, `_runner_up`): near 0 when the eclipses caught fold as well at another period;
        inf when no other candidate was tested, NaN where no frequency was found.
    """
    span = np.maximum(np.nanmax(time, axis=1) - np.nanmin(time, axis=1), 1.0)
    step = GRID_STEP_PHASE / span  # the phase drifts by at most one step over the span
    smear = ALIGN_SMEAR / span
    aligned = alignment_frequencies(time, mag, err)
    # Lomb-Scargle peaks f: orbital f (one eclipse per cycle, or a sinusoid-like binary) and f / 2
    ls = np.concatenate([peaks, peaks / 2], axis=1)
    half_ls = 0.5 * df[:, None] * np.repeat([1.0, 0.5], peaks.shape[1])[None, :]  # a coarse peak is within df / 2
    grid_ls = _local_grid(ls, half_ls, step, int(np.ceil(np.nanmax(0.5 * df / step))))
    f_best, found, margin = np.full(len(time), np.nan), np.zeros(len(time), bool), np.full(len(time), np.nan)
    has = np.isfinite(aligned).any(axis=1)
    for rows in (np.flatnonzero(has), np.flatnonzero(~has)):
        if len(rows) == 0:
            continue
        t, m, e = time[rows], mag[rows], err[rows]
        if has[rows[0]]:
            # orbital candidates: F / 2 (two eclipses per orbit) and F (one), at the alignment grid's precision
            cand = np.concatenate([aligned[rows] / 2, aligned[rows]], axis=1)
            cand = np.where(np.isfinite(cand), cand, peaks[rows, :1] / 2)
            stat = _masked_statistic(neighbour_statistic, t, m, e, cand, fmin, fmax, masked)
            top = np.take_along_axis(cand, np.argsort(-stat, axis=1)[:, :N_REFINE], axis=1)
        else:  # no alignment candidate: the lone stand-in peak / 2 is refined once, not N_REFINE times
            top = peaks[rows, :1] / 2
        grid_align = _local_grid(top, np.broadcast_to(smear[rows, None], top.shape), step[rows],
                                 int(np.ceil(ALIGN_SMEAR / GRID_STEP_PHASE)))
        grid = np.concatenate([grid_align, grid_ls[rows]], axis=1)
        stat = _masked_statistic(neighbour_statistic, t, m, e, grid, fmin, fmax, masked)
        best = np.argmax(stat, axis=1)[:, None]
        f_best[rows] = np.take_along_axis(grid, best, axis=1)[:, 0]
        found[rows] = np.isfinite(np.take_along_axis(stat, best, axis=1)[:, 0])
        margin[rows] = np.take_along_axis(stat, best, axis=1)[:, 0] - _runner_up(grid, stat, f_best[rows], span[rows])
    # is half the frequency (each eclipse seen once per cycle) nearly as good for the two-box model?
    near = _local_grid(f_best[:, None], 2 * step[:, None], 0.5 * step, 4)
    s_best = _masked_statistic(two_box_statistic, time, mag, err, near, fmin, fmax, masked).max(axis=1)
    half_grid = _local_grid(0.5 * f_best[:, None], step[:, None], 0.25 * step, 4)
    half_stat = _masked_statistic(two_box_statistic, time, mag, err, half_grid, fmin, fmax, masked)
    hb = np.argmax(half_stat, axis=1)[:, None]
    f_half = np.take_along_axis(half_grid, hb, axis=1)[:, 0]
    use_half = np.take_along_axis(half_stat, hb, axis=1)[:, 0] >= HALF_RATIO * s_best
    f_orbit = np.where(use_half, f_half, f_best)
    return np.where(found, 2.0 * f_orbit, np.nan), np.where(found, margin, np.nan)


def _runner_up(grid: np.ndarray, stat: np.ndarray, f_best: np.ndarray, span: np.ndarray) -> np.ndarray:
    """The best statistic of each row at a frequency that is not the best one, nor its multiple
    or fraction by ``UNIQUE_RATIOS`` (those fold the same eclipses): more than one cycle over
    the span away from all of them. -inf where there is none."""
    related = np.zeros(grid.shape, bool)
    for r in UNIQUE_RATIOS:
        related |= np.abs(grid - r * f_best[:, None]) * span[:, None] < 1.0
    return np.max(np.where(related | ~np.isfinite(stat), -np.inf, stat), axis=1)


def _masked_statistic(statistic, time, mag, err, grid, fmin, fmax, masked) -> np.ndarray:
    """statistic(...) on an orbital-frequency grid, -inf where the grid or twice it is outside (fmin, fmax), masked or NaN."""
    stat = statistic(time, mag, err, np.clip(np.nan_to_num(grid, nan=fmin), fmin / 2, fmax))
    with np.errstate(invalid="ignore"):
        bad = ~((grid >= fmin / 2) & (2 * grid <= fmax)) | masked(grid) | masked(2 * grid) | ~np.isfinite(stat)
    stat[bad] = -np.inf
    return stat
