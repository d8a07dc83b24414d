"""Simulated Gaia DR3 XP continuous spectra (BP/RP coefficients) for the survey simulator.

Each source gets a model SED for its class and temperature, is put through the
instrument (dispersion and response of GaiaXPy's DR3 instrument model, a Gaussian
line-spread function), fitted with the DR3 basis functions and given coefficient
errors, correlations and noise like the archive's. The rows come out in the
archive's XP_CONTINUOUS layout, so the real ingest path
(:func:`latentcat.gaia.xp.convert_xp`) turns them into spectra.

Model, per class (DR3 ``vari_classifier_result`` names):

* RR Lyrae, delta Scuti/gamma Dor/SX Phe, Cepheids, eclipsing binaries and any
  other star: a blackbody at ``teff`` with Balmer absorption lines whose strength
  peaks near 9000 K;
* long-period variables (LPV, MIRA, SR): TiO and VO molecular bands below 4000 K
  (and 3300 K for VO), deepening with falling temperature;
* SOLAR_LIKE/ROT/RS/BY and YSO: K/M dwarfs as above; a YSO has 1-4 mag of extra
  circumstellar extinction and H-alpha in emission (EW 2-8 nm);
* QSO/AGN: ``f_nu ~ nu**alpha`` (alpha ~ N(-0.5, 0.3)), broad (4000 km/s)
  Ly-alpha, CIV, CIII], MgII, H-beta and H-alpha lines at a redshift drawn in
  0.3-3, the Ly-alpha forest (Madau-like optical depth) and the Lyman limit;
* interstellar extinction, Cardelli, Clayton & Mathis 1989 (R_V = 3.1), A_V ~ Exp(0.3)
  (0.1 for QSOs) unless given.

Photometric scale: the integral of an XP spectrum over pseudo-wavelength is the
band flux in e-/s (checked on the DR3 fixtures against GaiaXPy's synthetic BP/RP
to 1 %). The BP+RP sum is set to ``k * 10**((25.6874 - G) / 2.5)`` with the
Gaia DR3 G zero point and ``k = 1.15 + 0.12 * clip(BP-RP, 0, 5)``, which matches
the ratio of the fixtures' BP+RP to G fluxes (1.15 at BP-RP = -0.3, 1.6 at 3.8).

Errors: the coefficient errors of the DR3 fixtures follow
``sigma = w_k * sqrt((4e-5 F)**2 + 3e-5 F + 0.38**2)`` with ``F`` the band flux
(e-/s), ``w_k`` flat for the first 20 bases then falling to ~0.02 for the last,
and a 0.25 dex scatter between sources (numbers of transits differ). The
correlations are drawn from ``S (I + B B^T) S`` with a random rank-2 ``B`` and
``S`` normalising the diagonal, which gives the archive's typical |rho| ~ 0.05-0.1
with a few pairs at 0.4-0.7; the coefficient noise is drawn from exactly that
covariance.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa

from latentcat.gaia.xp import BANDS, N_COEFFICIENTS, basis_function_id, design_matrix

__all__ = ["simulate_xp_continuous", "pseudo_wavelength", "G_ZERO_POINT", "BP_ZERO_POINT", "RP_ZERO_POINT"]

#: Gaia DR3 Vega zero points (Riello et al. 2021), mag for 1 e-/s.
G_ZERO_POINT, BP_ZERO_POINT, RP_ZERO_POINT = 25.6874, 25.3385, 24.7479

#: solution_id of the DR3 XP mean spectra in the archive.
DR3_XP_SOLUTION_ID = 4545469030156206080

_U_FINE = np.arange(-5.0, 65.0 + 1e-9, 0.25)  # pseudo-wavelength grid of the model spectra
_BLOCK = 2048  # sources simulated together
_LSF_SIGMA = 0.7  # Gaussian line-spread function, pseudo-wavelength units
_HC_OVER_K = 1.438777e7  # nm K

_STAR_LPV = {"LPV", "MIRA", "SR", "SARG", "OSARG"}
_QSO = {"QSO", "AGN"}
_YSO = {"YSO"}

# Rest wavelengths (nm) and rest equivalent widths (nm) of the broad quasar lines.
_QSO_LINES = np.array([[121.6, 9.0], [154.9, 3.0], [190.9, 2.0], [279.8, 3.0], [486.1, 5.0], [656.3, 25.0]])
_BALMER = np.array([[656.3, 1.0], [486.1, 1.2], [434.0, 1.0], [410.2, 0.8]])  # nm, EW (nm) at the peak
# Molecular band heads (nm, relative strength); bands are degraded to the red.
_TIO_HEADS = np.array([[476.1, 0.4], [516.7, 0.5], [544.8, 0.6], [615.9, 0.8], [705.4, 1.0],
                       [759.0, 0.5], [843.2, 0.7], [885.9, 0.6]])
_VO_HEADS = np.array([[740.0, 0.8], [790.0, 0.8], [1050.0, 0.6]])
_TRIL_K, _TRIL_L = np.tril_indices(N_COEFFICIENTS, k=-1)  # archive order of the correlations


def _instrument_file(name: str) -> np.ndarray:
    from gaiaxpy.config.paths import config_path

    return np.loadtxt(f"{config_path}/{name}", delimiter=",")


@lru_cache(maxsize=1)
def _instrument() -> dict[str, dict[str, np.ndarray]]:
    """Per band on ``_U_FINE``: wavelength, instrument factor R(l) l |dl/du|, and the fit matrix."""
    from gaiaxpy.config.paths import config_path

    dispersion = np.genfromtxt(f"{config_path}/TabulatedDispersionFunction-DR3-v375wiv142r_20200610.csv",
                               delimiter=",", names=True)
    response_files = {"bp": "bpC03_v375wi_response.csv", "rp": "rpC03_v142r_response.csv"}
    du = _U_FINE[1] - _U_FINE[0]
    lsf = np.exp(-0.5 * ((_U_FINE[:, None] - _U_FINE[None, :]) / _LSF_SIGMA) ** 2)
    lsf /= lsf.sum(axis=0, keepdims=True)
    out = {}
    for band in BANDS:
        ok = np.isfinite(dispersion[f"{band}_pwl"])
        wl, pwl = dispersion["wl_nm"][ok], dispersion[f"{band}_pwl"][ok]
        order = np.argsort(pwl)
        lam = np.interp(_U_FINE, pwl[order], wl[order])
        inside = (_U_FINE >= pwl.min()) & (_U_FINE <= pwl.max())
        dlam_du = np.abs(np.gradient(lam, _U_FINE))
        response = _instrument_file(response_files[band])
        resp = np.interp(lam, response[0], response[1], left=0.0, right=0.0) * inside
        design = design_matrix(band, _U_FINE)
        # photon spectrum on the fine grid -> LSF -> least-squares coefficients
        fit = lsf @ np.linalg.pinv(design)
        out[band] = {"lam": lam, "factor": resp * lam * dlam_du, "fit": fit, "du": du,
                     "wl_table": wl, "pwl_table": pwl, "resp_table": response}
    return out


def pseudo_wavelength(wavelength_nm: np.ndarray, band: str) -> np.ndarray:
    """Pseudo-wavelength of a wavelength in a band (GaiaXPy's DR3 dispersion function).

    Parameters
    ----------
    wavelength_nm : array of float
    band : {'bp', 'rp'}

    Returns
    -------
    numpy.ndarray
        Pseudo-wavelengths; NaN outside 300-1100 nm (BP) / 550-1100 nm (RP).
    """
    inst = _instrument()[band]
    wl, pwl = inst["wl_table"], inst["pwl_table"]
    return np.interp(wavelength_nm, wl, pwl, left=np.nan, right=np.nan)


def _planck(lam: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Blackbody F_lambda (arbitrary units), lam (m,) nm, teff (n,) K -> (n, m)."""
    x = _HC_OVER_K / (lam[None, :] * teff[:, None])
    return (lam[None, :] / 500.0) ** -5 / np.expm1(np.minimum(x, 700.0))


def _ccm_extinction(lam: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """A_lambda / A_V of Cardelli, Clayton & Mathis (1989), lam in nm (optical and near-IR)."""
    x = 1000.0 / np.asarray(lam, dtype=np.float64)  # 1/micron
    ir = x < 1.1
    y = x - 1.82
    a_opt = 1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5 \
        - 0.77530 * y**6 + 0.32999 * y**7
    b_opt = 1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5 \
        + 5.30260 * y**6 - 2.09002 * y**7
    xi = np.clip(x, 0.3, None) ** 1.61
    a = np.where(ir, 0.574 * xi, a_opt)
    b = np.where(ir, -0.527 * xi, b_opt)
    return a + b / r_v


def _band_profile(lam: np.ndarray, heads: np.ndarray, width: float = 30.0) -> np.ndarray:
    """Sum of red-degraded band profiles (1 at the head, e-folding over ``width`` nm)."""
    d = lam[:, None] - heads[None, :, 0]
    return np.sum(heads[None, :, 1] * np.where(d >= 0, np.exp(-d / width), 0.0), axis=1)


def _line_spectrum(band: str, lam0: np.ndarray, flux: np.ndarray, sigma_nm: np.ndarray) -> np.ndarray:
    """Photon spectrum on ``_U_FINE`` of Gaussian lines: centre lam0 (n,) nm, integrated F_lambda flux (n,)."""
    inst = _instrument()[band]
    resp = np.interp(lam0, inst["resp_table"][0], inst["resp_table"][1], left=0.0, right=0.0)
    u0 = pseudo_wavelength(lam0, band)
    seen = np.isfinite(u0) & (resp > 0)
    u0 = np.where(seen, u0, 0.0)
    du_dlam = np.abs(pseudo_wavelength(lam0 + 0.5, band) - pseudo_wavelength(lam0 - 0.5, band))
    sigma_u = np.sqrt((sigma_nm * np.nan_to_num(du_dlam)) ** 2 + _LSF_SIGMA**2)
    weight = np.where(seen, flux * resp * lam0, 0.0)
    gauss = np.exp(-0.5 * ((_U_FINE[None, :] - u0[:, None]) / sigma_u[:, None]) ** 2)
    return weight[:, None] * gauss / (np.sqrt(2 * np.pi) * sigma_u[:, None])


def _list_column(values: np.ndarray, dtype) -> pa.Array:
    n, width = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values, dtype=dtype).ravel()))


