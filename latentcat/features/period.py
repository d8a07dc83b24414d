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

1. A coarse periodogram by non-uniform FFT (finufft, O(N log N), in single precision at
   ``COARSE_EPS``, what ranking its peaks needs; `coarse_periodogram`) on a common grid of
   ``COARSE_SAMPLES_PER_PEAK = 2`` points per peak width ``1/T``, with ``T`` the larger of
   ``REFERENCE_BASELINE`` (1100 d, longer than any DR3 light curve) and the span of the
   batch's epochs, so for DR3 data every source gets the same grid whatever its neighbours.
2. The ``N_CANDIDATES`` highest local maxima of the coarse periodogram, and the ``N_LONG``
   highest below ``F_LONG`` (periods above 10 d: the long-period search), are each refined
   with an exact generalised Lomb-Scargle (floating mean, ``1/err^2`` weights; Zechmeister &
   Kurster 2009, the same statistic as astropy's ``LombScargle(..., normalization='standard')``)
   on ``REFINE_POINTS`` frequencies spanning +-1 coarse step around it. The highest candidate
   that is not an unconfirmed alias (below) wins and is refined once more on a grid 10 times
   finer. The refinement is vectorised over all sources of a batch (`grid_power`: one complex
   exponential per epoch and grid, the other frequencies by recurrence).

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

Alias bands of the scanning law. Gaia sees a source in visits: a transit of the preceding
field of view and one of the following field 106.5 min later (or 4.2 h later, on the next
spin), sometimes more on the following 6-h spins, then nothing for weeks. At frequencies where
the epochs of every visit fall at nearly one phase, a slow variation (a long-period or
irregular variable, a quasar) is fitted by a sinusoid about as well as by itself: the
sinusoid orders the visits by brightness. On real DR3 light curves of long-period variables
the highest Lomb-Scargle peak then often lies at 11.8-12.7 c/d, three times the spin frequency,
where both spacings are nearly whole cycles. Such bands are computed from each curve's own
sampling (`alias_bands`: the visit window `visit_window` at least ``V_ALIAS``, above its main
lobe at low frequency) and are as wide as that sampling makes them: about 11-13.5 c/d for the
usual visits, with bands around 4, 8, 16 and 20 c/d where 6-h spins dominate. A candidate inside a band is kept only when the variation *within* the visits
confirms it (`visit_confirmed`): a real signal at ``f`` moves the magnitudes from one epoch of a
visit to the next as the sinusoid predicts, a slow variation does not. When every candidate is
an unconfirmed alias, the best of the long-period search is reported.

Reliability. ``period_reliable`` is what the fold stage and the catalogue's users trust, so it
asks each kind of light curve the question that can fail for it.

* Every period must be constrained by the data: at least ``MIN_CYCLES`` cycles over the time
  span and no gap in phase wider than ``MAX_PHASE_GAP`` in the fold (`phase_gap`). A 700-d
  "period" on a 1000-d light curve is one rise and one fall, not a period.
* A sinusoid-like period (pulsators, contact and ellipsoidal binaries) needs ``period_fap <
  FAP_RELIABLE`` (white noise), a cross-half ``period_coherence`` of at least ``COHERENCE_MIN``
  (`coherence`: fitted to the first half of the epochs in time, a Fourier series of
  ``COHERENCE_HARMONICS`` harmonics predicts the second half, and the reverse; the smaller R^2
  of the two), and a false-alarm probability below ``FAP_RELIABLE`` against the curve's own
  red noise (`red_noise_fap`). The last is what long-period variables, quasars and young stars
  need: their variability has a power spectrum that rises to low frequencies, and Gaia's
  sampling turns it into peaks at any period that a white-noise FAP calls significant and that
  even hold across the two halves of a curve. For an eclipse-like curve this test runs at the
  period or at half of it, whichever the sinusoid prefers (the eclipse search reports the
  orbital period when one eclipse per orbit is seen).
* An eclipse-like curve (``eclipse.dip_like``) may instead show eclipses that repeat from
  cycle to cycle: a fold coherence (`fold_coherence`, each point predicted by its nearest
  neighbour in phase from another cycle) of at least ``FOLD_COHERENCE_MIN`` at the period or
  at twice it, with faint points in at least ``MIN_ECLIPSES`` visits (`eclipse_visits`) and,
  for a period of the eclipse search, a lead of at least ``ECLIPSE_MARGIN_MIN`` in its
  statistic over the best candidate that is not a multiple or fraction of it. With few
  eclipses caught, other periods fold them as well (benchmarks/features.py), and the period is
  not flagged. For such curves ``period_coherence`` holds the fold coherence.

What the flag promises, measured on simulated classes (``python benchmarks/realism.py --only
reliability``, seeds 41 and 51, G 11-16, the simulator's scanning law): see docs/schemas.md.
Noise and stochastic variables (quasars, irregular long-period variables, young stars) get
periods that are not reliable, and the fold stage then shows their light curve in time order
instead of folded (:mod:`latentcat.features.fold`).
"""

from __future__ import annotations

import functools

import numpy as np
import finufft
from scipy.special import gammaln

from latentcat.features import eclipse

FMIN = 1e-3
FMAX = 25.0
COARSE_SAMPLES_PER_PEAK = 2
#: The coarse periodogram only ranks peaks for the exact refinement: single-precision NUFFTs at
#: COARSE_EPS are enough (`coarse_periodogram`; their error is dominated by the float32 rounding
#: of the times, ~5e-4 of the sums). It keeps the floating mean: without it (one NUFFT less per
#: curve) the long-period peaks of slow irregular variables weaken and their scanning-law
#: aliases win again (tests/test_features.py).
COARSE_EPS = 1e-4
#: finufft's oversampling of the coarse grid: with DR3's 55,001 coarse frequencies, 1.15 makes
#: its FFTs 64,000 long (2^9 5^3) against 69,120 at finufft's usual 1.25, and each transform
#: 1.7x faster at the same precision (a smaller factor needs a wider kernel, which COARSE_EPS
#: keeps within what single precision allows).
COARSE_UPSAMPLING = 1.15
#: Where the coarse power's denominator ``CC SS - CS^2`` (`_gls_from_sums`, at most 1/4) is below
#: this, single precision is not enough and the power there is computed exactly.
EXACT_BELOW_DENOMINATOR = 0.02
N_CANDIDATES = 5
REFERENCE_BASELINE = 1100.0  # d; sets the coarse grid step (DR3 spans up to ~1050 d)
REFINE_POINTS = 21

#: The long-period search: the N_LONG highest coarse peaks below F_LONG (periods above 10 d)
#: are always among the candidates, so a slow variable is not left with only the aliases of
#: its variation at high frequency to choose from.
F_LONG = 0.1
N_LONG = 3

#: Alias bands (see the module docstring): transits less than VISIT_GAP apart form one visit;
#: the main lobe of the visit window ends where the window first drops below V_ALIAS (searched
#: on a grid of EDGE_STEP up to EDGE_FMAX), and above it a frequency where the window is at
#: least V_ALIAS again is in an alias band.
VISIT_GAP = 0.5
V_ALIAS = 0.5
EDGE_STEP = 0.02
EDGE_FMAX = 6.0
#: A candidate in an alias band is kept only when the data confirm, within the visits, the
#: variation its sinusoid predicts there: slope at least VISIT_MIN_SLOPE, VISIT_MIN_Z sigma from 0.
VISIT_MIN_SLOPE = 0.5
VISIT_MIN_Z = 4.0

#: Reliability (``period_reliable``), see the module docstring. A Lomb-Scargle period needs a
#: false-alarm probability below FAP_RELIABLE against white noise (``period_fap``) and against
#: the curve's own red noise (``period_fap_red``), and a cross-half coherence of at least
#: COHERENCE_MIN (a fit of COHERENCE_HARMONICS harmonics on one half of the curve in time
#: predicts the other). The period of an eclipse-like curve may instead have a fold coherence of
#: at least FOLD_COHERENCE_MIN (each point predicted by its nearest neighbour in phase from
#: another cycle) at the period or twice it, faint points in at least MIN_ECLIPSES visits and,
#: when the eclipse search chose it, an ECLIPSE_MARGIN_MIN lead over any other period that folds
#: the eclipses (``eclipse.eclipse_frequencies``). Every period needs MIN_CYCLES cycles over the
#: time span and no gap in phase wider than MAX_PHASE_GAP.
FAP_RELIABLE = 1e-3
COHERENCE_MIN = 0.3
COHERENCE_HARMONICS = 2
FOLD_COHERENCE_MIN = 0.6
MIN_ECLIPSES = 5
ECLIPSE_MARGIN_MIN = 0.08
MIN_CYCLES = 1.5
MAX_PHASE_GAP = 0.5
#: The red-noise test (`red_noise_fap`): a damped random walk (Ornstein-Uhlenbeck process) of
#: time scale tau and variance s^2 on top of the errors is the noise of both models; each model
#: takes the best (tau, s^2) of RED_TAUS x RED_VARIANCES (s^2 as a fraction of the curve's
#: variance; tau = 0 is white noise in excess of the errors, s^2 = 0 the errors alone).
RED_TAUS = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
RED_VARIANCES = (0.0, 1.0 / 32, 1.0 / 8, 1.0 / 2, 2.0)

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
_COARSE_BATCH = 16  # sources sharing the NUFFTs of `coarse_periodogram`
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
        terms = _gls_terms(time[sl], mag[sl], err[sl])
        out[sl] = _gls_from_phasors(np.exp(2j * np.pi * freq[sl][:, :, None] * terms[2][:, None, :]), terms)
    return out


def grid_power(time: np.ndarray, mag: np.ndarray, err: np.ndarray, start: np.ndarray, step: np.ndarray,
               count: int) -> np.ndarray:
    """`gls_power` on equally spaced frequencies ``start + j * step``, ``j < count``: the same
    power, with the cosines and sines of each grid from one complex exponential per epoch and
    a recurrence (``exp(i(a + b)) = exp(ia) exp(ib)``) instead of one per frequency.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.
    start : float array (n, k)
        First frequency of each of a source's ``k`` grids (c/d).
    step : float array (n,)
        Spacing of a source's grids (c/d).
    count : int
        Frequencies per grid.

    Returns
    -------
    float64 array (n, k * count): grid by grid, in order.
    """
    n, m = time.shape
    k = start.shape[1]
    out = np.empty((n, k * count), dtype=np.float64)
    rows = max(1, _MAX_CELLS_PER_BATCH // max(1, m * k * count))
    for lo in range(0, n, rows):
        sl = slice(lo, min(n, lo + rows))
        terms = _gls_terms(time[sl], mag[sl], err[sl])
        t = terms[2]
        z = np.empty((t.shape[0], k, count, m), np.complex128)
        z[:, :, 0] = np.exp(2j * np.pi * start[sl][:, :, None] * t[:, None, :])
        turn = np.exp(2j * np.pi * step[sl][:, None, None] * t[:, None, :])
        for j in range(1, count):
            np.multiply(z[:, :, j - 1], turn, out=z[:, :, j])
        z = z.reshape(t.shape[0], k * count, m)
        out[sl] = _gls_from_phasors(z, terms)
    return out


def _gls_terms(time: np.ndarray, mag: np.ndarray, err: np.ndarray) -> tuple:
    """What the generalised Lomb-Scargle power of a batch needs besides the trigonometric
    terms: normalised weights ``w``, centred magnitudes ``y``, times from each curve's first
    epoch ``t`` (0 on padding), ``sum w y^2`` and the valid-point mask."""
    valid = np.isfinite(mag)
    w = np.where(valid, 1.0 / np.where(valid, err, 1.0) ** 2, 0.0)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    y = np.where(valid, mag, 0.0)
    y = y - (w * y).sum(axis=1, keepdims=True)
    t = np.where(valid, time - np.nanmin(time, axis=1, keepdims=True), 0.0)
    return w, y, t, (w * y * y).sum(axis=1)[:, None], valid


def _gls_from_phasors(z: np.ndarray, terms: tuple) -> np.ndarray:
    """The power (b, f) from the phasors ``exp(2 pi i f t)`` (b, f, m) and `_gls_terms`: three
    weighted sums of them (``sum w z``, ``sum w y z``, ``sum w z^2``) give every term
    (`_gls_from_sums`)."""
    w, y, _, yy, valid = terms
    # einsum, not matmul: numpy's matmul hands each small product to a multithreaded BLAS,
    # which in a feature worker beside others costs more than the sums themselves
    first = np.einsum("bfm,bmk->bfk", z, np.stack([w, w * y], axis=2).astype(z.dtype))  # (b, f, 2)
    second = np.einsum("bfm,bm->bf", z * z, w.astype(z.dtype))
    p = _gls_from_sums(first[..., 0], first[..., 1], second, yy)
    p[valid.sum(axis=1) < 3] = np.nan
    return p


def _gls_from_sums(w_sum: np.ndarray, wy_sum: np.ndarray, w_sum2: np.ndarray, yy: np.ndarray,
                   with_denominator: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The generalised Lomb-Scargle power from ``C + iS = sum w exp(iwt)``,
    ``YC + iYS = sum w y exp(iwt)`` and ``sum w exp(2iwt)`` (weights summing to 1, ``y``
    centred) and ``yy = sum w y^2``; the second moments follow from ``cos^2 = (1 + cos 2x) / 2``,
    ``sin^2 = (1 - cos 2x) / 2`` and ``cos sin = sin 2x / 2``. With ``with_denominator``, also
    ``D = CC SS - CS^2`` (at most 1/4; small where the sampling nearly fixes the phase)."""
    C, S = w_sum.real, w_sum.imag
    YC, YS = wy_sum.real, wy_sum.imag
    CC = 0.5 * (1.0 + w_sum2.real) - C * C
    SS = 0.5 * (1.0 - w_sum2.real) - S * S
    CS = 0.5 * w_sum2.imag - C * S
    D = CC * SS - CS * CS
    with np.errstate(invalid="ignore", divide="ignore"):
        power = (SS * YC * YC + CC * YS * YS - 2.0 * CS * YC * YS) / (yy * D)
    return (power, D) if with_denominator else power


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


def coarse_periodogram(time: np.ndarray, mag: np.ndarray, err: np.ndarray, fmin: float, df: float,
                       n_freq: int) -> np.ndarray:
    """Generalised Lomb-Scargle power of a small batch of light curves on the grid
    ``fmin + k * df`` (``k < n_freq``), by non-uniform FFT (finufft).

    The batch is put on the union of its epochs: each source keeps its own points and gets
    zero weight on the others', which leaves its periodogram unchanged (but for rounding), so
    the NUFFT plans serve the whole batch (and, cached, every batch of the same size). Three type-1
    transforms give at every grid frequency the weighted sums ``sum w exp(iwt)``,
    ``sum w y exp(iwt)`` and ``sum w exp(2iwt)``, from which `_gls_from_sums` makes the power,
    the same statistic as `gls_power`.

    The transforms run in single precision at ``COARSE_EPS``, enough to rank peaks for the
    exact refinement: with the times taken from the middle of the batch's span the phases stay
    within +-pi/2 (+-pi for the doubled ones), where float32 rounding moves the highest
    mode's phase by about 3e-3 rad, and the powers lie within about 6e-3 of the exact ones
    (and move by as much with the curves that share the batch). Where the sampling nearly fixes
    the phase (a curve covering a fraction of a cycle, or a few visits at nearly one phase) they
    would not: the power's denominator is then a difference of nearly equal sums. There, below
    ``EXACT_BELOW_DENOMINATOR``, the power is `gls_power`'s, exact; on simulated DR3 curves of
    1000 d that is about 2 frequencies in 100,000.

    Parameters
    ----------
    time, mag, err : float arrays (b, m)
        NaN-padded light curves; ``df * span <= 1/2`` for the batch's whole span.
    fmin, df : float
        First frequency and step of the grid (c/d).
    n_freq : int
        Number of grid frequencies.

    Returns
    -------
    float32 array (b, n_freq)
    """
    valid = np.isfinite(mag)
    t_all = time[valid]
    t_mid = 0.5 * (t_all.min() + t_all.max())
    rows, cols = np.nonzero(valid)[0], np.arange(len(t_all))
    w = np.zeros((len(time), len(t_all)))
    y = np.zeros_like(w)
    w[rows, cols] = 1.0 / err[valid] ** 2
    y[rows, cols] = mag[valid]
    w /= w.sum(axis=1, keepdims=True)
    y -= (w * y).sum(axis=1, keepdims=True)
    x = 2.0 * np.pi * df * (t_all - t_mid)  # mode k - n_freq // 2 of the transform is grid frequency k
    shift = np.exp(1j * (n_freq // 2 + fmin / df) * x)
    first = _nufft_plan(n_freq, 2 * len(time))
    first.setpts(x.astype(np.float32))
    sums = first.execute(np.concatenate([w * shift, w * y * shift]).astype(np.complex64))
    second = _nufft_plan(n_freq, len(time))
    second.setpts((2.0 * x).astype(np.float32))
    double = second.execute((w * shift**2).astype(np.complex64))
    b = len(time)
    power, denominator = _gls_from_sums(sums[:b], sums[b:], double, (w * y * y).sum(axis=1, keepdims=True).astype(np.float32),
                                        with_denominator=True)
    # where the sampling nearly fixes the phase, the denominator is a difference of nearly equal
    # sums, beyond single precision: those frequencies exactly
    row, col = np.nonzero(~(denominator >= EXACT_BELOW_DENOMINATOR))
    if len(row):
        ill, start, count = np.unique(row, return_index=True, return_counts=True)
        pick = start[:, None] + np.minimum(np.arange(count.max()), count[:, None] - 1)  # padded with the row's last
        power[ill[:, None], col[pick]] = gls_power(time[ill], mag[ill], err[ill], fmin + df * col[pick])
    return power


@functools.lru_cache(maxsize=8)
def _nufft_plan(n_modes: int, n_trans: int) -> finufft.Plan:
    """A single-precision type-1 NUFFT plan of ``n_trans`` transforms (kept: each batch of a
    survey reuses it)."""
    return finufft.Plan(1, (n_modes,), n_trans=n_trans, eps=COARSE_EPS, dtype=np.complex64, nthreads=1,
                        upsampfac=COARSE_UPSAMPLING)


def coarse_candidates(time: np.ndarray, mag: np.ndarray, err: np.ndarray, n_peaks: int = N_CANDIDATES) -> tuple[np.ndarray, float]:
    """The best local maxima of the coarse periodograms (`coarse_periodogram`) of a small batch
    of sources, overall and at long periods.

    Parameters
    ----------
    time, mag, err : float arrays (b, m)
        NaN-padded light curves, each with at least 2 distinct epochs.
    n_peaks : int
        Number of peaks to return.

    Returns
    -------
    freq : float array (b, n_peaks + N_LONG)
        Candidate frequencies (c/d): the ``n_peaks`` highest peaks, best first, then the
        ``N_LONG`` highest below ``F_LONG`` (the long-period search); fewer peaks than asked
        repeat the best of their kind.
    df : float
        The coarse grid step (c/d).
    """
    span = np.nanmax(time) - np.nanmin(time)
    n_freq = int(np.ceil((FMAX - FMIN) * COARSE_SAMPLES_PER_PEAK * max(REFERENCE_BASELINE, span))) + 1
    df = (FMAX - FMIN) / (n_freq - 1)  # FMIN to FMAX, at least COARSE_SAMPLES_PER_PEAK per 1/T
    freq = FMIN + df * np.arange(n_freq)
    power = coarse_periodogram(time, mag, err, FMIN, df, n_freq)
    power[:, _grid_mask(FMIN, df, n_freq)] = -np.inf
    peak = np.full(power.shape, -np.inf)
    inner = (power[:, 1:-1] >= power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    peak[:, 1:-1] = np.where(inner, power[:, 1:-1], -np.inf)
    peak[:, 0] = np.where(power[:, 0] >= power[:, 1], power[:, 0], -np.inf)  # the ends of the range count too
    peak[:, -1] = np.where(power[:, -1] >= power[:, -2], power[:, -1], -np.inf)
    n_long = max(1, int(np.searchsorted(freq, F_LONG)))  # the grid ascends: periods above 10 d come first
    long = freq[_top_peaks(peak[:, :n_long], N_LONG)]
    return np.concatenate([freq[_top_peaks(peak, n_peaks)], long], axis=1), df


@functools.lru_cache(maxsize=8)
def _grid_mask(fmin: float, df: float, nf: int) -> np.ndarray:
    """`spurious_mask` of a coarse grid (every batch of a DR3 survey shares one grid)."""
    return spurious_mask(fmin + df * np.arange(nf))


def _top_peaks(peak: np.ndarray, n_peaks: int) -> np.ndarray:
    """Column indices of the ``n_peaks`` highest finite values of each row, best first (the
    best repeated where a row has fewer)."""
    k = min(n_peaks, peak.shape[1])
    top = np.argpartition(-peak, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(peak, top, axis=1), axis=1), axis=1)
    return np.where(np.isfinite(np.take_along_axis(peak, top, axis=1)), top, top[:, :1])


def visit_index(time: np.ndarray) -> np.ndarray:
    """Visit number of every epoch: a new visit starts after a gap longer than ``VISIT_GAP``.

    Parameters
    ----------
    time : float array (n, m)
        Ascending epochs (d), NaN-padded at the end of each row.

    Returns
    -------
    int64 array (n, m)
        0, 1, ... along each row; -1 on padding.
    """
    with np.errstate(invalid="ignore"):
        new = np.diff(time, axis=1) > VISIT_GAP
    visit = np.concatenate([np.zeros((len(time), 1), np.int64), np.cumsum(new, axis=1)], axis=1)
    return np.where(np.isfinite(time), visit, -1)


def _visit_sums(visit: np.ndarray, src: np.ndarray, col: np.ndarray, values: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Sums over each (row, frequency, visit) of ``values``, each (points, k) for the points (src, col).

    Returns the sums, each (rows, k, visits), and every (point, k)'s flat index into them.
    """
    k = values[0].shape[1]
    n_vis = int(visit.max(initial=0)) + 1
    cell = (src[:, None] * k + np.arange(k)[None, :]) * n_vis + visit[src, col][:, None]
    shape = (len(visit), k, n_vis)
    return [np.bincount(cell.ravel(), x.ravel(), int(np.prod(shape))).reshape(shape) for x in values], cell


def visit_pairs(time: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of epochs within each light curve's visits, for `visit_window`.

    Returns
    -------
    row : int64 (p,)
        The curve of each pair (ascending).
    dt : float64 (p,)
        The later epoch's time minus the earlier one's (d), for every pair j < k of epochs in
        one visit of ``n_v >= 2`` epochs.
    diagonal, norm : float64 (n,)
        Per curve, the sums over its visits of ``n_v >= 2`` epochs of ``n_v`` and ``n_v**2``.
    """
    visit = visit_index(time)
    n = len(time)
    counts = np.zeros((n, int(visit.max(initial=0)) + 1))
    r, c = np.nonzero(visit >= 0)
    np.add.at(counts, (r, visit[r, c]), 1.0)
    several = np.where(counts > 1, counts, 0.0)
    rows, dts = [], []
    for lag in range(1, int(counts.max(initial=1))):  # epochs of a visit are contiguous in time order
        same = (visit[:, lag:] == visit[:, :-lag]) & (visit[:, lag:] >= 0)
        pr, pc = np.nonzero(same)
        rows.append(pr)
        dts.append(time[pr, pc + lag] - time[pr, pc])
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    dt = np.concatenate(dts) if dts else np.zeros(0)
    order = np.argsort(row, kind="stable")
    return row[order], dt[order], several.sum(axis=1), (several**2).sum(axis=1)


def visit_window(time: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """The window of each light curve's visits at trial frequencies: how alike a signal at ``f``
    and a constant look within the visits.

    ``V(f) = sum_v |sum_{j in v} exp(2 pi i f t_j)|^2 / sum_v n_v^2``, summed over the visits
    ``v`` (`visit_index`) of ``n_v >= 2`` epochs: 1 when every visit's epochs share one phase at
    ``f`` (a slow variation then fits a sinusoid at ``f`` as well as it fits itself), near
    ``1 / mean(n_v)`` when their phases spread, 0 for pairs half a cycle apart. Visits of one
    epoch look alike at every frequency and are left out; NaN when there is no other.
    Computed as ``(sum_v n_v + 2 sum_{j<k in v} cos(2 pi f (t_k - t_j))) / sum_v n_v^2`` over
    the pairs of epochs within visits (`visit_pairs`), a few per visit.

    Parameters
    ----------
    time : float array (n, m)
        Ascending epochs (d), NaN-padded.
    freq : float array (n, k)
        Trial frequencies (c/d).

    Returns
    -------
    float64 array (n, k)
    """
    n, k = freq.shape
    row, dt, diagonal, norm = visit_pairs(time)
    total = np.zeros((n, k))
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, k))
    for lo in range(0, row.size, step):  # chunks of pairs bound the memory
        r, d = row[lo:lo + step], dt[lo:lo + step]
        _add_rows(total, r, np.cos(2.0 * np.pi * freq[r] * d[:, None]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (diagonal[:, None] + 2.0 * total) / norm[:, None]


def _visit_window_on_grid(time: np.ndarray, step: float, count: int) -> np.ndarray:
    """`visit_window` at the frequencies ``step * j``, ``j = 1 .. count``, the same for every
    curve: each pair's cosines by the recurrence ``exp(i(j + 1)x) = exp(ijx) exp(ix)``, one complex
    exponential per pair instead of one cosine per pair and frequency. Returns (n, count)."""
    row, dt, diagonal, norm = visit_pairs(time)
    total = np.zeros((len(time), count))
    if row.size:
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])  # pairs come sorted by curve
        turn = np.exp(2j * np.pi * step * dt)
        phasor = turn.copy()
        for j in range(count):
            total[row[starts], j] = np.add.reduceat(phasor.real, starts)
            phasor *= turn
    with np.errstate(invalid="ignore", divide="ignore"):
        return (diagonal[:, None] + 2.0 * total) / norm[:, None]


def _add_rows(total: np.ndarray, row: np.ndarray, values: np.ndarray) -> None:
    """``total[row[i]] += values[i]`` for ``row`` ascending (runs of one row summed at once)."""
    if row.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    total[row[starts]] += np.add.reduceat(values, starts, axis=0)


def alias_edges(time: np.ndarray) -> np.ndarray:
    """Where each light curve's alias bands may begin: the end of the main lobe of its visit
    window (see `alias_bands`), in c/d; infinite when the sampling has no visits of several
    epochs. Computed once per curve and reused for every trial frequency."""
    count = int(round(EDGE_FMAX / EDGE_STEP))
    grid = EDGE_STEP * np.arange(1, count + 1)
    below = _visit_window_on_grid(time, EDGE_STEP, count) < V_ALIAS
    # sampling without visits of several epochs (a window of 1 everywhere) cannot tell aliases apart: no band
    return np.where(below.any(axis=1), grid[np.argmax(below, axis=1)], np.inf)


def alias_bands(time: np.ndarray, freq: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """Which trial frequencies lie in an alias band of each light curve's own sampling.

    A frequency is in an alias band when the visit window (`visit_window`) there is at least
    ``V_ALIAS`` and the frequency is above the main lobe, the range from 0 where the window
    stays at or above ``V_ALIAS`` (searched in steps of ``EDGE_STEP`` c/d up to ``EDGE_FMAX``;
    when it never drops that far, as for sampling with one epoch per visit, the sampling holds
    nothing that tells a frequency from its aliases, and no band is returned).
    For Gaia's sampling (visits of a preceding and a following field of view 106.5 min apart,
    or 4.2 h apart, and 6-h spins) the widest band lies around 12 c/d, three times the spin
    frequency, where both spacings are nearly whole cycles.

    Parameters
    ----------
    time : float array (n, m)
        Ascending epochs (d), NaN-padded.
    freq : float array (n, k)
        Trial frequencies (c/d).
    edges : float array (n,), optional
        `alias_edges` of the curves, when already computed.

    Returns
    -------
    bool array (n, k)
    """
    edges = alias_edges(time) if edges is None else edges
    out = freq > edges[:, None]
    rows = np.flatnonzero(out.any(axis=1))  # the window is computed only where a band can be
    if rows.size:
        out[rows] &= visit_window(time[rows], freq[rows]) >= V_ALIAS
    return out


def _sinusoid_fit(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares sinusoid a cos + b sin + c at ``freq`` (n, k): its (a, b), each (n, k)."""
    valid = np.isfinite(mag)
    w = np.where(valid, 1.0 / np.where(valid, err, 1.0) ** 2, 0.0)[:, None, :]
    y = np.where(valid, mag, 0.0)[:, None, :]
    t = np.where(valid, time - np.nanmin(time, axis=1, keepdims=True), 0.0)[:, None, :]
    arg = 2.0 * np.pi * freq[:, :, None] * t
    c, s = np.cos(arg), np.sin(arg)
    one = np.ones_like(c)
    basis = (c, s, one)
    A = np.stack([np.stack([(w * u * v).sum(axis=2) for v in basis], -1) for u in basis], -2)
    rhs = np.stack([(w * u * y).sum(axis=2) for u in basis], -1)
    A = A + 1e-12 * np.trace(A, axis1=-2, axis2=-1)[..., None, None] * np.eye(3)
    coef = np.linalg.solve(A, rhs[..., None])[..., 0]
    return coef[..., 0], coef[..., 1]


def visit_confirmed(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Whether the variation within the visits confirms a sinusoid at each trial frequency.

    Inside an alias band a slow variation is fitted almost as well by a sinusoid at ``f`` as
    by itself, because every visit's epochs share nearly one phase. What tells them apart is
    the small change of phase within the visits: a real signal at ``f`` moves the magnitudes
    by the sinusoid's prediction from one epoch of a visit to the next, a slow one does not.
    The test regresses the deviations of the magnitudes from their visit means on those of
    the fitted sinusoid (weights ``1/err^2``), with the slope's error scaled up by the
    residual chi-square per degree of freedom when that exceeds 1 (fast stochastic variation,
    underestimated errors), and confirms ``f`` when the slope is at least ``VISIT_MIN_SLOPE``
    and ``VISIT_MIN_Z`` standard errors from zero.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.
    freq : float array (n, k)
        Trial frequencies (c/d).

    Returns
    -------
    bool array (n, k)
    """
    n, k = freq.shape
    out = np.zeros((n, k), bool)
    m = max(1, time.shape[1])
    step = max(1, _MAX_CELLS_PER_BATCH // (m * k * 4))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(n, lo + step))
        t, y, e, f = time[rows], mag[rows], err[rows], freq[rows]
        a, b = _sinusoid_fit(t, y, e, f)
        visit = visit_index(t)
        src, col = np.nonzero(visit >= 0)
        arg = 2.0 * np.pi * f[src] * (t - np.nanmin(t, axis=1, keepdims=True))[src, col][:, None]
        model = a[src] * np.cos(arg) + b[src] * np.sin(arg)  # (points, k)
        w = np.broadcast_to((1.0 / e[src, col] ** 2)[:, None], model.shape)
        y_pt = np.broadcast_to(y[src, col][:, None], model.shape)
        (W, WY, WS), cell = _visit_sums(visit, src, col, [w, w * y_pt, w * model])
        with np.errstate(invalid="ignore", divide="ignore"):
            dy = y_pt - (WY / W).ravel()[cell]  # deviations from the visit means
            ds = model - (WS / W).ravel()[cell]
        pair = src[:, None] * k + np.arange(k)[None, :]
        sums = [np.bincount(pair.ravel(), x.ravel(), len(rows) * k).reshape(len(rows), k)
                for x in (w * ds * ds, w * dy * ds, w * dy * dy)]
        n_visits = visit.max(axis=1) + 1
        dof = np.maximum((visit >= 0).sum(axis=1) - n_visits - 1, 1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = sums[1] / sums[0]
            chi2 = np.maximum((sums[2] - slope * sums[1]) / dof, 1.0)
            z = slope / np.sqrt(chi2 / sums[0])
        out[rows] = (slope >= VISIT_MIN_SLOPE) & (z >= VISIT_MIN_Z)
    return out


def _halves(time: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """0 for the first half of each curve's valid epochs in time, 1 for the second, -1 on padding."""
    valid = np.isfinite(mag)
    rank = np.cumsum(valid, axis=1) - 1
    return np.where(valid, (rank >= valid.sum(axis=1, keepdims=True) // 2).astype(np.int64), -1)


def coherence(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray,
              harmonics: int = COHERENCE_HARMONICS) -> np.ndarray:
    """How well a periodic model fitted to one half of a light curve predicts the other half.

    The curve's valid epochs are cut into a first and a second half in time. A Fourier series
    of ``harmonics`` harmonics at ``freq`` is fitted (weights ``1/err^2``) to one half and
    predicts the other, whose own mean is taken out; the score is the prediction's weighted
    R^2 there, the smaller of the two ways. A periodic signal keeps its phase from one half
    to the other (R^2 near its share of the variance); noise, and the peaks that stochastic
    variation leaves in a periodogram, do not (R^2 near or below 0).

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves.
    freq : float array (n,)
        The frequency of each curve (c/d); NaN gives NaN.
    harmonics : int

    Returns
    -------
    float64 array (n,)
    """
    half = _halves(time, mag)
    valid = half >= 0
    w = np.where(valid, 1.0 / np.where(valid, err, 1.0) ** 2, 0.0)
    y = np.where(valid, mag, 0.0)
    t = np.where(valid, time - np.nanmin(time, axis=1, keepdims=True), 0.0)
    arg = 2.0 * np.pi * np.nan_to_num(freq)[:, None] * t
    basis = [np.ones_like(t)] + [g(h * arg) for h in range(1, harmonics + 1) for g in (np.cos, np.sin)]
    X = np.stack(basis, -1)  # (n, m, p)
    scores = []
    for fit, test in ((0, 1), (1, 0)):
        wf = w * (half == fit)
        A = np.einsum("nm,nmi,nmj->nij", wf, X, X)
        A = A + 1e-9 * np.trace(A, axis1=1, axis2=2)[:, None, None] * np.eye(X.shape[2])
        coef = np.linalg.solve(A, np.einsum("nm,nmi,nm->ni", wf, X, y)[..., None])[..., 0]
        wt = w * (half == test)
        pred = np.einsum("nmi,ni->nm", X, coef)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = y - pred
            r = r - (wt * r).sum(axis=1, keepdims=True) / wt.sum(axis=1, keepdims=True)
            d = y - (wt * y).sum(axis=1, keepdims=True) / wt.sum(axis=1, keepdims=True)
            scores.append(1.0 - (wt * r * r).sum(axis=1) / (wt * d * d).sum(axis=1))
    out = np.minimum(*scores)
    out[~np.isfinite(freq)] = np.nan
    return out


def fold_coherence(time: np.ndarray, mag: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """How coherent the fold at ``freq`` is from one cycle to the next, for shapes a few
    harmonics cannot follow (narrow eclipses).

    Every epoch is predicted by its nearest neighbour in phase among the epochs of *other*
    cycles, and the score is ``1 - theta`` with ``theta = sum (y - y_nn)^2 / (2 sum (y - mean)^2)``,
    the phase-neighbour ("string length") dispersion of Lafler & Kinman (1965, ApJS 11, 216)
    as a fraction of the scatter, which Stellingwerf's (1978, ApJ 224, 953) PDM theta also
    measures: near 1 when the cycles repeat, near 0 for noise. Neighbours from one cycle say
    nothing about the period (the epochs of one visit lie at nearly one phase at any period),
    so they are not used: one caught eclipse cannot make a fold coherent on its own.

    Parameters
    ----------
    time, mag : float arrays (n, m)
        NaN-padded light curves.
    freq : float array (n,)
        The frequency of each curve (c/d); NaN gives NaN.

    Returns
    -------
    float64 array (n,); NaN where no epoch has a neighbour in another cycle.
    """
    n, m = time.shape
    out = np.full(n, np.nan)
    step = max(1, _MAX_CELLS_PER_BATCH // max(1, m * m))
    for lo in range(0, n, step):
        rows = slice(lo, min(n, lo + step))
        y, valid = mag[rows], np.isfinite(mag[rows])
        x = np.nan_to_num(freq[rows])[:, None] * (time[rows] - np.nanmin(time[rows], axis=1, keepdims=True))
        cycle, phase = np.floor(x), x - np.floor(x)
        d = np.abs((phase[:, :, None] - phase[:, None, :] + 0.5) % 1.0 - 0.5)
        other = valid[:, :, None] & valid[:, None, :] & (cycle[:, :, None] != cycle[:, None, :])
        d = np.where(other, d, np.inf)
        nearest = np.argmin(d, axis=2)
        use = valid & np.isfinite(np.take_along_axis(d, nearest[..., None], axis=2)[..., 0])
        y0 = np.where(valid, y, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (use * y0).sum(axis=1, keepdims=True) / use.sum(axis=1, keepdims=True)
            diff = np.where(use, y0 - np.take_along_axis(y0, nearest, axis=1), 0.0)
            scatter = np.where(use, y0 - mean, 0.0)
            out[rows] = 1.0 - (diff * diff).sum(axis=1) / (2.0 * (scatter * scatter).sum(axis=1))
    out[~np.isfinite(freq)] = np.nan
    return out


def phase_gap(time: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """The widest gap in phase (0-1) between the epochs of each curve folded at ``freq`` (n,)."""
    x = np.nan_to_num(freq)[:, None] * (time - np.nanmin(time, axis=1, keepdims=True))
    phase = np.sort(np.where(np.isfinite(time), x - np.floor(x), np.nan), axis=1)  # NaN sort last
    inner = np.nanmax(np.diff(phase, axis=1), axis=1, initial=0.0)
    wrap = 1.0 - np.nanmax(phase, axis=1) + phase[:, 0]
    out = np.fmax(inner, wrap)
    out[~np.isfinite(freq)] = np.nan
    return out


def eclipse_visits(time: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """How many visits (`visit_index`) hold a faint point (``faint``, bool (n, m): the faint
    `eclipse.excursions`): for an eclipsing binary, the number of distinct eclipses caught (n,)."""
    visit = visit_index(time)
    n_vis = int(visit.max(initial=0)) + 1
    seen = np.zeros((len(time), n_vis), bool)
    r, c = np.nonzero(faint)
    seen[r, visit[r, c]] = True
    return seen.sum(axis=1)


def one_cycle_in(time: np.ndarray, mag: np.ndarray, faint: np.ndarray, freq: np.ndarray, k: int) -> np.ndarray:
    """Whether the faint points (``faint``: the faint `eclipse.excursions`) at the phase of the
    deepest one all lie in the same one of each ``k`` successive cycles at ``freq``: then
    ``freq / k`` folds those eclipses as well, the other cycles' eclipses never having been
    observed (n,).

    The faint points within a quarter of a cycle in phase of the deepest point (its eclipse,
    not the other one half a cycle away) are numbered by their cycle at ``freq``, counted from
    the deepest point's phase; the test is whether those numbers all leave one remainder modulo ``k``.
    """
    x = np.nan_to_num(freq)[:, None] * np.where(np.isfinite(time), time - np.nanmin(time, axis=1, keepdims=True), 0.0)
    deepest = np.argmax(np.where(faint, mag, -np.inf), axis=1)
    cycles = x - np.take_along_axis(x, deepest[:, None], axis=1)
    near = faint & (np.abs(cycles - np.round(cycles)) < 0.25)
    remainder = np.mod(np.round(cycles), k)
    lowest = np.where(near, remainder, np.inf).min(axis=1)
    highest = np.where(near, remainder, -np.inf).max(axis=1)
    return lowest == highest


def red_noise_fap(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """False-alarm probability of a period against the curve's own red noise.

    The variability of long-period variables, quasars and young stars has a power spectrum
    that rises to low frequencies, and Gaia's sparse sampling spreads that power into peaks at
    any frequency: a white-noise false-alarm probability then calls such peaks significant
    (Vaughan et al. 2016, MNRAS 461, 3145, on false periods in the red noise of quasars). Here
    the noise of the light curve is modelled as a damped random walk (an Ornstein-Uhlenbeck
    process, whose spectrum is flat below ``1 / (2 pi tau)`` and falls as ``f^-2`` above) plus
    the epoch errors, and a constant and a constant plus a sinusoid at ``freq`` are compared by
    their likelihood, each with the walk's time scale and variance that suit it best on the grid
    ``RED_TAUS x RED_VARIANCES`` (the walk then takes all the variation that is not periodic).
    The likelihood ratio ``L = 2 (ln L_sinusoid - ln L_constant)`` follows a chi-square of two
    degrees of freedom for one trial frequency; the periodogram tried about ``M = FMAX * T``
    independent ones, so the false-alarm probability is ``1 - (1 - exp(-L / 2))^M``.

    The likelihoods come from a Kalman filter of the walk (Kelly, Bechtold & Siemiginowska 2009,
    ApJ 698, 895), O(m) per curve and model: it turns the magnitudes and the model's columns into
    independent innovations, on which both fits are ordinary weighted least squares.

    Parameters
    ----------
    time, mag, err : float arrays (n, m)
        NaN-padded light curves, ascending in time.
    freq : float array (n,)
        The period's frequency (c/d); NaN gives NaN.

    Returns
    -------
    float64 array (n,)
    """
    n, m = time.shape
    out = np.full(n, np.nan)
    todo = np.flatnonzero(np.isfinite(freq) & (np.isfinite(mag).sum(axis=1) >= 4))
    for lo in range(0, len(todo), 256):
        rows = todo[lo:lo + 256]
        width = int(np.isfinite(mag[rows]).sum(axis=1).max())
        t, y, e = time[rows, :width], mag[rows, :width], err[rows, :width]
        valid = np.isfinite(y)
        t0 = t - np.nanmin(t, axis=1, keepdims=True)
        arg = 2.0 * np.pi * freq[rows, None] * np.where(valid, t0, 0.0)
        yc = y - np.nanmean(y, axis=1, keepdims=True)
        columns = np.stack([np.where(valid, yc, 0.0), np.ones_like(arg), np.cos(arg), np.sin(arg)], axis=-1)
        var = np.nanvar(y, axis=1)
        gram, logdet = _drw_innovation_gram(np.where(valid, t0, np.nan), columns, np.where(valid, e * e, 1.0), valid, var)
        # profile over the model's coefficients: ln L = -(chi2_min + ln det C) / 2 (+ a constant)
        yy = gram[..., 0, 0]
        chi2_constant = yy - gram[..., 0, 1] ** 2 / gram[..., 1, 1]
        A = gram[..., 1:, 1:] + 1e-12 * np.eye(3) * gram[..., 1:2, 1:2]
        b = gram[..., 1:, 0]
        chi2_sinusoid = yy - np.einsum("...i,...i->...", b, np.linalg.solve(A, b[..., None])[..., 0])
        best_constant = np.max(-0.5 * (chi2_constant + logdet), axis=0)
        best_sinusoid = np.max(-0.5 * (chi2_sinusoid + logdet), axis=0)
        ratio = np.clip(2.0 * (best_sinusoid - best_constant), 0.0, None)
        trials = np.maximum(FMAX * np.nanmax(t0, axis=1), 1.0)
        out[rows] = -np.expm1(trials * np.log1p(-np.exp(-0.5 * ratio)))
    return out


def _drw_innovation_gram(t: np.ndarray, columns: np.ndarray, err2: np.ndarray, valid: np.ndarray,
                         var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman filter of a damped random walk plus white errors, for every noise model of the grid.

    Parameters
    ----------
    t : float array (b, m)
        Times from the first epoch (d), NaN on padding (at the end of each row).
    columns : float array (b, m, c)
        The data and the model's columns (0 on padding).
    err2 : float array (b, m)
        Squared errors.
    valid : bool array (b, m)
    var : float array (b,)
        The curve's variance; the grid's walk variances are fractions of it.

    Returns
    -------
    gram : float array (g, b, c, c)
        ``Z^T C^-1 Z`` of the columns for each of the g noise models (C their covariance).
    logdet : float array (g, b)
        ``ln det C``.
    """
    taus = np.repeat(np.asarray(RED_TAUS, float), len(RED_VARIANCES))
    s2 = np.tile(np.asarray(RED_VARIANCES, float), len(RED_TAUS))[:, None] * var[None, :]  # (g, b)
    g, (b, m, c) = len(taus), columns.shape
    state = np.zeros((g, b, c))  # the walk's predicted value, one filter per column
    P = s2.copy()  # its variance: the walk starts from its stationary distribution
    gram = np.zeros((g, b, c, c))
    logdet = np.zeros((g, b))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for j in range(m):
            if j:
                dt = np.nan_to_num(t[:, j] - t[:, j - 1])[None, :]
                a = np.where(taus[:, None] > 0, np.exp(-dt / np.where(taus[:, None] > 0, taus[:, None], 1.0)), 0.0)
                state *= a[..., None]
                P = a * a * P + s2 * (1.0 - a * a)
            S = P + err2[None, :, j]
            v = columns[None, :, j, :] - state
            on = valid[None, :, j]
            w = np.where(on, 1.0 / S, 0.0)
            gram += w[..., None, None] * v[..., :, None] * v[..., None, :]
            logdet += np.where(on, np.log(S), 0.0)
            gain = np.where(on, P / S, 0.0)
            state += gain[..., None] * v
            P = P * (1.0 - gain)
    return gram, logdet


def find_periods(time: np.ndarray, mag: np.ndarray, err: np.ndarray) -> dict[str, np.ndarray]:
    """Best period of each light curve in a batch, with its reliability.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), NaN-padded at the end of each row, ascending.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded likewise.

    Returns
    -------
    dict of arrays (n,)
        ``period`` (d, float64), ``frequency`` (c/d), ``period_power`` (float32),
        ``period_fap`` (float64), ``period_fap_red`` (float64, `red_noise_fap`; NaN where
        the sinusoid's other tests already failed), ``period_coherence`` (float32, `coherence`
        or, for an eclipse-like curve, `fold_coherence`) and ``period_reliable`` (bool; see
        the module docstring). NaN (False) for a row with fewer than 3 points or no time span.
    """
    n = time.shape[0]
    lengths = np.isfinite(mag).sum(axis=1)
    span = np.nanmax(time, axis=1, initial=-np.inf) - np.nanmin(time, axis=1, initial=np.inf)
    todo = np.flatnonzero((lengths >= 3) & (span > 0))
    n_peaks = max(N_CANDIDATES, eclipse.N_PEAKS)
    peaks = np.full((n, n_peaks + N_LONG), np.nan)
    dfs = np.full(n, np.nan)
    for lo in range(0, len(todo), _COARSE_BATCH):
        idx = todo[lo : lo + _COARSE_BATCH]
        w = int(lengths[idx].max())
        peaks[idx], dfs[idx] = coarse_candidates(time[idx, :w], mag[idx, :w], err[idx, :w], n_peaks)
    ok = np.isfinite(peaks[:, 0])
    # pass 2: every candidate over +-1 coarse step; a candidate in an alias band of the curve's
    # sampling competes only when the variation within the visits confirms it
    cand = np.concatenate([peaks[:, :N_CANDIDATES], peaks[:, n_peaks:]], axis=1)
    f_cand, p_cand = _refine(time, mag, err, cand, dfs, ok)
    edges = np.full(n, np.inf)
    edges[ok] = alias_edges(time[ok])
    doubtful = np.zeros(f_cand.shape, bool)
    doubtful[ok] = _unconfirmed_alias(time[ok], mag[ok], err[ok], f_cand[ok], edges[ok])
    p_kept = np.where(doubtful, -np.inf, p_cand)
    best = np.argmax(p_kept, axis=1)
    # every candidate an unconfirmed alias: the best of the long-period search
    none = ~np.isfinite(np.take_along_axis(p_kept, best[:, None], axis=1)[:, 0])
    best[none] = N_CANDIDATES + np.argmax(p_cand[none, N_CANDIDATES:], axis=1)
    f_best = np.take_along_axis(f_cand, best[:, None], axis=1)[:, 0]
    # pass 3: the winner over +-1 step of pass 2
    f_best, p_best = _refine(time, mag, err, f_best[:, None], 2 * dfs / (REFINE_POINTS - 1), ok)
    f_best, p_best = f_best[:, 0], p_best[:, 0]
    # detached eclipsing binaries: the eclipse search replaces the sinusoid's frequency
    dip = ok & eclipse.dip_like(mag, err)
    eclipse_margin = np.full(n, np.nan)
    ecl = np.flatnonzero(dip)
    for lo in range(0, len(ecl), _ECLIPSE_BATCH):
        idx = ecl[lo : lo + _ECLIPSE_BATCH]
        w = int(lengths[idx].max())
        t, m, e = time[idx, :w], mag[idx, :w], err[idx, :w]
        f_ecl, margin = eclipse.eclipse_frequencies(t, m, e, peaks[idx, : eclipse.N_PEAKS], dfs[idx], FMIN, FMAX, spurious_mask)
        found = np.isfinite(f_ecl)
        found[found] = ~_unconfirmed_alias(t[found], m[found], e[found], f_ecl[found, None], edges[idx][found])[:, 0]
        idx, f_ecl = idx[found], f_ecl[found]
        f_best[idx] = f_ecl
        eclipse_margin[idx] = margin[found]
        p_best[idx] = gls_power(time[idx, :w], mag[idx, :w], err[idx, :w], f_ecl[:, None])[:, 0]
    f_best[~ok] = np.nan
    p_best[~ok] = np.nan
    fap = np.full(n, np.nan)
    fap[ok] = baluev_fap(p_best[ok], lengths[ok], time[ok], err[ok])
    reliable, coh, fap_red = _reliability(time, mag, err, f_best, fap, dip, eclipse_margin)
    return {
        "frequency": f_best,
        "period": 1.0 / f_best,
        "period_power": p_best.astype(np.float32),
        "period_fap": fap,
        "period_fap_red": fap_red,
        "period_coherence": coh.astype(np.float32),
        "period_reliable": reliable,
    }


def _reliability(time, mag, err, freq, fap, dip, margin):
    """``period_reliable``, ``period_coherence`` and ``period_fap_red`` (see the module docstring)."""
    n = len(freq)
    ok = np.isfinite(freq)
    span = np.nanmax(time, axis=1, initial=-np.inf) - np.nanmin(time, axis=1, initial=np.inf)
    with np.errstate(invalid="ignore"):
        constrained = ok & (span * freq >= MIN_CYCLES)
    constrained[constrained] = phase_gap(time[constrained], freq[constrained]) <= MAX_PHASE_GAP
    # the sinusoid's test runs at the period, or for an eclipse-like curve at whichever of the
    # period and its half (one eclipse per cycle reported: the sinusoid sits at twice the frequency) has the lower FAP
    f_sin, fap_sin = freq.copy(), fap.copy()
    rows = np.flatnonzero(ok & dip)
    if len(rows):
        fap2 = baluev_fap(gls_power(time[rows], mag[rows], err[rows], 2.0 * freq[rows, None])[:, 0],
                          np.isfinite(mag[rows]).sum(axis=1), time[rows], err[rows])
        better = fap2 < fap[rows]
        f_sin[rows[better]], fap_sin[rows[better]] = 2.0 * freq[rows[better]], fap2[better]
    coh = np.full(n, np.nan)
    rows = np.flatnonzero(ok)
    coh[rows] = coherence(time[rows], mag[rows], err[rows], f_sin[rows])
    fap_red = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        passed = np.flatnonzero(constrained & (coh >= COHERENCE_MIN) & (fap_sin < FAP_RELIABLE))
    fap_red[passed] = red_noise_fap(time[passed], mag[passed], err[passed], f_sin[passed])  # the costly test last
    reliable = np.zeros(n, bool)
    reliable[passed] = fap_red[passed] < FAP_RELIABLE
    # eclipse-like curves may instead show eclipses that repeat from cycle to cycle, at the period or the orbit
    rows = np.flatnonzero(ok & dip)
    if len(rows):
        t, m, f = time[rows], mag[rows], freq[rows]
        coh[rows] = np.fmax(fold_coherence(t, m, f), fold_coherence(t, m, f / 2))
        with np.errstate(invalid="ignore"):
            unique = ~(margin[rows] < ECLIPSE_MARGIN_MIN)  # NaN: a Lomb-Scargle period, no margin to judge
            # eclipses caught in one cycle of every two (or three) also fold at twice (three times) the period
            faint = eclipse.excursions(m, err[rows])[0]
            unique &= ~one_cycle_in(t, m, faint, f, 2) & ~one_cycle_in(t, m, faint, f, 3)
            repeats = (coh[rows] >= FOLD_COHERENCE_MIN) & (eclipse_visits(t, faint) >= MIN_ECLIPSES) & unique
            reliable[rows] |= repeats & constrained[rows]
    return reliable, coh, fap_red


def _unconfirmed_alias(time: np.ndarray, mag: np.ndarray, err: np.ndarray, freq: np.ndarray,
                       edges: np.ndarray) -> np.ndarray:
    """True where a trial frequency (n, k) lies in an alias band (the curves' `alias_edges`
    given) and the visits do not confirm it."""
    band = alias_bands(time, freq, edges)
    out = np.zeros(freq.shape, bool)
    rows = np.flatnonzero(band.any(axis=1))
    if len(rows):
        out[rows] = band[rows] & ~visit_confirmed(time[rows], mag[rows], err[rows], freq[rows])
    return out


def _refine(time, mag, err, centres, half_width, ok):
    """Each centre's best exact GLS frequency and power on REFINE_POINTS frequencies over +-half_width.

    Returns two (n, k) arrays; -inf power where every refined frequency is masked.
    """
    n, k = centres.shape
    offsets = np.linspace(-1.0, 1.0, REFINE_POINTS)  # odd count: the centre itself is included
    grid = centres[:, :, None] + half_width[:, None, None] * offsets
    inside = ok & (grid[:, :, 0] >= FMIN).all(axis=1) & (grid[:, :, -1] <= FMAX).all(axis=1)
    grid = np.clip(grid.reshape(n, -1), FMIN, FMAX)  # grids over an end of the range: the end repeated
    power = np.full(grid.shape, -np.inf)
    step = 2.0 * half_width / (REFINE_POINTS - 1)
    power[inside] = grid_power(time[inside], mag[inside], err[inside], grid[inside, ::REFINE_POINTS], step[inside],
                               REFINE_POINTS)
    edge = ok & ~inside
    power[edge] = gls_power(time[edge], mag[edge], err[edge], grid[edge])
    power[spurious_mask(grid) | ~np.isfinite(power)] = -np.inf
    grid, power = grid.reshape(n, k, REFINE_POINTS), power.reshape(n, k, REFINE_POINTS)
    best = np.argmax(power, axis=2)[..., None]
    return np.take_along_axis(grid, best, axis=2)[..., 0], np.take_along_axis(power, best, axis=2)[..., 0]
