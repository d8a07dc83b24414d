"""Gaia-like epochs, photometric errors and variable-star light-curve models.

Everything here works on *flat* arrays: the epochs of all sources laid end to end, with
``offsets`` (length n_sources + 1) marking where each source starts, and ``src`` giving the
source index of every epoch. No function loops over sources; the few loops that remain run
over harmonics, classes or epoch rank (at most 150 iterations, each over all sources).

Cadence (a simplified Gaia scanning law)
    Gaia spins every 6 h and sees a source first in the preceding field of view (FoV) and
    106.5 min later in the following FoV, often again on the next spins; these visits come in
    groups separated by weeks (most groups are one preceding + following pair, see
    ``GROUP_CONTINUE``). DR3 epochs run from about 1666 to 2710 d (BJD - 2455197.5) and
    hold 20-150 G transits per source, most near ecliptic latitude +/-45 deg and fewest near
    the ecliptic (Gaia Collaboration, Prusti et al. 2016, Fig. 3; Eyer et al. 2023, A&A 674,
    A13). BP and RP are observed in the same transits, 27 s and 35 s after G (measured on DR3
    epoch photometry).

Per-transit G errors
    sigma(G) = sqrt(floor^2 + photon^2 + background^2), a calibration floor plus photon and
    background terms scaling as 10^(0.2 G) and 10^(0.4 G), tuned to the per-FoV-transit
    scatter of constant sources in DR3 (Riello et al. 2021, A&A 649, A3, Fig. 9; Evans et al.
    2023, A&A 674, A4): about 0.7 mmag at G = 11, 1.3 mmag at 13, 3 mmag at 15, 7.5 mmag at
    17, 30 mmag at 19 and 0.1 mag at 20.5; at G = 10.6-12.7 it matches the errors of real DR3
    epoch photometry within a factor 2. BP and RP errors are the same curve at the band
    magnitude, times 1.5 (the ratio seen in DR3 epoch photometry at G ~ 11-13).
"""

from __future__ import annotations

import numpy as np

#: First and last DR3 epoch (d, BJD - 2455197.5).
DR3_START = 1666.0
DR3_END = 2710.0
#: Time between the preceding and the following field of view (106.5 min), and the spin period.
FOV_GAP = 106.5 / 1440.0
SPIN = 0.25
#: Observation-time offsets of BP and RP after G within one transit (d).
BP_TIME_OFFSET = 27.2 / 86400.0
RP_TIME_OFFSET = 34.6 / 86400.0
#: DR3 photometric zero points (Riello et al. 2021).
ZP_G = 25.6874
ZP_BP = 25.3385
ZP_RP = 24.7479
#: Fewest and most G transits of a simulated source.
MIN_TRANSITS = 20
MAX_TRANSITS = 150
#: Visit groups: the transits of one passage of the source through the two fields of view,
#: and of the next 6-h spins when the scan keeps crossing it. ``GROUP_CONTINUE[k - 1]`` is the
#: probability that a group of ``k`` transits gets another (the last value for every longer
#: group), so that group sizes follow those of real DR3 epoch photometry: measured on the G
#: transits of the eight DR3 sources in tests/data/gaia_dr3 (200 groups, a group ending at a gap
#: of > 1.5 d), 29 % single transits, 53 % pairs, 9 % triples, 4 % of four and 5 % longer
#: (up to 24 consecutive transits near the scanning law's nodes).
GROUP_CONTINUE = (0.71, 0.25, 0.5, 0.55, 0.8)
MAX_GROUP = 24
#: Least time (d) between two groups.
MIN_GROUP_GAP = 2.0


def flat_index(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source index and rank-within-source of every flat epoch.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n_sources + 1,)
        Start of each source in the flat arrays.

    Returns
    -------
    src, rank : ndarray of int64
        For each epoch, its source index and its position within the source.
    """
    counts = np.diff(offsets)
    src = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    rank = np.arange(offsets[-1], dtype=np.int64) - offsets[src]
    return src, rank


def _segment_first(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For every element, ``values`` at the first element of its segment (``values`` non-decreasing).

    ``starts`` marks each segment's first element (the first element of the array must be one).
    """
    return np.maximum.accumulate(np.where(starts, values, values[0]))