def simulate_xp_continuous(source_id: np.ndarray, class_name: np.ndarray, teff: np.ndarray,
                           g_mag: np.ndarray, rng: np.random.Generator, *,
                           redshift: np.ndarray | None = None, a_v: np.ndarray | None = None) -> pa.Table:
    """Simulate XP continuous spectra in the archive's XP_CONTINUOUS layout.

    Parameters
    ----------
    source_id : array of int64
    class_name : array of str
        DR3 variability class per source (see the module notes for the models).
    teff : array of float
        Effective temperature (K); ignored for QSO/AGN.
    g_mag : array of float
        G magnitude, sets the flux scale.
    rng : numpy.random.Generator
        The only source of randomness: the same seed gives the same table.
    redshift : array of float, optional
        Quasar redshifts (used for QSO/AGN rows); drawn uniformly in 0.3-3 when not given.
    a_v : array of float, optional
        Interstellar V-band extinction (mag); drawn when not given.

    Returns
    -------
    pyarrow.Table
        source_id, solution_id and per band ``{band}_basis_function_id``, ``{band}_n_parameters``,
        ``{band}_standard_deviation``, ``{band}_coefficients`` (list<double>, 55),
        ``{band}_coefficient_errors`` (list<float>, 55), ``{band}_coefficient_correlations``
        (list<float>, 1485, lower triangle), ``{band}_n_relevant_bases``.
    """
    source_id = np.asarray(source_id, dtype=np.int64)
    n = source_id.size
    names = np.char.upper(np.asarray(class_name, dtype=str))
    teff = np.asarray(teff, dtype=np.float64)
    g_mag = np.asarray(g_mag, dtype=np.float64)
    if not (names.size == teff.size == g_mag.size == n):
        raise ValueError("source_id, class_name, teff and g_mag must have the same length")
    is_qso = np.isin(names, list(_QSO))
    is_lpv = np.isin(names, list(_STAR_LPV))
    is_yso = np.isin(names, list(_YSO))
    if np.any(~is_qso & ~(teff > 0)):
        raise ValueError("teff must be positive for every source that is not a QSO/AGN")
    if not np.all(np.isfinite(g_mag)):
        raise ValueError("g_mag must be finite")
    z = None if redshift is None else np.broadcast_to(np.asarray(redshift, float), (n,))
    a_v = None if a_v is None else np.broadcast_to(np.asarray(a_v, float), (n,))
    # Blocks of sources keep the working arrays small; they are simulated in order from one rng.
    tables = []
    for start in range(0, n, _BLOCK):
        b = slice(start, start + _BLOCK)
        tables.append(_simulate_block(source_id[b], is_qso[b], is_lpv[b], is_yso[b], teff[b], g_mag[b], rng,
                                      None if z is None else z[b], None if a_v is None else a_v[b]))
    if not tables:
        tables.append(_simulate_block(source_id, is_qso, is_lpv, is_yso, teff, g_mag, rng, z, a_v))
    return pa.concat_tables(tables)


