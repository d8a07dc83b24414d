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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from latentcat.gaia.xp import BANDS, N_COEFFICIENTS, basis_function_id, design_matrix, gaiaxpy_config_dir

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
# Shape of the coefficient errors along the basis index: flat for the first 20, then falling.
_ERROR_PROFILE = np.exp(-np.clip(np.arange(N_COEFFICIENTS) - 20, 0, None) / 20.0)
_ERROR_PROFILE[-2:] *= (0.4, 0.2)


def _instrument_file(name: str) -> np.ndarray:
    return np.loadtxt(gaiaxpy_config_dir() / name, delimiter=",")


@lru_cache(maxsize=1)
def _instrument() -> dict[str, dict[str, np.ndarray]]:
    """Per band on ``_U_FINE``: wavelength, instrument factor R(l) l |dl/du|, the fit matrix and
    the wavelength-only parts of the model SEDs (extinction curve, molecular band profiles)."""
    dispersion = np.genfromtxt(gaiaxpy_config_dir() / "TabulatedDispersionFunction-DR3-v375wiv142r_20200610.csv",
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
        # photon spectrum on the fine grid -> LSF -> least-squares coefficients, one matrix
        fit = lsf @ np.linalg.pinv(design)
        f32 = np.float32
        out[band] = {"lam": lam, "factor": resp * lam * dlam_du, "fit": fit, "du": du,
                     "wl_table": wl, "pwl_table": pwl, "resp_table": response,
                     # float32 rows for the (sources x fine grid) SED arithmetic
                     "lam32": lam.astype(f32), "factor32": (resp * lam * dlam_du).astype(f32),
                     "ccm32": _ccm_extinction(lam).astype(f32), "log_lam32": np.log(lam / 500.0).astype(f32),
                     "tio32": _band_profile(lam, _TIO_HEADS).astype(f32),
                     "vo32": _band_profile(lam, _VO_HEADS).astype(f32),
                     "forest32": (0.0036 * (lam / 121.6) ** 3.46).astype(f32)}
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


def _continuum(lam, teff, alpha, is_qso, a_v):
    """Continuum F_lambda (arbitrary units) with interstellar extinction; all arguments broadcast.

    A blackbody at ``teff`` or, where ``is_qso``, the power law ``f_nu ~ nu**alpha``, times
    ``10**(-0.4 a_v A_lambda/A_V)``, computed in the precision of ``lam``. Written as one
    exponential: the blackbody ``l**-5 / (exp(x) - 1) = l**-5 exp(-x) / (1 - exp(-x))`` with
    ``x = hc / (l k T)`` capped at 80 (the flux there is ~1e-35 of its peak), so float32 never
    overflows.
    """
    lam = np.asarray(lam)
    dtype = lam.dtype
    log_l = np.log(lam / dtype.type(500.0))
    ext = (-0.4 * np.log(10.0) * _ccm_extinction(lam)).astype(dtype)
    x = np.minimum(dtype.type(_HC_OVER_K) / (lam * teff), dtype.type(80.0))
    log_f = np.where(is_qso, (-2.0 - alpha) * log_l, -5.0 * log_l - x)
    f = np.exp(log_f + a_v * ext)
    return np.where(is_qso, f, f / -np.expm1(-x))


def _ccm_extinction(lam: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """A_lambda / A_V of Cardelli, Clayton & Mathis (1989), lam in nm, 100 nm - 3.3 micron.

    Infrared (x < 1.1 / micron), optical (1.1-3.3), ultraviolet (3.3-8) and far-ultraviolet
    (8-10) pieces; shorter wavelengths get the 100 nm value. The ultraviolet matters only for
    the redshifted quasar lines that fall blueward of the instrument (they are not seen, but
    their continuum is evaluated and must stay finite).
    """
    x = np.clip(1000.0 / np.asarray(lam, dtype=np.float64), 0.3, 10.0)  # 1/micron
    y = x - 1.82
    a_opt = 1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5 \
        - 0.77530 * y**6 + 0.32999 * y**7
    b_opt = 1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5 \
        + 5.30260 * y**6 - 2.09002 * y**7
    xi = x**1.61
    w = np.clip(x - 5.9, 0.0, None)
    a_uv = 1.752 - 0.316 * x - 0.104 / ((x - 4.67) ** 2 + 0.341) - 0.04473 * w**2 - 0.009779 * w**3
    b_uv = -3.090 + 1.825 * x + 1.206 / ((x - 4.62) ** 2 + 0.263) + 0.2130 * w**2 + 0.1207 * w**3
    v = x - 8.0
    a_fuv = -1.073 - 0.628 * v + 0.137 * v**2 - 0.070 * v**3
    b_fuv = 13.670 + 4.257 * v - 0.420 * v**2 + 0.374 * v**3
    a = np.select([x < 1.1, x < 3.3, x <= 8.0], [0.574 * xi, a_opt, a_uv], a_fuv)
    b = np.select([x < 1.1, x < 3.3, x <= 8.0], [-0.527 * xi, b_opt, b_uv], b_fuv)
    return a + b / r_v


def _band_profile(lam: np.ndarray, heads: np.ndarray, width: float = 30.0) -> np.ndarray:
    """Sum of red-degraded band profiles (1 at the head, e-folding over ``width`` nm)."""
    d = lam[:, None] - heads[None, :, 0]
    return np.sum(heads[None, :, 1] * np.where(d >= 0, np.exp(-np.clip(d, 0.0, None) / width), 0.0), axis=1)


def _line_profiles(band: str, lam0: np.ndarray, sigma_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photon spectra on ``_U_FINE`` of Gaussian lines of unit integrated F_lambda flux.

    ``lam0`` (k,) nm and ``sigma_nm`` (k,) give each line's centre and width; the line-spread
    function is added in quadrature. Returns ``seen`` (k,), whether the line falls where the
    band has response, and the profiles of the seen lines, float32 (n_seen, len(_U_FINE)).
    """
    inst = _instrument()[band]
    resp = np.interp(lam0, inst["resp_table"][0], inst["resp_table"][1], left=0.0, right=0.0)
    u0 = pseudo_wavelength(lam0, band)
    seen = np.isfinite(u0) & (resp > 0)
    lam0, sigma_nm, resp, u0 = lam0[seen], sigma_nm[seen], resp[seen], u0[seen]
    du_dlam = np.abs(pseudo_wavelength(lam0 + 0.5, band) - pseudo_wavelength(lam0 - 0.5, band))
    sigma_u = np.sqrt((sigma_nm * np.nan_to_num(du_dlam)) ** 2 + _LSF_SIGMA**2)
    norm = (resp * lam0 / (np.sqrt(2 * np.pi) * sigma_u)).astype(np.float32)
    d = (_U_FINE.astype(np.float32)[None, :] - u0.astype(np.float32)[:, None]) / sigma_u.astype(np.float32)[:, None]
    return seen, norm[:, None] * np.exp(-0.5 * d * d)


def _correlations(scaled: np.ndarray) -> np.ndarray:
    """Lower triangle (archive order) of ``B B^T`` per source, ``scaled`` (2, n, 55) -> float32 (n, 1485)."""
    a, b = scaled.astype(np.float32)
    corr = np.empty((a.shape[0], _TRIL_K.size), dtype=np.float32)
    for k in range(1, N_COEFFICIENTS):  # row k of the triangle holds l = 0..k-1, contiguous
        out = corr[:, k * (k - 1) // 2: k * (k + 1) // 2]
        np.multiply(a[:, k:k + 1], a[:, :k], out=out)
        out += b[:, k:k + 1] * b[:, :k]
    return corr


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
    """simulate_xp_continuous for one block of sources (arguments already checked).

    The model spectra are (sources x fine grid) float32 arrays: one exponential per element for
    the continuum (blackbody or power law, extinction and molecular bands in the exponent), the
    lines added only where they fall in the band. The least-squares fit to the DR3 bases is one
    precomputed matrix (LSF and pseudo-inverse) applied in float64.
    """
    n = source_id.size
    # Every draw is made for all sources, in a fixed order, so results depend only on the seed:
    # the model parameters first, then the noise of BP, then that of RP.
    sed = _draw_seds(is_qso, is_lpv, is_yso, teff, rng, redshift, a_v)
    lines = _spectral_lines(sed, is_yso)
    inst = _instrument()
    band_flux, projected = {}, {}
    for band in BANDS:
        spectrum = _band_spectrum(band, sed, lines)
        band_flux[band] = spectrum.sum(axis=1, dtype=np.float64) * inst[band]["du"]
        projected[band] = spectrum.astype(np.float64) @ inst[band]["fit"]
    scale = _g_flux_scale(band_flux, g_mag)

    columns: dict[str, pa.Array] = {
        "source_id": pa.array(source_id, type=pa.int64()),
        "solution_id": pa.array(np.full(n, DR3_XP_SOLUTION_ID, dtype=np.int64)),
    }
    for band in BANDS:
        columns.update(_observed_band(band, band_flux[band] * scale, projected[band] * scale[:, None], rng))
    return pa.table(columns)


@dataclass
class _Seds:
    """The model SED parameters of one block of sources.

    Attributes
    ----------
    is_qso : ndarray of bool
    star_teff : ndarray
        Effective temperature (K); 5000 for QSOs, whose continuum is a power law.
    alpha, z : ndarray
        QSO power-law index and redshift.
    a_v : ndarray
        Interstellar plus (YSO) circumstellar V-band extinction (mag).
    ha_ew : ndarray
        YSO H-alpha emission equivalent width (nm).
    cool : ndarray of int
        The rows with molecular bands (below 4000 K), and ``tio`` and ``vo``, float32, their
        TiO and VO band strengths.
    """

    is_qso: np.ndarray
    star_teff: np.ndarray
    alpha: np.ndarray
    z: np.ndarray
    a_v: np.ndarray
    ha_ew: np.ndarray
    cool: np.ndarray
    tio: np.ndarray
    vo: np.ndarray

    def continuum(self, rows: np.ndarray, lam0) -> np.ndarray:
        """Continuum F_lambda of ``rows`` at wavelengths lam0 (nm, one per row or one for all), float64."""
        return _continuum(lam0, self.star_teff[rows], self.alpha[rows], self.is_qso[rows], self.a_v[rows])


def _draw_seds(is_qso, is_lpv, is_yso, teff, rng, redshift, a_v) -> _Seds:
    """Draw the SED parameters of a block: redshift and power-law index (QSOs), extinction and
    H-alpha (YSOs); a given ``redshift`` or ``a_v`` is used as it is, without a draw."""
    n = is_qso.size
    f32 = np.float32
    z = rng.uniform(0.3, 3.0, n) if redshift is None else redshift
    alpha = rng.normal(-0.5, 0.3, n)
    a_v_ism = rng.exponential(np.where(is_qso, 0.1, 0.3)) if a_v is None else a_v
    a_v_yso = rng.uniform(1.0, 4.0, n)
    ha_ew = rng.uniform(2.0, 8.0, n)
    a_v_total = a_v_ism + np.where(is_yso, a_v_yso, 0.0)
    star_teff = np.where(is_qso, 5000.0, teff)
    cool = np.flatnonzero(~is_qso & (star_teff < 4000.0))
    tio = (np.clip((4000.0 - star_teff[cool]) / 1000.0, 0.0, 2.0) * np.where(is_lpv[cool], 3.0, 0.7)).astype(f32)
    vo = (np.clip((3300.0 - star_teff[cool]) / 600.0, 0.0, 1.5) * np.where(is_lpv[cool], 1.5, 0.3)).astype(f32)
    return _Seds(is_qso, star_teff, alpha, z, a_v_total, ha_ew, cool, tio, vo)


def _spectral_lines(sed: _Seds, is_yso: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The lines of a block, the same for both bands: (rows, centre nm, integrated F_lambda flux,
    width sigma nm) for the broad QSO lines, Balmer absorption (peaking near 9000 K) and YSO H-alpha."""
    qso = np.flatnonzero(sed.is_qso)
    yso = np.flatnonzero(is_yso)
    balmer = np.exp(-0.5 * ((sed.star_teff - 9000.0) / 2000.0) ** 2)
    hot = np.flatnonzero(~sed.is_qso & (balmer > 1e-3))
    lines = []
    for rest, ew in _QSO_LINES:  # broad, 4000 km/s FWHM
        lam0 = rest * (1 + sed.z[qso])
        lines.append((qso, lam0, ew * (1 + sed.z[qso]) * sed.continuum(qso, lam0), lam0 * 4000.0 / 2.998e5 / 2.355))
    for rest, ew in _BALMER:  # absorption, peaking near 9000 K
        lines.append((hot, np.array([rest]), -balmer[hot] * ew * sed.continuum(hot, np.array(rest)), np.array([1.5])))
    lines.append((yso, np.array([656.3]), sed.ha_ew[yso] * sed.continuum(yso, np.array(656.3)), np.array([0.5])))
    return lines


def _band_spectrum(band: str, sed: _Seds, lines: list) -> np.ndarray:
    """The photon spectra of a block in one band on ``_U_FINE`` (float32, sources x grid, >= 0)."""
    f32 = np.float32
    b = _instrument()[band]
    spectrum = _continuum(b["lam32"][None, :], sed.star_teff.astype(f32)[:, None], sed.alpha.astype(f32)[:, None],
                          sed.is_qso[:, None], sed.a_v.astype(f32)[:, None])
    spectrum[sed.cool] *= np.exp(-np.multiply.outer(sed.tio, b["tio32"]) - np.multiply.outer(sed.vo, b["vo32"]))
    qso = np.flatnonzero(sed.is_qso)
    if qso.size:  # Ly-alpha forest (Madau-like optical depth) and the Lyman limit
        edge = (1 + sed.z[qso].astype(f32))[:, None]
        tau = np.where(b["lam32"][None, :] < 121.6 * edge, b["forest32"][None, :], f32(0.0))
        tau += np.where(b["lam32"][None, :] < 91.2 * edge, f32(3.0), f32(0.0))
        spectrum[qso] *= np.exp(-tau)
    spectrum *= b["factor32"][None, :]
    for rows, lam0, flux, sigma_nm in lines:  # added only where the line falls in the band
        if rows.size == 0:
            continue
        seen, profile = _line_profiles(band, lam0, sigma_nm)
        if lam0.size == 1:  # one centre, one profile for all rows
            if seen[0]:
                spectrum[rows] += flux.astype(f32)[:, None] * profile
        else:
            spectrum[rows[seen]] += flux[seen].astype(f32)[:, None] * profile
    np.clip(spectrum, 0.0, None, out=spectrum)
    return spectrum


def _g_flux_scale(band_flux: dict[str, np.ndarray], g_mag: np.ndarray) -> np.ndarray:
    """The factor that scales each model to its G magnitude: BP+RP photon flux = k(BP-RP) * G flux."""
    tiny = 1e-300
    bp_rp = -2.5 * np.log10((band_flux["bp"] + tiny) / (band_flux["rp"] + tiny)) + BP_ZERO_POINT - RP_ZERO_POINT
    ratio = 1.15 + 0.12 * np.clip(bp_rp, 0.0, 5.0)
    return ratio * 10 ** (-0.4 * (g_mag - G_ZERO_POINT)) / (band_flux["bp"] + band_flux["rp"])


def _observed_band(band: str, flux: np.ndarray, true: np.ndarray, rng: np.random.Generator) -> dict[str, pa.Array]:
    """One band's archive columns: the true coefficients ``true`` of sources of band flux ``flux``
    (e-/s) with errors, correlated noise drawn from exactly the published covariance, and counts."""
    n = flux.size
    sigma0 = np.sqrt((4e-5 * flux) ** 2 + 3e-5 * flux + 0.38**2) * 10 ** rng.normal(0.0, 0.25, n)
    errors = sigma0[:, None] * _ERROR_PROFILE[None, :]
    factors = rng.normal(0.0, 0.25, (2, n, N_COEFFICIENTS))  # rank-2 correlation factors B
    norm = 1.0 / np.sqrt(1.0 + factors[0] ** 2 + factors[1] ** 2)
    scaled = factors * norm  # S B
    mix = rng.standard_normal((2, n, 1))
    unit = norm * rng.standard_normal((n, N_COEFFICIENTS)) + scaled[0] * mix[0] + scaled[1] * mix[1]
    coefficients = true + errors * unit
    significant = np.abs(true) > 3.0 * errors
    n_relevant = np.where(significant.any(axis=1),
                          N_COEFFICIENTS - np.argmax(significant[:, ::-1], axis=1), 0)
    return {
        f"{band}_basis_function_id": pa.array(np.full(n, basis_function_id(band), dtype=np.int64)),
        f"{band}_n_parameters": pa.array(np.full(n, N_COEFFICIENTS, dtype=np.int16)),
        f"{band}_standard_deviation": pa.array(np.clip(rng.normal(1.05, 0.05, n), 0.9, None).astype(np.float32)),
        f"{band}_coefficients": _list_column(coefficients, np.float64),
        f"{band}_coefficient_errors": _list_column(errors, np.float32),
        f"{band}_coefficient_correlations": _list_column(_correlations(scaled), np.float32),
        f"{band}_n_relevant_bases": pa.array(n_relevant.astype(np.int16)),
    }
