"""A Gaia-like survey of variable sources, written in the Gaia archive's own formats.

``simulate_survey(n, seed, out)`` writes::

    out/archive/EpochPhotometry_sim.parquet        epoch_photometry bulk layout (or .csv.gz, ECSV)
    out/archive/XpContinuousMeanSpectrum_sim.parquet   xp_continuous_mean_spectrum layout
    out/archive/gaia_source.csv                    a few gaia_source columns
    out/archive/vari_classifier_result.csv         DR3 classifier layout (coarse classes)
    out/truth.parquet                              the simulated truth (outside archive/)

Class mix (fraction of sources). Loosely follows the DR3 ``vari_classifier_result``
proportions (Rimoldini et al. 2023, A&A 674, A14: eclipsing binaries, long-period variables,
delta Scuti and solar-like/rotational variables dominate, followed by AGN and RR Lyrae),
with the rare classes (Cepheids, YSOs) boosted so that a 2,000-source demo holds tens of each,
and 10 % constant stars that a classifier never sees (they are absent from
``vari_classifier_result``, as in DR3)::

    RRAB 6.5  RRC 3.5  DCEP 1.5  T2CEP 0.7  EA 7.0  EB 4.0  EW 11.0  ELL 3.0  MIRA 1.5
    SR 14.5  DSCT 12.0  ROT 12.0  YSO 4.0  QSO 9.0  CONST 9.8

RR Lyrae are 65 % RRab and 35 % RRc, as the 270,905 DR3 RR Lyrae (64.6 % RRab, 34.7 % RRc;
Clementini et al. 2023, A&A 674, A18). Miras are a tenth of the long-period variables: most DR3
LPV candidates are semi-regular or irregular (Lebzelter et al. 2023, A&A 674, A15).

Magnitudes follow p(G) ~ 10^(slope G) per class (``CLASS_TABLE``). Detached binaries (EA),
many of them luminous stars seen far through the disc, have a flatter slope (0.15) than
contact binaries (EW, 0.3; G and K dwarfs), so eclipsing binaries brighter than G = 16 are
mostly detached: real DR3 ECL in a bright sample (median G 10-15, latentcat's features) have
a median skewness of 2.65 and a median Lomb-Scargle power of 0.25, the figures of detached
eclipses (benchmarks/realism.py).

Classifier labels use DR3's coarse class names. The true coarse class is given with the
probability below (the rest goes to the classes DR3 confuses it with), loosely following the
per-class F1 scores of Rimoldini et al. 2023 (CEP 84 %, RR 81 %, LPV 69 %, ECL 64 %,
DSCT|GDOR|SXPHE 50 %, ELL 15 %); scores are Beta(6, 2) for right and Beta(2.5, 3) for wrong labels.

XP spectra: DR3 published XP spectra for every source with phot_g_mean_mag < 17.65 and for a
selection of fainter ones (Gaia Collaboration, De Angeli et al. 2023, A&A 674, A2); here a
fraction :data:`FAINT_XP_FRACTION` (5 %) of the fainter sources, drawn at random, has XP.

Epoch photometry: :data:`PHOT_REJECTED_FRACTION` of the transits are rejected by the
photometric processing (null fluxes and magnitudes in every band, ``rejected_by_photometry``
set); :data:`VAR_REJECTED_FRACTION` of the G (and, independently, BP and RP) points are
outliers flagged by the variability processing (0.3-2 mag off, mostly faint); a further
:data:`BAND_MISSING_FRACTION` of BP and RP points are missing without a flag.

Positions: each class has a disc fraction (|b| drawn from an exponential of a class scale
height in degrees) and an isotropic rest; QSOs avoid |b| < 10 deg. Distances follow from
class absolute magnitudes (RR Lyrae M_G = 0.6; Cepheid period-luminosity relations, Benedict
et al. 2007; eclipsing and rotating stars on the main sequence), with extinction falling off
with |b|; parallax errors follow Lindegren et al. 2021 (A&A 649, A2), 0.015 mas at G < 15 to
0.5 mas at G = 20.7. Colours come from the effective temperature (inverse of Mucciarelli &
Bellazzini 2020, RNAAS 4, 52) plus reddening E(BP-RP) = A_G / 1.9.

source_id values are unique random ids in DR3's range, sorted ascending like the archive's
files; unlike real ids they do not encode the HEALPix pixel of the position.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latentcat.atomic import write_file
from latentcat.errors import InputError
from latentcat.gaia import simulate_lc as lc
from latentcat.gaia.inputs import TRUTH_ROLE
from latentcat.gaia.simulate_lc import BP_TIME_OFFSET, CLASSES, RP_TIME_OFFSET, ZP_BP, ZP_G, ZP_RP

#: solution_id of the DR3 variability and epoch photometry tables.
DR3_VARI_SOLUTION_ID = 375316653866487564
CLASSIFIER_NAME = "nTransits:5+"
#: XP spectra exist for every source brighter than this (phot_g_mean_mag) ...
XP_G_LIMIT = 17.65
#: ... and for this fraction of the fainter ones.
FAINT_XP_FRACTION = 0.05
PHOT_REJECTED_FRACTION = 0.015
VAR_REJECTED_FRACTION = 0.005
BAND_MISSING_FRACTION = 0.02
#: transit_id grows with time like DR3's (fitted on DR3 epoch photometry: ids per day, offset).
_TRANSIT_ID_PER_DAY = 5.52959432e13
_TRANSIT_ID_ZERO = -7.72397561e16

#: Per fine class: fraction, coarse DR3 class, G range and slope (p(G) ~ 10^(slope G)),
#: Teff range (K), M_G (mean, sd), BP and RP amplitude relative to G, disc fraction and
#: disc scale height in |b| (deg).
#: The BP and RP amplitudes relative to G (``bprp_amp``) follow the fall of a variable's
#: amplitude with wavelength: for pulsators, hotter when brighter, the B amplitude is about 1.5
#: times the V amplitude and the Ic amplitude about 0.6 (Galactic Cepheids, Klagyivik &
#: Szabados 2009, A&A 504, 959; RR Lyrae alike), which Gaia's broader BP (330-680 nm) and RP
#: (630-1050 nm) soften to about 1.3 and 0.75 of the G amplitude; eclipsing and ellipsoidal
#: binaries of two similar stars dim nearly alike in every band (1.05, 0.95); Miras, whose
#: visual amplitude far exceeds the red one, 1.6 and 0.7. Each source's two ratios scatter
#: about its class's by ``BPRP_AMP_SCATTER``.
CLASS_TABLE: dict[str, dict] = {
    "RRAB": dict(frac=0.065, coarse="RR", g=(12.0, 20.7, 0.3), teff=(6000, 7000), mg=(0.6, 0.2), bprp_amp=(1.3, 0.75), disc=(0.3, 10)),
    "RRC": dict(frac=0.035, coarse="RR", g=(12.0, 20.7, 0.3), teff=(6800, 7600), mg=(0.6, 0.2), bprp_amp=(1.3, 0.75), disc=(0.3, 10)),
    "DCEP": dict(frac=0.015, coarse="CEP", g=(9.0, 19.0, 0.2), teff=(5200, 6500), mg=None, bprp_amp=(1.3, 0.75), disc=(0.95, 3)),
    "T2CEP": dict(frac=0.007, coarse="CEP", g=(11.0, 20.0, 0.2), teff=(5000, 6500), mg=None, bprp_amp=(1.3, 0.75), disc=(0.3, 10)),
    "EA": dict(frac=0.070, coarse="ECL", g=(10.0, 20.7, 0.15), teff=(5000, 10000), mg=(3.0, 1.5), bprp_amp=(1.05, 0.95), disc=(0.6, 10)),
    "EB": dict(frac=0.040, coarse="ECL", g=(10.0, 20.7, 0.3), teff=(5500, 9000), mg=(2.0, 1.2), bprp_amp=(1.05, 0.95), disc=(0.6, 10)),
    "EW": dict(frac=0.110, coarse="ECL", g=(10.0, 20.7, 0.3), teff=(4800, 7000), mg=(3.5, 1.0), bprp_amp=(1.05, 0.95), disc=(0.6, 10)),
    "ELL": dict(frac=0.030, coarse="ELL", g=(10.0, 20.0, 0.3), teff=(5000, 9000), mg=(1.0, 1.5), bprp_amp=(1.05, 0.95), disc=(0.6, 10)),
    "MIRA": dict(frac=0.015, coarse="LPV", g=(8.0, 18.0, 0.15), teff=(2600, 3300), mg=(-0.5, 0.8), bprp_amp=(1.6, 0.7), disc=(0.6, 8)),
    "SR": dict(frac=0.145, coarse="LPV", g=(9.0, 19.0, 0.2), teff=(3100, 4000), mg=(-0.5, 1.0), bprp_amp=(1.3, 0.8), disc=(0.6, 8)),
    "DSCT": dict(frac=0.120, coarse="DSCT|GDOR|SXPHE", g=(10.0, 20.7, 0.3), teff=(6800, 8500), mg=(2.0, 0.6), bprp_amp=(1.3, 0.75), disc=(0.6, 10)),
    "ROT": dict(frac=0.120, coarse="SOLAR_LIKE", g=(10.0, 20.7, 0.3), teff=(3500, 5800), mg=(5.0, 1.5), bprp_amp=(1.2, 0.85), disc=(0.6, 10)),
    "YSO": dict(frac=0.040, coarse="YSO", g=(11.0, 20.7, 0.3), teff=(3500, 5000), mg=(4.0, 1.5), bprp_amp=(1.3, 0.8), disc=(0.95, 4)),
    "QSO": dict(frac=0.090, coarse="AGN", g=(15.5, 20.7, 0.6), teff=None, mg=None, bprp_amp=(1.15, 0.9), disc=(0.0, 0)),
    "CONST": dict(frac=0.098, coarse=None, g=(10.0, 20.7, 0.3), teff=(4000, 8000), mg=(4.0, 2.0), bprp_amp=(1.0, 1.0), disc=(0.6, 10)),
}

#: Standard deviation of each source's BP and RP amplitude ratios about its class's values
#: (no variable of a class has exactly the class's mean temperature swing or component stars).
BPRP_AMP_SCATTER = 0.08

#: Probability that the classifier gives the right coarse class, and the classes it confuses it with.
CONFUSION: dict[str, tuple[float, tuple[str, ...]]] = {
    "RRAB": (0.94, ("ECL", "DSCT|GDOR|SXPHE", "CEP")),
    "RRC": (0.90, ("ECL", "DSCT|GDOR|SXPHE", "ELL")),
    "DCEP": (0.90, ("RR", "ECL", "LPV")),
    "T2CEP": (0.80, ("RR", "ECL", "LPV")),
    "EA": (0.95, ("RS", "SOLAR_LIKE", "RR")),
    "EB": (0.88, ("ELL", "RR", "RS")),
    "EW": (0.94, ("ELL", "RR", "DSCT|GDOR|SXPHE")),
    "ELL": (0.60, ("ECL", "RS", "SOLAR_LIKE")),
    "MIRA": (0.98, ("YSO", "RS")),
    "SR": (0.93, ("YSO", "RS", "SOLAR_LIKE")),
    "DSCT": (0.85, ("S", "SOLAR_LIKE", "RR", "ECL")),
    "ROT": (0.80, ("RS", "ECL", "ELL", "YSO", "S")),
    "YSO": (0.80, ("SOLAR_LIKE", "RS", "LPV", "S", "BE|GCAS|SDOR|WR")),
    "QSO": (0.96, ("YSO", "S", "LPV")),
}
#: Rotational variables are labelled SOLAR_LIKE or, for this fraction, RS (RS CVn).
ROT_RS_FRACTION = 0.25

# ICRS -> Galactic rotation (x_gal = R @ x_icrs), as in astropy.
_ICRS_TO_GAL = np.array([
    [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
    [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
    [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
])
_OBLIQUITY = np.radians(23.4392911)

FILE_NAMES = {
    "epoch_photometry": "EpochPhotometry_sim",
    "xp_continuous": "XpContinuousMeanSpectrum_sim.parquet",
    "gaia_source": "gaia_source.csv",
    "vari_classifier_result": "vari_classifier_result.csv",
    "truth": "truth.parquet",
}


# --------------------------------------------------------------------------- sources


def _class_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly-proportioned class codes (largest remainder), in random order."""
    frac = np.array([CLASS_TABLE[c]["frac"] for c in CLASSES])
    frac = frac / frac.sum()
    counts = np.floor(frac * n).astype(np.int64)
    short = n - counts.sum()
    counts[np.argsort(-(frac * n - counts), kind="stable")[:short]] += 1
    codes = np.repeat(np.arange(len(CLASSES)), counts)
    return rng.permutation(codes)