def n_transits_for(ecl_lat_deg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Number of G transits from the ecliptic latitude (20-150, most near |beta| = 45 deg).

    Parameters
    ----------
    ecl_lat_deg : ndarray
        Ecliptic latitude of each source (deg).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64
    """
    beta = np.abs(ecl_lat_deg)
    mean = 34.0 + 66.0 * np.exp(-0.5 * ((beta - 45.0) / 11.0) ** 2) + 14.0 * (beta / 90.0) ** 2
    n = np.rint(mean * rng.lognormal(0.0, 0.22, beta.size))
    return np.clip(n, MIN_TRANSITS, MAX_TRANSITS).astype(np.int64)


def gaia_cadence(ecl_lat_deg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """G transit times of a simplified Gaia scanning law.

    Transits come in visit groups (preceding FoV, following FoV 106.5 min later, the next
    6-h spin, ...); groups are separated by weeks, with occasional months-long gaps, and
    span most of the DR3 interval.

    Parameters
    ----------
    ecl_lat_deg : ndarray
        Ecliptic latitude of each source (deg).
    rng : numpy.random.Generator

    Returns
    -------
    times : ndarray of float64
        Flat, per-source ascending transit times (d, BJD - 2455197.5).
    offsets : ndarray of int64, shape (n_sources + 1,)
    """
    n = n_transits_for(ecl_lat_deg, rng)
    n_src = n.size
    offsets = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(n, out=offsets[1:])
    src, rank = flat_index(offsets)

    # Group structure: a transit continues the current group with the probability
    # GROUP_CONTINUE of the group's size so far, else opens a new group; the sizes depend on
    # the decisions before them, so this runs over epoch rank, each step over all sources.
    cont = np.asarray(GROUP_CONTINUE)
    u_group = rng.random(offsets[-1])
    new_group = np.ones(offsets[-1], dtype=bool)
    size = np.zeros(n_src, dtype=np.int64)  # transits in the current group of each source
    for j in range(int(n.max(initial=0))):
        live = np.flatnonzero(n > j)
        idx = offsets[live] + j
        if j > 0:
            k = size[live]
            new_group[idx] = (u_group[idx] >= cont[np.minimum(k, cont.size) - 1]) | (k >= MAX_GROUP)
        size[live] = np.where(new_group[idx], 1, size[live] + 1)
    group_start = np.flatnonzero(new_group)
    gid = np.cumsum(new_group) - 1
    n_groups = group_start.size
    g_src = src[group_start]
    # Slots of a visit alternate preceding / following FoV: P, F(+106.5 min), P(+6 h), F, ...
    # or F, P(+6 h - 106.5 min), F(+6 h), ...; a transit may be missing (a skipped slot).
    u = rng.random(offsets[-1])
    step = 1 + (u < 0.15).astype(np.int64) + (u < 0.04)  # 11 % skip one slot, 4 % two
    step[group_start] = 0
    slot = np.cumsum(step)
    slot -= _segment_first(slot, new_group)
    starts_following = rng.random(n_groups) < 0.5
    second = np.where(starts_following, SPIN - FOV_GAP, FOV_GAP)
    within = (slot >> 1) * SPIN + (slot & 1) * second[gid]  # spins since the first slot, and the FoV
    group_end = np.r_[group_start[1:], offsets[-1]] - 1
    duration = within[group_end]

    # Group epochs: gamma-distributed gaps (weeks), some 3-5x longer (unfavourable scan
    # geometry), scaled so the groups fill the source's span, with at least 2 d between
    # the end of one group and the start of the next.
    gaps = rng.gamma(3.0, 1.0, n_groups) * np.where(rng.random(n_groups) < 0.08, rng.uniform(3, 5, n_groups), 1.0)
    first_group = np.r_[True, g_src[1:] != g_src[:-1]]
    first_idx = np.flatnonzero(first_group)  # one per source, in source order
    gaps[first_group] = 0.0
    csum = np.cumsum(gaps)
    csum -= csum[first_idx][g_src]
    # durations of the earlier groups of the same source
    before = np.cumsum(duration) - duration
    before -= before[first_idx][g_src]
    g_rank = np.arange(n_groups) - first_idx[g_src]
    groups_per_source = np.bincount(g_src, minlength=n_src)
    last_idx = first_idx + groups_per_source - 1
    total = np.maximum(csum[last_idx], 1e-9)
    t_start = DR3_START + rng.uniform(0.0, 40.0, n_src)
    t_end = DR3_END - rng.uniform(0.0, 40.0, n_src)
    free = t_end - t_start - MIN_GROUP_GAP * (groups_per_source - 1) - (before[last_idx] + duration[last_idx])
    t_group = t_start[g_src] + csum / total[g_src] * free[g_src] + MIN_GROUP_GAP * g_rank + before
    return t_group[gid] + within, offsets


def g_mag_error(mag: np.ndarray) -> np.ndarray:
    """Per-transit G magnitude error of DR3 epoch photometry at magnitude ``mag``.

    Parameters
    ----------
    mag : ndarray
        G magnitude.

    Returns
    -------
    ndarray of float64
        1-sigma error (mag).
    """
    q = np.exp((0.2 * np.log(10.0)) * (np.asarray(mag) - 15.0))  # 10**(0.2 (G - 15))
    floor, photon, background = 0.0005, 0.003 * q, 0.0006 * q * q
    return np.sqrt(floor**2 + photon**2 + background**2)


def xp_mag_error(mag: np.ndarray) -> np.ndarray:
    """Per-transit BP or RP magnitude error (the G curve at the band magnitude, times 1.5).

    Parameters
    ----------
    mag : ndarray
        BP or RP magnitude.

    Returns
    -------
    ndarray of float64
    """
    return 1.5 * g_mag_error(mag)


# --------------------------------------------------------------------------- shapes


def skewed_wave(x: np.ndarray, rise: np.ndarray, n_harm: int) -> np.ndarray:
    """Smooth pulsation shape: a band-limited asymmetric triangle wave.

    Brightness rises linearly for a fraction ``rise`` of the cycle and falls for the rest
    (the classic RR Lyrae / Cepheid sawtooth); the Fourier series of that wave is truncated
    at ``n_harm`` harmonics with Lanczos smoothing, which rounds maximum and minimum.

    Parameters
    ----------
    x : ndarray
        Phase in cycles; maximum brightness at x = 0 (mod 1).
    rise : ndarray
        Rise fraction of the cycle (0.1-0.5), per element of ``x``.
    n_harm : int
        Number of harmonics kept.

    Returns
    -------
    ndarray
        Brightness-like shape, about 0 at minimum and 1 at maximum (before truncation).
    """
    # c_k = -(1 - exp(-i w r)) / (r (1 - r) w^2) with w = 2 pi k; f = 1/2 + 2 Re sum c_k exp(i w y),
    # y = x + r (the triangle wave peaks at y = r); powers of exp(2 pi i y) and exp(-2 pi i r)
    # are built by recurrence, one complex multiplication per harmonic.
    z1 = np.exp(2j * np.pi * (x + rise))
    e1 = np.exp(-2j * np.pi * rise)
    norm = 1.0 / (rise * (1.0 - rise))
    zk, ek = z1, e1
    acc = np.zeros(np.broadcast(x, rise).shape)
    for k in range(1, n_harm + 1):
        w = 2.0 * np.pi * k
        acc += (np.sinc(k / (n_harm + 1.0)) / w**2) * ((ek - 1.0) * zk).real
        if k < n_harm:
            zk = zk * z1
            ek = ek * e1
    out = 0.5 + 2.0 * norm * acc
    return out


def fourier_wave(x: np.ndarray, ratios: tuple, phases: tuple) -> np.ndarray:
    """A pulsation shape in magnitudes from its Fourier parameters (sine series).

    ``m(x) = sum_k R_k1 sin(2 pi k x + phi_k1)`` for k = 1..K with R_11 = 1 and phi_11 = 0,
    the convention of the Fourier decompositions of RR Lyrae and delta Scuti light curves
    (Simon & Teays 1982, ApJ 261, 586; Jurcsik & Kovacs 1996, A&A 312, 111):
    ``R_k1 = A_k / A_1`` and ``phi_k1 = phi_k - k phi_1``.

    Parameters
    ----------
    x : ndarray
        Phase in cycles.
    ratios, phases : tuple of ndarray
        ``(R21, R31, ...)`` and ``(phi21, phi31, ...)`` (rad), each broadcastable to ``x``.

    Returns
    -------
    ndarray
        Magnitude-like shape (larger = fainter), zero mean over a cycle.
    """
    angle = 2.0 * np.pi * x
    out = np.sin(angle)
    for k, (r, phi) in enumerate(zip(ratios, phases), start=2):
        out = out + r * np.sin(k * angle + phi)
    return out


def drw(times: np.ndarray, offsets: np.ndarray, tau: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Damped random walk (Ornstein-Uhlenbeck process) sampled at irregular epochs.

    Kelly et al. 2009 (ApJ 698, 895): x(t + dt) = x(t) exp(-dt/tau) + sigma sqrt(1 - exp(-2 dt/tau)) N(0, 1),
    with stationary standard deviation ``sigma`` (= SF_inf / sqrt(2)). The recursion runs
    over epoch rank, each step over all sources at once.

    Parameters
    ----------
    times : ndarray of float64
        Flat, per-source ascending epochs.
    offsets : ndarray of int64
        Source starts in ``times``.
    tau, sigma : ndarray, shape (n_sources,)
        Damping time (d) and stationary standard deviation, per source.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float64
        Flat process values, zero mean.
    """
    counts = np.diff(offsets)
    noise = rng.standard_normal(times.size)
    out = np.empty(times.size)
    starts = offsets[:-1]
    out[starts[counts > 0]] = sigma[counts > 0] * noise[starts[counts > 0]]
    for j in range(1, int(counts.max(initial=0))):
        live = np.flatnonzero(counts > j)
        idx = starts[live] + j
        decay = np.exp(-(times[idx] - times[idx - 1]) / tau[live])
        out[idx] = out[idx - 1] * decay + sigma[live] * np.sqrt(1.0 - decay**2) * noise[idx]
    return out


# --------------------------------------------------------------------------- classes

#: The simulated fine classes, in a fixed order (class codes index this tuple).
CLASSES = ("RRAB", "RRC", "DCEP", "T2CEP", "EA", "EB", "EW", "ELL", "MIRA", "SR", "DSCT", "ROT", "YSO", "QSO", "CONST")
#: Classes whose truth amplitude is the ptp of the noiseless model at the sampled epochs
#: (stochastic); for the others it is the ptp over a full cycle.
STOCHASTIC = ("SR", "ROT", "YSO", "QSO")

#: Per-source parameter columns produced by :func:`draw_parameters` (NaN where unused).
PARAM_COLUMNS = (
    "period", "amplitude", "t0", "rise", "bump_phase", "bump_amp", "r21", "r31", "r41", "phi21", "phi31", "phi41",
    "depth_primary", "depth_secondary", "eclipse_width", "secondary_phase", "shape_power", "period2", "amplitude2",
    "drw_tau", "drw_sf_inf", "event_tau", "event_amp", "red_tau", "red_sigma",
)


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def draw_parameters(cls: np.ndarray, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw the light-curve parameters of every source from published ranges.

    Ranges (G band):
      RRAB  P 0.42-0.9 d (median 0.57), A 0.3-1.3 mag decreasing with P (Bailey diagram)
            (Clementini et al. 2023, A&A 674, A18). Shape: a four-term Fourier series with
            the amplitude ratios and phase differences of RRab decompositions in V (sine
            series; Simon & Teays 1982, ApJ 261, 586): R21 ~ 0.48, R31 ~ 0.33, R41 ~ 0.21,
            phi21 ~ 2.4 rad; phi31 from the period and a halo metallicity [Fe/H] ~ N(-1.5, 0.35)
            by the relation [Fe/H] = -5.038 - 5.394 P + 1.345 phi31 (Jurcsik & Kovacs 1996,
            A&A 312, 111); phi41 ~ 3 phi21, the progression phi_k1 ~ (k - 1) phi21 of such
            decompositions. The result rises to maximum in about 0.2 of the cycle and has a
            magnitude skewness of about -0.7 (real DR3 RR Lyrae brighter than G = 16, measured
            with latentcat's features: median -0.66).
      RRC   P 0.22-0.42 d, A 0.15-0.5, nearly sinusoidal: R21 ~ 0.15, R31 ~ 0.07 (rise about
            35 % of the cycle, skewness near 0).
      DCEP  P 1-60 d (log P ~ N(0.7, 0.3)), A 0.2-1.0, rise 20-35 %, with the Hertzsprung
            progression: a bump on the descending branch at P ~ 6 d that moves through maximum
            at P ~ 10 d to the rising branch at P ~ 14 d (Ripepi et al. 2023, A&A 674, A17).
      T2CEP P 1-25 d: BL Her (< 4 d), W Vir (4-20 d), RV Tau (> 20 d, alternating minima).
      EA    P 0.5-20 d, detached: two eclipses (primary 0.1-1.0 mag, secondary 5-80 % of it),
            flat outside eclipse, slight eccentricity. Eclipse half-width in phase from
            Kepler's third law, ``(R1 + R2) / (2 pi a) * sqrt(1 - b^2)`` with
            ``a = 4.21 Rsun (M / Msun)^(1/3) (P / d)^(2/3)``: R1 + R2 = 1.5-6 Rsun and
            M = 1.5-5 Msun (the bright detached binaries of DR3 are mostly early-type and
            evolved stars), impact parameter b 0-0.9, and (R1 + R2) / a at most 0.4 (detached:
            flat outside eclipse); so up to 0.064 of a phase, 0.002-0.03 at P = 20 d.
      EB    P 0.3-5 d, continuous variation, unequal minima (ratio 0.3-0.8), 0.15-0.8 mag.
      EW    P 0.25-0.8 d (median 0.37), equal minima, 0.1-0.7 mag (Mowlavi et al. 2023, A&A 674, A16).
      ELL   P 0.5-10 d, two sinusoidal minima per orbit, unequal by 5-30 %, A 0.02-0.15 mag.
      MIRA  P 100-1000 d (median 300), A 1.5-4 mag in G, slow cycle-to-cycle mean changes
            (Lebzelter et al. 2023, A&A 674, A15).
      SR    the semi-regular and irregular long-period variables that make most of DR3's LPV
            class (only 23 % of the 1.72 million DR3 LPV candidates have a published period;
            Lebzelter et al. 2023). 45 % SEMIREGULAR: P1 20-300 d, P2 = 1.3-3 P1, stochastic
            phase (damped random walk of the phase, tau 100-500 d); 15 % OSARG, the small-amplitude
            red giants of OGLE (Wray, Eyer & Paczynski 2004, MNRAS 349, 1059; Soszynski et al.
            2004, AcA 54, 129): two periods of 10-60 d, the second 0.70-0.78 of the first, as on
            their neighbouring period-luminosity sequences; 40 % IRREGULAR: a damped random walk
            with tau 30-300 d and no period. Peak-to-peak A log-normal with median 0.15 mag, at
            least 0.08 mag (DR3 selects LPVs by a 5-95 % G range > 0.1 mag). SEMIREGULAR and
            OSARG stars also get red noise: the convective (granulation) background of red
            giants, whose power spectrum is a Lorentzian (Harvey) profile, i.e. that of a damped
            random walk (Mathur et al. 2011, ApJ 741, 119; Kallinger et al. 2014, A&A 570, A41),
            with a characteristic frequency of about 0.3 nu_max (Kallinger et al. 2014) and
            nu_max near the dominant pulsation frequency 1/P1 (Yu et al. 2020, MNRAS 493,
            1388), so tau = P1 / (2 pi 0.3) ~ 0.5 P1; and a standard deviation of 10-40 % of the
            pulsation's peak-to-peak amplitude, an assumption (no G-band figure is published).
            Red noise shows in the power spectra of M giants (Banyai et al. 2013, MNRAS 436,
            1576) and red supergiants (Kiss, Szabo & Bedding 2006, MNRAS 372, 1721).
      DSCT  P 0.02-0.25 d (log-normal, median 0.055 d), A 0.01-0.8 mag (log-normal, median
            0.17 mag): GCVS ranges (P 0.01-0.2 d, A 0.003-0.9 mag in V) weighted to what DR3
            classifies, real DR3 DSCT|GDOR|SXPHE brighter than G = 16 having median period
            0.053 d and 5-95 % amplitude 0.19 mag (latentcat's features). The larger the
            amplitude the more the shape is that of a high-amplitude delta Scuti star
            (HADS, Fourier parameters close to RRab ones; Poretti 2001, A&A 371, 986): R21 up
            to 0.4 at A >= 0.3 mag. A second radial mode (first overtone, period ratio 0.756-0.787)
            with 0-40 % of the amplitude.
      ROT   spotted stars: P 0.3-30 d, A 0.01-0.12 mag, two spot groups with 0.5-5 %
            differential rotation and amplitudes that evolve on 50-300 d.
      YSO   stochastic (DRW tau 5-50 d, SF 0.05-0.2) plus dips (60 %, depth 0.3-1.5 mag) or
            bursts (40 %, 0.3-1.5 mag) lasting days (Cody et al. 2014; Marton et al. 2023).
      QSO   DRW with tau 50-1000 d (log-normal, median 200 d) and SF_inf 0.1-0.3 mag
            (Kelly et al. 2009; MacLeod et al. 2010, ApJ 721, 1014).
      CONST no variability.

    Parameters
    ----------
    cls : ndarray of int
        Class code of each source (index into :data:`CLASSES`).
    rng : numpy.random.Generator

    Returns
    -------
    params : dict of str to ndarray of float64
        One array per :data:`PARAM_COLUMNS` entry, NaN where the class has no such parameter.
    subclass : ndarray of object
        A finer label where one applies (T2CEP: BL_HER/W_VIR/RV_TAU; SR: SEMIREGULAR/IRREGULAR;
        YSO: DIPPER/BURSTER), else None.
    """
    n = cls.size
    p = {name: np.full(n, np.nan) for name in PARAM_COLUMNS}
    subclass = np.full(n, None, dtype=object)
    p["t0"] = rng.uniform(DR3_START, DR3_START + 1000.0, n)
    for code, name in enumerate(CLASSES):  # one class after another, in the order of CLASSES
        idx = np.flatnonzero(cls == code)
        if idx.size == 0:
            continue
        values, sub = _CLASS_PARAMETERS[name](idx.size, rng)
        for key, value in values.items():
            p[key][idx] = value
        if sub is not None:
            subclass[idx] = sub
    return p, subclass


def _rrab_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Fundamental-mode RR Lyrae: period and amplitude on the Bailey diagram, Fourier parameters from [Fe/H]."""
    values = {}
    per = np.clip(0.57 * rng.lognormal(0.0, 0.12, m), 0.42, 0.9)
    values["period"] = per
    values["amplitude"] = np.clip(0.85 - 3.0 * (np.log10(per) + 0.24) + rng.normal(0, 0.1, m), 0.3, 1.3)
    feh = np.clip(rng.normal(-1.5, 0.35, m), -2.5, -0.3)
    phi21 = rng.normal(2.40, 0.10, m)
    values["r21"] = np.clip(rng.normal(0.48, 0.04, m), 0.35, 0.6)
    values["r31"] = np.clip(rng.normal(0.33, 0.04, m), 0.2, 0.45)
    values["r41"] = np.clip(rng.normal(0.21, 0.04, m), 0.1, 0.3)
    values["phi21"] = phi21
    values["phi31"] = (feh + 5.038 + 5.394 * per) / 1.345 + rng.normal(0.0, 0.1, m)
    values["phi41"] = (3.0 * phi21 + rng.normal(0.0, 0.2, m)) % (2.0 * np.pi)
    return values, None


def _rrc_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """First-overtone RR Lyrae: nearly sinusoidal."""
    values = {}
    values["period"] = np.clip(rng.normal(0.32, 0.04, m), 0.22, 0.42)
    values["amplitude"] = rng.uniform(0.15, 0.5, m)
    values["r21"] = np.clip(rng.normal(0.15, 0.04, m), 0.03, 0.3)
    values["r31"] = np.clip(rng.normal(0.07, 0.03, m), 0.0, 0.15)
    values["r41"] = np.zeros(m)
    values["phi21"] = rng.normal(3.1, 0.25, m)
    values["phi31"] = rng.normal(6.0, 0.4, m)
    values["phi41"] = np.zeros(m)
    return values, None


def _dcep_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Classical Cepheids, with the Hertzsprung-progression bump."""
    values = {}
    per = 10.0 ** np.clip(rng.normal(0.7, 0.3, m), 0.0, 1.78)
    values["period"] = per
    values["amplitude"] = rng.uniform(0.2, 1.0, m)
    values["rise"] = rng.uniform(0.2, 0.35, m)
    values["bump_phase"] = np.clip(0.08 * (10.0 - per), -0.15, 0.35)
    values["bump_amp"] = 0.25 * np.exp(-0.5 * ((np.log10(per) - 1.0) / 0.12) ** 2)
    return values, None


def _t2cep_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Type II Cepheids; subclass BL_HER, W_VIR or RV_TAU by period."""
    values = {}
    per = _loguniform(rng, 1.0, 25.0, m)
    values["period"] = per
    values["amplitude"] = rng.uniform(0.3, 0.9, m)
    values["rise"] = rng.uniform(0.25, 0.4, m)
    subclass = np.where(per < 4.0, "BL_HER", np.where(per < 20.0, "W_VIR", "RV_TAU"))
    return values, subclass


def _ea_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Detached eclipsing binaries: two eclipses, flat between them."""
    values = {}
    per = _loguniform(rng, 0.5, 20.0, m)
    values["period"] = per
    d1 = rng.uniform(0.1, 1.0, m)
    values["depth_primary"] = d1
    values["depth_secondary"] = d1 * rng.uniform(0.05, 0.8, m)
    radii = rng.uniform(1.5, 6.0, m)  # R1 + R2 (Rsun)
    mass = rng.uniform(1.5, 5.0, m)  # M1 + M2 (Msun)
    separation = 4.21 * mass ** (1.0 / 3.0) * per ** (2.0 / 3.0)  # Kepler's third law (Rsun)
    chord = np.sqrt(1.0 - rng.uniform(0.0, 0.9, m) ** 2)  # impact parameter 0-0.9 (in R1 + R2)
    # detached: flat outside eclipse needs stars well inside their Roche lobes, (R1 + R2) / a <= 0.4
    values["eclipse_width"] = np.minimum(radii / separation, 0.4) / (2.0 * np.pi) * chord
    values["secondary_phase"] = 0.5 + rng.uniform(-0.03, 0.03, m)
    values["amplitude"] = d1
    return values, None


def _eb_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Beta Lyrae binaries: continuous variation, unequal minima."""
    values = {}
    values["period"] = _loguniform(rng, 0.3, 5.0, m)
    d1 = rng.uniform(0.15, 0.8, m)
    values["depth_primary"] = d1
    values["depth_secondary"] = d1 * rng.uniform(0.3, 0.8, m)
    values["shape_power"] = rng.uniform(1.5, 3.0, m)
    values["amplitude"] = d1
    return values, None


def _ew_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """W UMa contact binaries: equal minima."""
    values = {}
    values["period"] = np.clip(0.37 * rng.lognormal(0.0, 0.2, m), 0.25, 0.8)
    d = rng.uniform(0.1, 0.7, m)
    values["depth_primary"] = d
    values["depth_secondary"] = d
    values["shape_power"] = rng.uniform(1.2, 2.0, m)
    values["amplitude"] = d
    return values, None


def _ell_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Ellipsoidal variables: two unequal sinusoidal minima per orbit."""
    values = {}
    values["period"] = _loguniform(rng, 0.5, 10.0, m)
    a = rng.uniform(0.02, 0.15, m)
    values["amplitude2"] = a * rng.uniform(0.05, 0.3, m)  # unequal-minima term
    values["amplitude"] = a
    return values, None


def _mira_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Miras: long period, large amplitude, slow changes of the mean."""
    values = {}
    values["period"] = np.clip(300.0 * rng.lognormal(0.0, 0.35, m), 100.0, 1000.0)
    values["amplitude"] = rng.uniform(1.5, 4.0, m)
    values["rise"] = rng.uniform(0.35, 0.45, m)
    values["drw_tau"] = rng.uniform(200.0, 600.0, m)
    values["drw_sf_inf"] = rng.uniform(0.05, 0.2, m)
    return values, None


def _sr_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Semi-regular, small-amplitude (OSARG) and irregular long-period variables; subclass
    SEMIREGULAR, OSARG or IRREGULAR."""
    values = {}
    kind = rng.random(m)
    subclass = np.where(kind < 0.40, "IRREGULAR", np.where(kind < 0.55, "OSARG", "SEMIREGULAR"))
    irregular, osarg = subclass == "IRREGULAR", subclass == "OSARG"
    per = np.where(osarg, _loguniform(rng, 10.0, 60.0, m), np.clip(80.0 * rng.lognormal(0.0, 0.5, m), 20.0, 300.0))
    values["period"] = np.where(irregular, np.nan, per)
    values["period2"] = np.where(irregular, np.nan, per * np.where(osarg, rng.uniform(0.70, 0.78, m), rng.uniform(1.3, 3.0, m)))
    a = np.clip(0.15 * rng.lognormal(0.0, 0.5, m), 0.08, 1.5)
    values["amplitude"] = a
    values["amplitude2"] = np.where(irregular, np.nan, a * rng.uniform(0.2, 0.7, m))
    values["drw_tau"] = np.where(irregular, rng.uniform(30.0, 300.0, m), rng.uniform(100.0, 500.0, m))
    values["drw_sf_inf"] = np.where(irregular, np.sqrt(2.0) * a / 3.3, np.nan)  # p95 - p5 of a Gaussian: 3.3 sigma
    values["red_tau"] = np.where(irregular, np.nan, per / (2.0 * np.pi * 0.3))
    values["red_sigma"] = np.where(irregular, np.nan, a * rng.uniform(0.1, 0.4, m))
    return values, subclass


def _dsct_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Delta Scuti stars: the larger the amplitude, the more HADS-like the shape; a second mode."""
    values = {}
    per = np.clip(0.055 * rng.lognormal(0.0, 0.4, m), 0.02, 0.25)
    values["period"] = per
    values["period2"] = per * rng.uniform(0.756, 0.787, m)
    a = np.clip(0.17 * rng.lognormal(0.0, 0.6, m), 0.01, 0.8)
    values["amplitude"] = a
    values["amplitude2"] = a * rng.uniform(0.0, 0.4, m)
    hads = np.clip(a / 0.3, 0.0, 1.0)  # how far the shape is that of a HADS
    phi21 = rng.normal(2.40, 0.15, m)
    values["r21"] = 0.40 * hads * rng.uniform(0.8, 1.2, m)
    values["r31"] = 0.22 * hads * rng.uniform(0.8, 1.2, m)
    values["r41"] = 0.10 * hads * rng.uniform(0.8, 1.2, m)
    values["phi21"] = phi21
    values["phi31"] = (2.0 * phi21 + 0.2 + rng.normal(0.0, 0.2, m)) % (2.0 * np.pi)
    values["phi41"] = (3.0 * phi21 + rng.normal(0.0, 0.2, m)) % (2.0 * np.pi)
    return values, None


def _rot_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Spotted rotators: two spot groups with differential rotation."""
    values = {}
    per = np.clip(5.0 * rng.lognormal(0.0, 0.8, m), 0.3, 30.0)
    values["period"] = per
    values["period2"] = per * (1.0 + rng.uniform(0.005, 0.05, m))
    a = rng.uniform(0.01, 0.12, m)
    values["amplitude"] = a
    values["amplitude2"] = a * rng.uniform(0.3, 1.0, m)
    values["drw_tau"] = rng.uniform(50.0, 300.0, m)
    return values, None


def _yso_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Young stellar objects: a damped random walk plus dips or bursts; subclass DIPPER or BURSTER."""
    values = {}
    values["drw_tau"] = rng.uniform(5.0, 50.0, m)
    values["drw_sf_inf"] = rng.uniform(0.05, 0.2, m)
    values["event_tau"] = rng.uniform(1.0, 5.0, m)
    values["event_amp"] = rng.uniform(0.3, 1.5, m)
    subclass = np.where(rng.random(m) < 0.6, "DIPPER", "BURSTER")
    return values, subclass


def _qso_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Quasars: a damped random walk."""
    values = {}
    values["drw_tau"] = np.clip(200.0 * rng.lognormal(0.0, 0.6, m), 50.0, 1000.0)
    values["drw_sf_inf"] = rng.uniform(0.1, 0.3, m)
    return values, None


def _const_parameters(m: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Constant stars: no variability."""
    values = {}
    values["amplitude"] = np.zeros(m)
    return values, None


#: The parameter draw of each class: (number of sources, rng) -> (values per PARAM_COLUMNS key, subclass or None).
_CLASS_PARAMETERS = {
    "RRAB": _rrab_parameters, "RRC": _rrc_parameters, "DCEP": _dcep_parameters, "T2CEP": _t2cep_parameters,
    "EA": _ea_parameters, "EB": _eb_parameters, "EW": _ew_parameters, "ELL": _ell_parameters,
    "MIRA": _mira_parameters, "SR": _sr_parameters, "DSCT": _dsct_parameters, "ROT": _rot_parameters,
    "YSO": _yso_parameters, "QSO": _qso_parameters, "CONST": _const_parameters,
}


_N_HARM = {"DCEP": 6, "T2CEP": 5, "MIRA": 3}  # the sawtooth pulsators (skewed_wave)
_FOURIER = ("RRAB", "RRC", "DSCT")  # the pulsators shaped by their Fourier parameters (fourier_wave)


def _pulsation_shape(name: str, phase: np.ndarray, p: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Magnitude-like shape (larger = fainter) of pulsators ``rows`` at ``phase`` (broadcast together)."""
    if name in _FOURIER:
        ratios = tuple(p[key][rows] for key in ("r21", "r31", "r41"))
        return fourier_wave(phase, ratios, tuple(p[key][rows] for key in ("phi21", "phi31", "phi41")))
    bright = skewed_wave(phase, p["rise"][rows], _N_HARM[name])
    if name == "DCEP":  # the Hertzsprung-progression bump
        d = (phase - p["bump_phase"][rows] + 0.5) % 1.0 - 0.5
        bright = bright + p["bump_amp"][rows] * np.exp(-0.5 * (d / 0.05) ** 2)
    return -bright


def _unit_pulsation(name: str, phase: np.ndarray, src: np.ndarray, uniq: np.ndarray, inv: np.ndarray,
                    p: dict[str, np.ndarray]) -> np.ndarray:
    """Pulsation shape scaled to zero mean and unit peak-to-peak over the cycle (in magnitudes).

    ``uniq`` are the sources (ascending) and ``inv`` the position in ``uniq`` of each point's source.
    """
    grid = (np.arange(128) + 0.5) / 128.0
    g = _pulsation_shape(name, grid[None, :], p, uniq[:, None])
    lo, hi, mean = g.min(axis=1), g.max(axis=1), g.mean(axis=1)
    return (_pulsation_shape(name, phase, p, src) - mean[inv]) / (hi - lo)[inv]


def light_curves(
    cls: np.ndarray, p: dict[str, np.ndarray], subclass: np.ndarray, times: np.ndarray, offsets: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless G magnitude variation of every epoch, relative to the source's mean level.

    Parameters
    ----------
    cls : ndarray of int
        Class code per source.
    p : dict of str to ndarray
        Parameters from :func:`draw_parameters`.
    subclass : ndarray of object
        Sub-classes from :func:`draw_parameters`.
    times : ndarray of float64
        Flat epochs; ``offsets`` marks the sources.
    offsets : ndarray of int64
    rng : numpy.random.Generator

    Returns
    -------
    dm : ndarray of float64
        Magnitude offset of every epoch (positive = fainter).
    amplitude : ndarray of float64, shape (n_sources,)
        Peak-to-peak G amplitude (mag): over a full cycle for periodic classes, over the
        sampled epochs for stochastic ones (SR, ROT, YSO, QSO).
    """
    src, _ = flat_index(offsets)
    counts = np.diff(offsets)
    dm = np.zeros(times.size)
    amplitude = p["amplitude"].copy()
    for code, name in enumerate(CLASSES):
        members = np.flatnonzero((cls == code) & (counts > 0))
        if members.size == 0 or name == "CONST":
            continue
        # the class's points, in source order: each member's epochs offsets[i]..offsets[i + 1]
        sub_offsets = np.zeros(members.size + 1, dtype=np.int64)
        np.cumsum(counts[members], out=sub_offsets[1:])
        pts = np.arange(sub_offsets[-1]) + np.repeat(offsets[members] - sub_offsets[:-1], counts[members])
        s = src[pts]
        t = times[pts]
        phase = ((t - p["t0"][s]) / p["period"][s]) % 1.0 if np.isfinite(p["period"][s[0]]) else None

        if name in _N_HARM or name in _FOURIER:
            inv = np.repeat(np.arange(members.size), counts[members])
            d = p["amplitude"][s] * _unit_pulsation(name, phase, s, members, inv, p)
            if name == "DSCT":  # the first overtone, sinusoidal
                d = d + 0.5 * p["amplitude2"][s] * np.sin(2.0 * np.pi * (t - p["t0"][s]) / p["period2"][s] + 1.0)
            if name == "T2CEP":  # RV Tau: alternating deep and shallow minima
                rv = subclass[s] == "RV_TAU"
                d = d + np.where(rv, 0.15 * p["amplitude"][s] * np.cos(np.pi * (t - p["t0"][s]) / p["period"][s]), 0.0)
            if name == "MIRA":  # slow cycle-to-cycle changes of the mean level
                d = d + drw(t, sub_offsets, p["drw_tau"][members], p["drw_sf_inf"][members] / np.sqrt(2), rng)
        elif name == "EA":
            f1 = 1.0 - 10.0 ** (-0.4 * p["depth_primary"][s])
            f2 = 1.0 - 10.0 ** (-0.4 * p["depth_secondary"][s])
            w = p["eclipse_width"][s]
            x1 = (phase + 0.5) % 1.0 - 0.5
            x2 = (phase - p["secondary_phase"][s] + 0.5) % 1.0 - 0.5
            prof1 = np.sqrt(np.clip(1.0 - (x1 / w) ** 2, 0.0, None))
            prof2 = np.sqrt(np.clip(1.0 - (x2 / w) ** 2, 0.0, None))
            d = -2.5 * np.log10(1.0 - f1 * prof1 - f2 * prof2)
        elif name in ("EB", "EW"):
            c = np.cos(2.0 * np.pi * phase)
            f1 = 1.0 - 10.0 ** (-0.4 * p["depth_primary"][s])
            f2 = 1.0 - 10.0 ** (-0.4 * p["depth_secondary"][s])
            d = -2.5 * np.log10(1.0 - np.abs(c) ** p["shape_power"][s] * np.where(c > 0, f1, f2))
        elif name == "ELL":
            a, u = p["amplitude"][s], p["amplitude2"][s]
            d = 0.5 * a * np.cos(4.0 * np.pi * phase) + u * np.cos(2.0 * np.pi * phase)
            # ptp of 0.5 a cos(2x) + u cos(x), u < 2a: from x = 0 (deeper minimum) to cos(x) = -u / 2a
            a_m, u_m = p["amplitude"][members], p["amplitude2"][members]
            amplitude[members] = a_m + u_m + u_m**2 / (4.0 * a_m)
        elif name == "SR":
            walk = drw(t, sub_offsets, p["drw_tau"][members], np.full(members.size, 1.0), rng)
            tt = t - p["t0"][s]
            semiregular = p["amplitude"][s] * 0.5 * np.sin(2 * np.pi * tt / p["period"][s] + walk) + p["amplitude2"][s] * 0.5 * np.sin(
                2 * np.pi * tt / p["period2"][s] + 2.0 + 0.7 * walk
            )
            # OSARG: two coherent modes
            osarg = p["amplitude"][s] * 0.5 * np.sin(2 * np.pi * tt / p["period"][s]) + p["amplitude2"][s] * 0.5 * np.sin(
                2 * np.pi * tt / p["period2"][s] + 2.0
            )
            red_tau = np.nan_to_num(p["red_tau"][members], nan=1.0)
            red = drw(t, sub_offsets, red_tau, np.nan_to_num(p["red_sigma"][members]), rng)  # granulation
            # an irregular one is a damped random walk of the magnitude itself
            irregular = np.nan_to_num(p["drw_sf_inf"][s]) / np.sqrt(2.0) * walk
            d = np.where(subclass[s] == "IRREGULAR", irregular, np.where(subclass[s] == "OSARG", osarg, semiregular) + red)
        elif name == "ROT":
            e1 = np.clip(1.0 + 0.5 * drw(t, sub_offsets, p["drw_tau"][members], np.full(members.size, 1.0), rng), 0.0, None)
            e2 = np.clip(1.0 + 0.5 * drw(t, sub_offsets, p["drw_tau"][members], np.full(members.size, 1.0), rng), 0.0, None)
            tt = t - p["t0"][s]
            d = 0.5 * p["amplitude"][s] * e1 * np.sin(2 * np.pi * tt / p["period"][s]) + 0.5 * p["amplitude2"][s] * e2 * np.sin(
                2 * np.pi * tt / p["period2"][s] + 1.3
            )
        elif name == "YSO":
            base = drw(t, sub_offsets, p["drw_tau"][members], p["drw_sf_inf"][members] / np.sqrt(2), rng)
            trigger = drw(t, sub_offsets, p["event_tau"][members], np.full(members.size, 1.0), rng)
            # episodes when a fast unit-variance DRW exceeds 1.5 sigma, saturating at event_amp
            event = p["event_amp"][s] * (1.0 - np.exp(-np.clip(trigger - 1.5, 0.0, None) / 0.5))
            d = base + np.where(subclass[s] == "DIPPER", event, -event)
        elif name == "QSO":
            d = drw(t, sub_offsets, p["drw_tau"][members], p["drw_sf_inf"][members] / np.sqrt(2), rng)
        dm[pts] = d
        if name in STOCHASTIC:
            amplitude[members] = np.maximum.reduceat(d, sub_offsets[:-1]) - np.minimum.reduceat(d, sub_offsets[:-1])
    return dm, amplitude