def _simulate_block(source_id, is_qso, is_lpv, is_yso, teff, g_mag, rng, redshift, a_v) -> pa.Table:
    """simulate_xp_continuous for one block of sources (arguments already checked)."""
    n = source_id.size

    # Every draw is made for all sources, in a fixed order, so results depend only on the seed.
    z = rng.uniform(0.3, 3.0, n) if redshift is None else redshift
    alpha = rng.normal(-0.5, 0.3, n)
    a_v_ism = rng.exponential(np.where(is_qso, 0.1, 0.3)) if a_v is None else a_v
    a_v_yso = rng.uniform(1.0, 4.0, n)
    ha_ew = rng.uniform(2.0, 8.0, n)
    a_v_total = a_v_ism + np.where(is_yso, a_v_yso, 0.0)
    star_teff = np.where(is_qso, 5000.0, teff)

    inst = _instrument()
    qso, star = np.flatnonzero(is_qso), np.flatnonzero(~is_qso)
    cool = star[star_teff[star] < 4000.0]
    yso = np.flatnonzero(is_yso)
    balmer = np.exp(-0.5 * ((star_teff - 9000.0) / 2000.0) ** 2)
    hot = star[balmer[star] > 1e-3]

    def continuum(rows, lam0):
        """Unabsorbed continuum F_lambda of ``rows`` at wavelengths lam0 (len(rows),), with extinction."""
        power = (lam0 / 500.0) ** (-2.0 - alpha[rows])
        planck = (lam0 / 500.0) ** -5 / np.expm1(np.minimum(_HC_OVER_K / (lam0 * star_teff[rows]), 700.0))
        cont = np.where(is_qso[rows], power, planck)
        return cont * 10 ** (-0.4 * a_v_total[rows] * _ccm_extinction(lam0))

    photons = {}
    for band in BANDS:
        lam, factor = inst[band]["lam"], inst[band]["factor"]
        sed = np.empty((n, lam.size))
        sed[star] = _planck(lam, star_teff[star])
        tio = np.clip((4000.0 - star_teff[cool]) / 1000.0, 0.0, 2.0) * np.where(is_lpv[cool], 3.0, 0.7)
        vo = np.clip((3300.0 - star_teff[cool]) / 600.0, 0.0, 1.5) * np.where(is_lpv[cool], 1.5, 0.3)
        sed[cool] *= np.exp(-tio[:, None] * _band_profile(lam, _TIO_HEADS)[None, :]
                            - vo[:, None] * _band_profile(lam, _VO_HEADS)[None, :])
        zq = z[qso][:, None]
        tau = np.where(lam[None, :] < 121.6 * (1 + zq), 0.0036 * (lam[None, :] / 121.6) ** 3.46, 0.0)
        tau += np.where(lam[None, :] < 91.2 * (1 + zq), 3.0, 0.0)
        sed[qso] = (lam[None, :] / 500.0) ** (-2.0 - alpha[qso][:, None]) * np.exp(-tau)
        sed *= 10 ** (-0.4 * a_v_total[:, None] * _ccm_extinction(lam)[None, :])
        spectrum = sed * factor[None, :]

        for rest, ew in _QSO_LINES:
            lam0 = rest * (1 + z[qso])
            flux = ew * (1 + z[qso]) * continuum(qso, lam0)
            spectrum[qso] += _line_spectrum(band, lam0, flux, lam0 * 4000.0 / 2.998e5 / 2.355)
        for rest, ew in _BALMER:
            lam0 = np.full(hot.size, rest)
            spectrum[hot] -= _line_spectrum(band, lam0, balmer[hot] * ew * continuum(hot, lam0),
                                            np.full(hot.size, 1.5))
        lam0 = np.full(yso.size, 656.3)
        spectrum[yso] += _line_spectrum(band, lam0, ha_ew[yso] * continuum(yso, lam0), np.full(yso.size, 0.5))
        photons[band] = np.clip(spectrum, 0.0, None)

    # Scale to the G magnitude: BP+RP photon flux = k(BP-RP) * G flux.
    band_flux = {b: photons[b].sum(axis=1) * inst[b]["du"] for b in BANDS}
    tiny = 1e-300
    bp_rp = -2.5 * np.log10((band_flux["bp"] + tiny) / (band_flux["rp"] + tiny)) + BP_ZERO_POINT - RP_ZERO_POINT
    ratio = 1.15 + 0.12 * np.clip(bp_rp, 0.0, 5.0)
    scale = ratio * 10 ** (-0.4 * (g_mag - G_ZERO_POINT)) / (band_flux["bp"] + band_flux["rp"])

    columns: dict[str, pa.Array] = {
        "source_id": pa.array(source_id, type=pa.int64()),
        "solution_id": pa.array(np.full(n, DR3_XP_SOLUTION_ID, dtype=np.int64)),
    }
    k = np.arange(N_COEFFICIENTS)
    profile = np.exp(-np.clip(k - 20, 0, None) / 20.0)
    profile[-2:] *= (0.4, 0.2)
    for band in BANDS:
        flux = band_flux[band] * scale
        true = (photons[band] * scale[:, None]) @ inst[band]["fit"]
        sigma0 = np.sqrt((4e-5 * flux) ** 2 + 3e-5 * flux + 0.38**2) * 10 ** rng.normal(0.0, 0.25, n)
        errors = sigma0[:, None] * profile[None, :]
        factors = rng.normal(0.0, 0.25, (2, n, N_COEFFICIENTS))  # rank-2 correlation factors B
        norm = 1.0 / np.sqrt(1.0 + factors[0] ** 2 + factors[1] ** 2)
        scaled = factors * norm  # S B
        corr = np.zeros((n, _TRIL_K.size))
        for f in scaled:
            pair = np.take(f, _TRIL_K, axis=1)
            pair *= np.take(f, _TRIL_L, axis=1)
            corr += pair
        mix = rng.standard_normal((2, n, 1))
        unit = norm * rng.standard_normal((n, N_COEFFICIENTS)) + scaled[0] * mix[0] + scaled[1] * mix[1]
        coefficients = true + errors * unit
        significant = np.abs(true) > 3.0 * errors
        n_relevant = np.where(significant.any(axis=1),
                              N_COEFFICIENTS - np.argmax(significant[:, ::-1], axis=1), 0)
        columns[f"{band}_basis_function_id"] = pa.array(np.full(n, basis_function_id(band), dtype=np.int64))
        columns[f"{band}_n_parameters"] = pa.array(np.full(n, N_COEFFICIENTS, dtype=np.int16))
        columns[f"{band}_standard_deviation"] = pa.array(
            np.clip(rng.normal(1.05, 0.05, n), 0.9, None).astype(np.float32))
        columns[f"{band}_coefficients"] = _list_column(coefficients, np.float64)
        columns[f"{band}_coefficient_errors"] = _list_column(errors, np.float32)
        columns[f"{band}_coefficient_correlations"] = _list_column(corr, np.float32)
        columns[f"{band}_n_relevant_bases"] = pa.array(n_relevant.astype(np.int16))
    return pa.table(columns)
