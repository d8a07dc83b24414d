"""dm-dt maps: the distribution of magnitude differences per time lag (Huijse et al. 2025).

For every pair of G epochs ``i < j`` of a source, ``dt = t_j - t_i`` and ``|dm| = |z_j - z_i|``
where ``z = (mag - mean) / std`` (sample std, ddof=1; a source with zero scatter has z = 0).
Pairs are counted on a 10 x 20 grid:

- dt bins: edges ``1/f`` for ``f = 25, 8, 3, 0.5, 1/20, 1/50, 1/100, 1/200, 1/500, 1/1000,
  1/2500`` c/d, i.e. 0.04 d to 2500 d. Pairs closer than 0.04 d or further than 2500 d apart
  fall outside the map and are not counted.
- |dm| bins: 19 equal steps over [0, 3] and a last bin [3, inf).

Each dt column is normalised to ``p(|dm| | dt)`` (it sums to 1). The per-cell uncertainty is
the Poisson error of the count with a floor of one pair, on the same scale:
``sqrt(count + 1) / (N_col + 1)`` where ``N_col`` is the column's number of pairs. It behaves
like ``p / sqrt(count)`` for well-filled cells; an **empty column** (no pairs at that lag) is
all zeros with uncertainty 1 in every cell - "no information" on a probability scale.
"""

from __future__ import annotations

import warnings

import numpy as np

DT_FREQUENCIES = np.array([4e-4, 1e-3, 1 / 500, 1 / 200, 1e-2, 1 / 50, 1 / 20, 0.5, 3.0, 8.0, 25.0])
DT_EDGES = np.sort(1.0 / DT_FREQUENCIES)  # days, ascending: 0.04 ... 2500
DM_MAX = 3.0
N_DT = len(DT_EDGES) - 1
N_DM = 20
DM_STEP = DM_MAX / (N_DM - 1)
N_CELLS = N_DT * N_DM

_MAX_PAIRS_PER_BATCH = 4_000_000


def standardise(mag: np.ndarray) -> np.ndarray:
    """Standardise each row of a NaN-padded magnitude array by its mean and sample std.

    Parameters
    ----------
    mag : float array (n, m)

    Returns
    -------
    float64 array (n, m); rows with zero or undefined scatter become 0 (padding stays NaN).
    """
    m = mag.astype(np.float64)
    with warnings.catch_warnings():  # rows with fewer than 2 points give NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m, axis=1, keepdims=True)
        std = np.nanstd(m, axis=1, ddof=1, keepdims=True)
    ok = np.isfinite(std) & (std > 0)
    return np.where(ok, (m - mean) / np.where(ok, std, 1.0), np.where(np.isnan(m), np.nan, 0.0))


def dmdt_counts(time: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pair counts on the dm-dt grid for a batch of sources.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs, NaN-padded.
    z : float array (n, m)
        Standardised magnitudes, NaN-padded.

    Returns
    -------
    int64 array (n, N_DT, N_DM)
    """
    n, m = time.shape
    counts = np.zeros((n, N_CELLS), dtype=np.int64)
    if n == 0 or m < 2:
        return counts.reshape(n, N_DT, N_DM)
    i, j = np.triu_indices(m, k=1)
    step = max(1, _MAX_PAIRS_PER_BATCH // len(i))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        dt = time[lo:hi, j] - time[lo:hi, i]
        dm = np.abs(z[lo:hi, j] - z[lo:hi, i])
        dt_bin = np.searchsorted(DT_EDGES, dt, side="right") - 1
        dm_bin = np.minimum(np.floor(dm / DM_STEP), N_DM - 1)
        use = np.isfinite(dt) & np.isfinite(dm) & (dt_bin >= 0) & (dt_bin < N_DT)
        rows = np.broadcast_to(np.arange(hi - lo)[:, None], dt.shape)
        cell = rows[use] * N_CELLS + dt_bin[use] * N_DM + dm_bin[use].astype(np.int64)
        counts[lo:hi] = np.bincount(cell, minlength=(hi - lo) * N_CELLS).reshape(hi - lo, N_CELLS)
    return counts.reshape(n, N_DT, N_DM)


def normalise_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn pair counts into ``p(|dm| | dt)`` maps and their uncertainties.

    Parameters
    ----------
    counts : int array (n, N_DT, N_DM)

    Returns
    -------
    dmdt, dmdt_err : float32 arrays (n, N_DT * N_DM), dt-major.
    """
    col = counts.sum(axis=2, keepdims=True)
    p = counts / np.maximum(col, 1)
    err = np.sqrt(counts + 1.0) / (col + 1.0)
    n = counts.shape[0]
    return p.reshape(n, -1).astype(np.float32), err.reshape(n, -1).astype(np.float32)


def dmdt_maps(time: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dm-dt maps of a batch of cleaned light curves.

    Sources are processed in groups of similar length, so a long light curve does not make
    every short one pay for its padding.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded at the end of each row.
    mag : float array (n, m)
        G magnitudes, NaN-padded likewise.

    Returns
    -------
    dmdt, dmdt_err : float32 arrays (n, 200), dt-major (10 dt bins x 20 |dm| bins).
    """
    n = time.shape[0]
    lengths = np.isfinite(mag).sum(axis=1)
    z = standardise(mag)
    counts = np.zeros((n, N_DT, N_DM), dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    pairs = np.maximum(lengths[order], 2) * (np.maximum(lengths[order], 2) - 1) // 2
    start = 0
    while start < n:
        # padded pair count of the group order[start:stop] is (stop - start) * pairs[stop - 1]
        cost = np.arange(1, n - start + 1) * pairs[start:]
        stop = start + max(1, int(np.searchsorted(cost, _MAX_PAIRS_PER_BATCH, side="right")))
        idx = order[start:stop]
        width = int(lengths[idx].max())
        counts[idx] = dmdt_counts(time[idx, :width], z[idx, :width])
        start = stop
    return normalise_counts(counts)