def _truncated_exp(rng: np.random.Generator, lo: float, hi: float, slope: float, n: int) -> np.ndarray:
    """Draw from p(x) ~ 10^(slope x) on [lo, hi] (a rising magnitude distribution)."""
    k = slope * np.log(10.0)
    u = rng.random(n)
    return lo + np.log1p(u * np.expm1(k * (hi - lo))) / k


def _sky(cls: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Galactic and equatorial positions and ecliptic latitude (deg) per source."""
    n = cls.size
    disc_frac = np.array([CLASS_TABLE[c]["disc"][0] for c in CLASSES])[cls]
    scale = np.array([CLASS_TABLE[c]["disc"][1] for c in CLASSES])[cls]
    in_disc = rng.random(n) < disc_frac
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    b_disc = np.minimum(rng.exponential(1.0, n) * np.maximum(scale, 1e-3), 89.9)
    sin_lo = np.where(CLASSES.index("QSO") == cls, np.sin(np.radians(10.0)), 0.0)
    b_iso = np.degrees(np.arcsin(rng.uniform(sin_lo, 1.0)))
    b = sign * np.where(in_disc, b_disc, b_iso)
    l = rng.uniform(0.0, 360.0, n)
    lr, br = np.radians(l), np.radians(b)
    gal = np.stack([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)])
    x, y, z = _ICRS_TO_GAL.T @ gal
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    sin_beta = z * np.cos(_OBLIQUITY) - y * np.sin(_OBLIQUITY)
    return {"ra": ra, "dec": dec, "l": l, "b": b, "ecl_lat": np.degrees(np.arcsin(np.clip(sin_beta, -1, 1)))}


def _teff_to_bp_rp(teff: np.ndarray) -> np.ndarray:
    """Intrinsic BP-RP from Teff (dwarf relation of Mucciarelli & Bellazzini 2020, inverted)."""
    theta = 5040.0 / teff
    a, b, c = -0.0353, 0.5092, 0.4929  # theta = c + b x + a x^2
    disc = np.clip(b**2 - 4.0 * -a * (theta - c), 0.0, None)
    x = (b - np.sqrt(disc)) / (2.0 * -a)
    return np.clip(x, -0.3, None)


def _colour_terms(bp_rp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BP - G and G - RP for a BP - RP colour (a smooth fit to DR3 main-sequence stars)."""
    g_rp = 0.6 * bp_rp - 0.04 * bp_rp**2
    return bp_rp - g_rp, g_rp


def _sources(cls: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sky position, magnitudes, colours, Teff and astrometry per source."""
    n = cls.size
    out = _sky(cls, rng)
    g_ref = np.empty(n)
    teff = np.full(n, np.nan)
    m_g = np.full(n, np.nan)
    extra_red = np.zeros(n)
    for code, name in enumerate(CLASSES):
        idx = np.flatnonzero(cls == code)
        spec = CLASS_TABLE[name]
        g_ref[idx] = _truncated_exp(rng, *spec["g"], idx.size)
        if spec["teff"] is not None:
            lo, hi = spec["teff"]
            teff[idx] = np.exp(rng.uniform(np.log(lo), np.log(hi), idx.size))
        if spec["mg"] is not None:
            m_g[idx] = rng.normal(*spec["mg"], idx.size)
        if name == "DCEP":  # period-luminosity relation (Benedict et al. 2007, V shifted to G)
            m_g[idx] = -2.43 * (np.log10(p["period"][idx]) - 1.0) - 4.1 + rng.normal(0, 0.15, idx.size)
        elif name == "T2CEP":
            m_g[idx] = -1.7 * np.log10(p["period"][idx]) + rng.normal(0, 0.2, idx.size)
        elif name == "MIRA":  # TiO makes Miras much redder than their Teff alone
            extra_red[idx] = rng.uniform(0.5, 2.0, idx.size)
        elif name == "SR":
            extra_red[idx] = rng.uniform(0.0, 0.8, idx.size)
    is_qso = cls == CLASSES.index("QSO")
    a_g = 0.03 + rng.exponential(1.0, n) * 1.2 * np.exp(-np.abs(out["b"]) / 6.0)
    a_g = np.minimum(a_g, 6.0)
    bp_rp0 = np.where(is_qso, rng.normal(0.6, 0.15, n), _teff_to_bp_rp(np.where(is_qso, 5000.0, teff)))
    bp_rp = bp_rp0 + extra_red + a_g / 1.9
    bp_g, g_rp = _colour_terms(bp_rp)

    dist_pc = np.where(is_qso, np.inf, 10.0 ** ((g_ref - a_g - np.nan_to_num(m_g) + 5.0) / 5.0))
    plx_true = np.where(is_qso, 0.0, 1000.0 / dist_pc)
    plx_err = np.sqrt(0.015**2 + (0.07 * 10.0 ** (0.24 * (g_ref - 17.0))) ** 2)
    halo = np.isin(cls, [CLASSES.index(c) for c in ("RRAB", "RRC", "T2CEP")]) & (np.abs(out["b"]) > 15)
    v_t = rng.normal(0.0, 1.0, (2, n)) * np.where(halo, 150.0, 30.0)  # km/s per component
    pm_true = np.where(is_qso, 0.0, v_t / (4.74 * dist_pc / 1000.0))
    out.update(
        g_ref=g_ref, bp_ref=g_ref + bp_g, rp_ref=g_ref - g_rp, teff=teff, a_g=a_g,
        parallax_true=plx_true, parallax=plx_true + plx_err * rng.standard_normal(n), parallax_error=plx_err,
        pmra=pm_true[0] + 1.1 * plx_err * rng.standard_normal(n), pmdec=pm_true[1] + 1.1 * plx_err * rng.standard_normal(n),
    )
    return out


N_PIXELS = 12 * 4**12
"""HEALPix level-12 pixels: a DR3 source_id is its pixel * 2^35 + a running number."""


def _source_ids(n: int, rng: np.random.Generator, pixels: tuple[int, int] = (0, N_PIXELS)) -> np.ndarray:
    """Unique ascending int64 ids in DR3's range, with level-12 pixels in ``pixels`` [lo, hi)."""
    lo, hi = pixels
    pixel = lo + np.sort(rng.choice(hi - lo, size=n, replace=False))
    return pixel.astype(np.int64) * (1 << 35) + rng.integers(1, 1 << 20, n)


# --------------------------------------------------------------------------- tables


def _list_array(values: np.ndarray, offsets32: pa.Array, valid: np.ndarray | None = None, type_=None) -> pa.ListArray:
    """A list column from flat values and offsets; ``valid`` False gives null elements."""
    mask = None if valid is None else ~valid
    flat = pa.array(values, type=type_, mask=mask)
    return pa.ListArray.from_arrays(offsets32, flat)


#: 2.5 / ln(10): magnitude error = _MAG_PER_LN * flux_error / flux.
_MAG_PER_LN = 2.5 / np.log(10.0)


def _mag_to_flux(mag: np.ndarray, zp: float) -> np.ndarray:
    """Flux (e-/s) of a magnitude, 10**(-0.4 (mag - zp)) written as one exponential."""
    return np.exp((zp - mag) / _MAG_PER_LN)


def _fluxes(mag: np.ndarray, err: np.ndarray, zp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux (e-/s), flux error and flux/error from magnitudes (mag = -2.5 log10(flux) + zp)."""
    flux = _mag_to_flux(mag, zp)
    flux_err = flux * (err / _MAG_PER_LN)
    return flux, flux_err, (_MAG_PER_LN / err).astype(np.float32)


def _outliers(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Variability-rejected outliers: a flag per point and the magnitude shift (0 elsewhere)."""
    flag = rng.random(n) < VAR_REJECTED_FRACTION
    idx = np.flatnonzero(flag)
    shift = np.zeros(n)
    faint = rng.random(idx.size) < 0.7
    shift[idx] = np.where(faint, rng.uniform(0.3, 2.0, idx.size), -rng.uniform(0.3, 1.0, idx.size))
    return flag, shift


def simulate_tables(n: int, seed: int | list[int], pixels: tuple[int, int] = (0, N_PIXELS)) -> dict[str, pa.Table]:
    """Simulate ``n`` Gaia DR3-like variable sources as archive-layout Arrow tables.

    Parameters
    ----------
    n : int
        Number of sources (>= 1).
    seed : int or list of int
        Random seed (anything `numpy.random.default_rng` takes); the same (n, seed) gives
        identical tables.
    pixels : (int, int)
        The HEALPix level-12 pixel range [lo, hi) the source_ids are drawn from (all the sky
        by default; `simulate_survey` gives each chunk its own range).

    Returns
    -------
    dict of str to pyarrow.Table
        ``epoch_photometry`` (DR3 bulk layout, one row per source with list columns),
        ``xp_continuous`` (XP continuous mean spectra of the sources that have XP),
        ``gaia_source``, ``vari_classifier_result`` (no CONST sources) and ``truth``.
    """
    if n < 1:
        raise InputError(f"simulate: the number of sources must be at least 1, got {n}")
    # One generator for every step, in this order: the same seed gives the same tables.
    rng = np.random.default_rng(seed)
    cls = _class_codes(n, rng)
    params, subclass = lc.draw_parameters(cls, rng)
    src_info = _sources(cls, params, rng)
    source_id = _source_ids(n, rng, pixels)

    times, offsets = lc.gaia_cadence(src_info["ecl_lat"], rng)
    src, _ = lc.flat_index(offsets)
    dm, amplitude = lc.light_curves(cls, params, subclass, times, offsets, rng)
    true = _true_magnitudes(cls, src_info, src, dm, rng)
    rejected, bands = _observe_transits(true, rng)
    epoch = _epoch_table(source_id, times, offsets, rejected, bands)

    mean = {band: _mean_magnitude(b.flux, b.ok, _ZERO_POINTS[band], src, n) for band, b in bands.items()}
    true_mean_g = _mean_magnitude(_mag_to_flux(true["g"], ZP_G), np.ones(times.size, bool), ZP_G, src, n)
    has_xp = (mean["g"] < XP_G_LIMIT) | (rng.random(n) < FAINT_XP_FRACTION)
    gaia_source = _gaia_source_table(source_id, src_info, mean, has_xp)
    vari = _classifier_table(cls, source_id, rng)
    truth = _truth_table(source_id, cls, subclass, params, amplitude, true_mean_g, src_info, has_xp,
                         np.diff(offsets))

    class_names = np.array(CLASSES, dtype=object)[cls]
    xp = _simulate_xp(source_id[has_xp], class_names[has_xp], src_info["teff"][has_xp], mean["g"][has_xp],
                      src_info["a_g"][has_xp] / 0.789, rng)
    return {"epoch_photometry": epoch, "xp_continuous": xp, "gaia_source": gaia_source,
            "vari_classifier_result": vari, "truth": truth}


#: Photometric zero point of each band of :class:`_BandTransits`.
_ZERO_POINTS = {"g": ZP_G, "bp": ZP_BP, "rp": ZP_RP}


@dataclass
class _BandTransits:
    """One band's points, the transits of every source laid end to end.

    Attributes
    ----------
    mag, flux, flux_error, flux_over_error : ndarray
        The archive's values of each point.
    ok : ndarray of bool
        Whether the point exists (False: null in the archive).
    flag : ndarray of bool
        ``variability_flag_{band}_reject``.
    """

    mag: np.ndarray
    flux: np.ndarray
    flux_error: np.ndarray
    flux_over_error: np.ndarray
    ok: np.ndarray
    flag: np.ndarray


def _true_magnitudes(cls: np.ndarray, src_info: dict[str, np.ndarray], src: np.ndarray,
                     dm: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise-free G, BP and RP magnitudes of every transit: each source's reference magnitudes plus
    its light curve ``dm``, scaled in BP and RP by its own amplitude ratios (its class's, with
    a scatter of ``BPRP_AMP_SCATTER``)."""
    scatter = rng.normal(0.0, BPRP_AMP_SCATTER, (2, cls.size))
    amp_bp = np.array([CLASS_TABLE[c]["bprp_amp"][0] for c in CLASSES])[cls] + scatter[0]
    amp_rp = np.array([CLASS_TABLE[c]["bprp_amp"][1] for c in CLASSES])[cls] + scatter[1]
    return {"g": src_info["g_ref"][src] + dm,
            "bp": src_info["bp_ref"][src] + amp_bp[src] * dm,
            "rp": src_info["rp_ref"][src] + amp_rp[src] * dm}


def _observe_transits(true: dict[str, np.ndarray],
                      rng: np.random.Generator) -> tuple[np.ndarray, dict[str, _BandTransits]]:
    """What the archive holds for the true magnitudes of every transit.

    Transits rejected by the photometric processing lose every band; the variability processing
    flags outliers (their magnitudes shifted); BP and RP points also go missing without a flag;
    each point gets an error from its magnitude and noise drawn from it.

    Returns
    -------
    rejected : ndarray of bool
        ``rejected_by_photometry`` per transit.
    bands : dict of str to _BandTransits
        ``g``, ``bp`` and ``rp``.
    """
    total = true["g"].size
    rejected = rng.random(total) < PHOT_REJECTED_FRACTION
    g_flag, g_shift = _outliers(total, rng)
    bp_flag, bp_shift = _outliers(total, rng)
    rp_flag, rp_shift = _outliers(total, rng)
    g_flag &= ~rejected
    bp_ok = ~rejected & (rng.random(total) >= BAND_MISSING_FRACTION)
    rp_ok = ~rejected & (rng.random(total) >= BAND_MISSING_FRACTION)
    bp_flag &= bp_ok
    rp_flag &= rp_ok
    ok = {"g": ~rejected, "bp": bp_ok, "rp": rp_ok}
    flag = {"g": g_flag, "bp": bp_flag, "rp": rp_flag}
    shift = {"g": g_shift, "bp": np.where(bp_flag, bp_shift, 0.0), "rp": np.where(rp_flag, rp_shift, 0.0)}

    mag_error = {"g": lc.g_mag_error, "bp": lc.xp_mag_error, "rp": lc.xp_mag_error}
    err = {band: mag_error[band](true[band]) * rng.lognormal(0.0, 0.15, total) for band in ("g", "bp", "rp")}
    mag = {band: true[band] + err[band] * rng.standard_normal(total) + shift[band] for band in ("g", "bp", "rp")}
    return rejected, {band: _BandTransits(mag[band], *_fluxes(mag[band], err[band], _ZERO_POINTS[band]),
                                          ok[band], flag[band]) for band in ("g", "bp", "rp")}


def _epoch_table(source_id: np.ndarray, times: np.ndarray, offsets: np.ndarray, rejected: np.ndarray,
                 bands: dict[str, _BandTransits]) -> pa.Table:
    """The epoch_photometry table in DR3's bulk layout: one row per source, list columns."""
    transit_id = np.rint(times * _TRANSIT_ID_PER_DAY + _TRANSIT_ID_ZERO).astype(np.int64)
    off32 = pa.array(offsets.astype(np.int32))
    return pa.table({
        "solution_id": pa.array(np.full(source_id.size, DR3_VARI_SOLUTION_ID, dtype=np.int64)),
        "source_id": pa.array(source_id),
        "n_transits": pa.array(np.diff(offsets).astype(np.int16)),
        "transit_id": _list_array(transit_id, off32),
        **_band_columns("g_transit_time", "g_transit_", times, bands["g"], off32),
        **_band_columns("bp_obs_time", "bp_", times + BP_TIME_OFFSET, bands["bp"], off32),
        **_band_columns("rp_obs_time", "rp_", times + RP_TIME_OFFSET, bands["rp"], off32),
        "variability_flag_g_reject": _list_array(bands["g"].flag, off32),
        "variability_flag_bp_reject": _list_array(bands["bp"].flag, off32),
        "variability_flag_rp_reject": _list_array(bands["rp"].flag, off32),
        "rejected_by_photometry": _list_array(rejected, off32),
    })


def _band_columns(time_column: str, prefix: str, times: np.ndarray, band: _BandTransits,
                  off32: pa.Array) -> dict[str, pa.ListArray]:
    """One band's time, flux, flux error, flux over error and magnitude list columns."""
    f64, f32 = pa.float64(), pa.float32()
    return {
        time_column: _list_array(times, off32, type_=f64),
        f"{prefix}flux": _list_array(band.flux, off32, band.ok, f64),
        f"{prefix}flux_error": _list_array(band.flux_error, off32, band.ok, f64),
        f"{prefix}flux_over_error": _list_array(band.flux_over_error, off32, band.ok, f32),
        f"{prefix}mag": _list_array(band.mag, off32, band.ok, f64),
    }


def _mean_magnitude(flux: np.ndarray, ok: np.ndarray, zp: float, src: np.ndarray, n: int) -> np.ndarray:
    """Mean magnitude per source as DR3 computes it: from the mean flux of the usable transits."""
    s = np.bincount(src, weights=np.where(ok, flux, 0.0), minlength=n)
    k = np.bincount(src, weights=ok.astype(float), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 0, zp - 2.5 * np.log10(s / k), np.nan)


def _gaia_source_table(source_id: np.ndarray, src_info: dict[str, np.ndarray], mean: dict[str, np.ndarray],
                       has_xp: np.ndarray) -> pa.Table:
    """The gaia_source columns of the simulated sources (``mean``: mean magnitude per band)."""
    return pa.table({
        "source_id": pa.array(source_id),
        "ra": pa.array(src_info["ra"]),
        "dec": pa.array(src_info["dec"]),
        "l": pa.array(src_info["l"]),
        "b": pa.array(src_info["b"]),
        "parallax": pa.array(src_info["parallax"]),
        "parallax_error": pa.array(src_info["parallax_error"].astype(np.float32)),
        "pmra": pa.array(src_info["pmra"]),
        "pmdec": pa.array(src_info["pmdec"]),
        "phot_g_mean_mag": pa.array(mean["g"].astype(np.float32)),
        "phot_bp_mean_mag": pa.array(mean["bp"].astype(np.float32)),
        "phot_rp_mean_mag": pa.array(mean["rp"].astype(np.float32)),
        "bp_rp": pa.array((mean["bp"] - mean["rp"]).astype(np.float32)),
        "has_xp_continuous": pa.array(has_xp),
        "has_epoch_photometry": pa.array(np.ones(source_id.size, bool)),
    })


def _classifier_table(cls: np.ndarray, source_id: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """vari_classifier_result: DR3-like labels and scores of every source but the CONST ones."""
    n = cls.size
    labels = _classify(cls, rng)
    listed = labels != None  # noqa: E711  (CONST sources are not classified)
    right = labels == np.array([_coarse_truth(c) for c in CLASSES], dtype=object)[cls]
    score = np.where(right, rng.beta(6.0, 2.0, n), rng.beta(2.5, 3.0, n))
    score = np.clip(score, 1e-3, 1.0).astype(np.float32)
    return pa.table({
        "solution_id": pa.array(np.full(int(listed.sum()), DR3_VARI_SOLUTION_ID, dtype=np.int64)),
        "source_id": pa.array(source_id[listed]),
        "classifier_name": pa.array([CLASSIFIER_NAME] * int(listed.sum()), pa.string()),
        "best_class_name": pa.array(labels[listed].tolist(), pa.string()),
        "best_class_score": pa.array(score[listed]),
    })


def _truth_table(source_id: np.ndarray, cls: np.ndarray, subclass: np.ndarray, params: dict[str, np.ndarray],
                 amplitude: np.ndarray, true_mean_g: np.ndarray, src_info: dict[str, np.ndarray],
                 has_xp: np.ndarray, n_transits: np.ndarray) -> pa.Table:
    """The simulated truth per source, marked with :data:`TRUTH_ROLE` so ingest never reads it."""
    truth_cols = {
        "source_id": pa.array(source_id),
        "class": pa.array(np.array(CLASSES, dtype=object)[cls].tolist(), pa.string()),
        "subclass": pa.array(subclass.tolist(), pa.string()),
        "period": pa.array(params["period"]),
        "amplitude": pa.array(amplitude.astype(np.float32)),
        "mean_g": pa.array(true_mean_g.astype(np.float32)),
        "teff": pa.array(src_info["teff"].astype(np.float32)),
        "has_xp": pa.array(has_xp),
        "n_g_transits": pa.array(n_transits.astype(np.int32)),
        "t0": pa.array(params["t0"]),
        "a_g": pa.array(src_info["a_g"].astype(np.float32)),
        "parallax_true": pa.array(src_info["parallax_true"].astype(np.float32)),
    }
    for key in lc.PARAM_COLUMNS:
        if key not in ("period", "amplitude", "t0"):
            truth_cols[key] = pa.array(params[key].astype(np.float32))
    return pa.table(truth_cols).replace_schema_metadata({TRUTH_ROLE[0]: TRUTH_ROLE[1]})


def _coarse_truth(name: str) -> str | None:
    return CLASS_TABLE[name]["coarse"]


def _classify(cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """DR3-like coarse classifier labels with realistic confusion (None for CONST)."""
    n = cls.size
    labels = np.array([_coarse_truth(c) for c in CLASSES], dtype=object)[cls]
    rot = cls == CLASSES.index("ROT")
    labels[rot & (rng.random(n) < ROT_RS_FRACTION)] = "RS"
    u = rng.random(n)
    pick = rng.random(n)
    for code, name in enumerate(CLASSES):
        if name not in CONFUSION:
            continue
        p_right, others = CONFUSION[name]
        wrong = np.flatnonzero((cls == code) & (u >= p_right))
        choice = np.array(others, dtype=object)[(pick[wrong] * len(others)).astype(int)]
        labels[wrong] = choice
    return labels


def _simulate_xp(source_id, class_name, teff, g_mag, a_v, rng) -> pa.Table:
    """XP continuous spectra (archive layout) from :mod:`latentcat.gaia.simulate_xp`.

    ``a_v`` is the V-band extinction, A_V = A_G / 0.789 (Gaia DR3 extinction law for a
    G-type star), so the spectra are reddened like the simulated BP-RP colours.
    """
    from latentcat.gaia.simulate_xp import simulate_xp_continuous

    return simulate_xp_continuous(source_id, class_name, teff, g_mag, rng, a_v=a_v)


# --------------------------------------------------------------------------- writing


def _ecsv_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t):
        return "string"
    return {pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64", pa.float32(): "float32", pa.float64(): "float64"}[t]


def ecsv_header(table: pa.Table) -> str:
    """The ``# %ECSV 1.0`` YAML header of ``table``, arrays as JSON strings with a subtype.

    Parameters
    ----------
    table : pyarrow.Table

    Returns
    -------
    str
        Header lines (each starting with ``#``) followed by the CSV column-name line.
    """
    lines = ["# %ECSV 1.0", "# ---", "# delimiter: ','", "# datatype:"]
    for field in table.schema:
        unit = ""
        if field.name.endswith("time"):
            unit = ", unit: d"
        elif field.name.endswith("_mag"):
            unit = ", unit: mag"
        elif field.name.endswith(("flux", "flux_error")):
            unit = ", unit: electron / s"
        if pa.types.is_list(field.type):
            sub = _ecsv_type(field.type.value_type)
            lines.append(f"# - {{name: {field.name}, datatype: string, subtype: '{sub}[null]'{unit}}}")
        else:
            lines.append(f"# - {{name: {field.name}, datatype: {_ecsv_type(field.type)}{unit}}}")
    lines.append("# schema: astropy-2.0")
    lines.append(",".join(table.column_names))
    return "\n".join(lines) + "\n"


def _arrays_as_text(table: pa.Table) -> pa.Table:
    """Replace every list column by its JSON text ("[1.5,null,2.0]"), vectorised in Arrow."""
    cols = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type):
            flat = col.flatten()
            text = pc.fill_null(pc.cast(flat, pa.string()), "null")
            joined = pc.binary_join(pa.ListArray.from_arrays(col.offsets, text), ",")
            col = pc.binary_join_element_wise("[", joined, "]", "")
        cols[name] = col
    return pa.table(cols)


def write_epoch_ecsv_gz(table: pa.Table, path: Path) -> None:
    """Write epoch photometry as the archive's gzipped bulk ECSV (arrays as quoted strings).

    Parameters
    ----------
    table : pyarrow.Table
        Epoch photometry in the bulk layout (list columns).
    path : Path
        Destination (``.csv.gz``).
    """
    text = _arrays_as_text(table)
    with gzip.open(path, "wb", compresslevel=4) as fh:
        fh.write(ecsv_header(table).encode())
        pacsv.write_csv(text, fh, pacsv.WriteOptions(include_header=False, quoting_style="needed"))


ROW_GROUP_SOURCES = 1000
"""Sources per Parquet row group in the simulated archive files, so readers can stream them."""


def write_tables(tables: dict[str, pa.Table], out: Path, epoch_format: str = "parquet",
                 suffix: str = "", write_truth: bool = True) -> dict[str, str]:
    """Write simulated tables: archive products to ``out/archive/``, the truth to ``out/``.

    Each file is written under a temporary name and renamed into place.

    Parameters
    ----------
    tables : dict of str to pyarrow.Table
        The output of :func:`simulate_tables`.
    out : Path
        Output folder.
    epoch_format : {"parquet", "ecsv.gz"}
        Format of the epoch photometry file.
    suffix : str
        Added to each archive file's stem (``EpochPhotometry_sim-003.parquet``), so that the
        chunks of a large survey are separate files, as the archive's bulk products are.
    write_truth : bool
        Write ``truth.parquet`` too (`simulate_survey` writes a chunked survey's truth itself).

    Returns
    -------
    dict of str to str
        The path written for each table.
    """
    if epoch_format not in ("parquet", "ecsv.gz"):
        raise InputError(f"simulate: epoch_format must be 'parquet' or 'ecsv.gz', got {epoch_format!r}")
    out = Path(out)
    archive = out / "archive"
    try:
        archive.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{archive}: cannot create the output folder ({exc.strerror})") from exc
    files = {}
    def named(key: str, ext: str = "") -> Path:
        stem, dot, tail = (FILE_NAMES[key] + ext).partition(".")
        return archive / f"{stem}{suffix}{dot}{tail}"

    epoch_path = named("epoch_photometry", ".parquet" if epoch_format == "parquet" else ".csv.gz")
    if epoch_format == "parquet":
        # measured values are nearly all distinct: dictionary encoding only costs time
        write_file(epoch_path, lambda p: pq.write_table(tables["epoch_photometry"], p, use_dictionary=False,
                                                     row_group_size=ROW_GROUP_SOURCES))
    else:
        write_file(epoch_path, lambda p: write_epoch_ecsv_gz(tables["epoch_photometry"], p))
    files["epoch_photometry"] = str(epoch_path)
    xp_path = named("xp_continuous")
    write_file(xp_path, lambda p: pq.write_table(tables["xp_continuous"], p, row_group_size=ROW_GROUP_SOURCES))
    files["xp_continuous"] = str(xp_path)
    for key in ("gaia_source", "vari_classifier_result"):
        path = named(key)
        write_file(path, lambda p, t=tables[key]: pacsv.write_csv(t, p))
        files[key] = str(path)
    if write_truth:
        truth_path = out / FILE_NAMES["truth"]
        write_file(truth_path, lambda p: pq.write_table(tables["truth"], p))
        files["truth"] = str(truth_path)
    return files


SURVEY_CHUNK = 20_000
"""`simulate_survey` simulates and writes a larger survey in chunks of this many sources."""


def simulate_survey(n: int, seed: int, out: Path, epoch_format: str = "parquet",
                    chunk: int = SURVEY_CHUNK) -> dict:
    """Simulate a survey and write it in archive formats, with the truth beside it.

    Up to ``chunk`` sources are simulated at once and written as one file per product. A
    larger survey is simulated chunk by chunk (memory follows ``chunk``, not ``n``): chunk
    ``c`` has its own seed ``[seed, c]`` and its own slice of the sky's HEALPix level-12
    pixels, so source_ids stay unique and ascending across the files
    (``EpochPhotometry_sim-000.parquet``, ``-001``, ...), and ``truth.parquet`` holds them all.

    The archive files are written into a hidden folder inside ``out`` that replaces
    ``out/archive/`` at the end, so ``out/archive/`` holds the files of one survey only, never
    those of an earlier run with another ``n``, ``chunk`` or ``epoch_format``.

    Parameters
    ----------
    n : int
        Number of sources.
    seed : int
        Random seed; the same seed gives byte-identical files.
    out : Path
        Output folder; archive products go to ``out/archive/``, the truth to ``out/truth.parquet``.
    epoch_format : {"parquet", "ecsv.gz"}
        Epoch photometry as Parquet (``EpochPhotometry_sim.parquet``) or as the archive's
        gzipped bulk ECSV (``EpochPhotometry_sim.csv.gz``).
    chunk : int
        Largest number of sources simulated at once.

    Returns
    -------
    dict
        ``n_sources``, ``seed``, ``classes`` (count per fine class), ``labels`` (count per
        DR3 class), ``n_with_xp``, ``n_epochs``, ``files`` (the list of paths written for each
        product, one per chunk) and ``seconds``.
    """
    if epoch_format not in ("parquet", "ecsv.gz"):
        raise InputError(f"simulate: epoch_format must be 'parquet' or 'ecsv.gz', got {epoch_format!r}")
    if n < 1:
        raise InputError(f"simulate: the number of sources must be at least 1, got {n}")
    start = time.perf_counter()
    n_chunks = -(-n // max(1, int(chunk)))
    sizes = np.diff(np.linspace(0, n, n_chunks + 1).round().astype(np.int64))
    edges = np.linspace(0, N_PIXELS, n_chunks + 1).astype(np.int64)
    classes: dict[str, int] = {}
    labels: dict[str, int] = {}
    n_with_xp = n_epochs = 0
    files: dict[str, list[str]] = {}
    out = Path(out)
    archive = out / "archive"
    staging = out / f".archive.tmp-{os.getpid()}"  # the new archive/ is written in here, then swapped in
    truth_path = out / FILE_NAMES["truth"]
    truth_tmp = truth_path.with_name(f".{truth_path.name}.tmp-{os.getpid()}")
    writer = None
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run with this process id
        for c in range(n_chunks):
            if n_chunks == 1:
                tables = simulate_tables(n, seed)
            else:
                tables = simulate_tables(int(sizes[c]), [seed, c], pixels=(int(edges[c]), int(edges[c + 1])))
            written = write_tables(tables, staging, epoch_format, suffix=f"-{c:03d}" if n_chunks > 1 else "",
                                   write_truth=False)
            for key, path in written.items():
                files.setdefault(key, []).append(str(archive / Path(path).name))
            truth = tables["truth"]
            if writer is None:
                writer = pq.ParquetWriter(truth_tmp, truth.schema)
            writer.write_table(truth)
            for d in pc.value_counts(truth.column("class")).to_pylist():
                classes[d["values"]] = classes.get(d["values"], 0) + d["counts"]
            for d in pc.value_counts(tables["vari_classifier_result"].column("best_class_name")).to_pylist():
                labels[d["values"]] = labels.get(d["values"], 0) + d["counts"]
            n_with_xp += int(pc.sum(truth.column("has_xp")).as_py())
            n_epochs += int(pc.sum(truth.column("n_g_transits")).as_py())
            del tables, truth
        writer.close()
        writer = None
        if archive.exists():
            os.replace(archive, staging / "previous")
        os.replace(staging / "archive", archive)
        os.replace(truth_tmp, truth_path)
    finally:
        if writer is not None:
            writer.close()
        if truth_tmp.exists():
            truth_tmp.unlink()
        shutil.rmtree(staging, ignore_errors=True)
    files["truth"] = [str(truth_path)]
    return {
        "n_sources": n,
        "seed": seed,
        "classes": dict(sorted(classes.items())),
        "labels": dict(sorted(labels.items())),
        "n_with_xp": n_with_xp,
        "n_epochs": n_epochs,
        "files": files,
        "seconds": round(time.perf_counter() - start, 3),
    }
