"""Numerics of the survey simulator's fast paths: extinction curve, float32 SEDs, correlations, segments."""

import warnings

import numpy as np

from latentcat.gaia.simulate_xp import _ccm_extinction, _continuum, _correlations, _instrument, simulate_xp_continuous
from latentcat.gaia.xp import convert_xp


def test_extinction_curve_reproduces_ccm89_broadband_values():
    # Cardelli, Clayton & Mathis 1989, Table 3 (R_V = 3.1): A_lambda / A_V at U B V R I J H K
    lam = np.array([365.0, 440.0, 550.0, 700.0, 900.0, 1250.0, 1600.0, 2200.0])
    table = np.array([1.569, 1.337, 1.000, 0.751, 0.479, 0.282, 0.190, 0.114])
    np.testing.assert_allclose(_ccm_extinction(lam), table, rtol=0.015)


def test_extinction_curve_has_the_uv_bump_and_stays_finite_below_300_nm():
    lam = np.array([182.0, 217.5, 250.0])
    a = _ccm_extinction(lam)
    assert a[1] > a[0] and a[1] > a[2]  # the 2175 A bump
    assert 2.8 < a[1] < 3.5
    uv = _ccm_extinction(np.linspace(91.2, 300.0, 500))  # quasar lines redshifted blueward of BP
    assert np.all(np.isfinite(uv)) and np.all((uv > 1.5) & (uv < 10.0))
    edge = 1000.0 / 3.3  # optical and ultraviolet pieces meet at x = 3.3 / micron
    below, above = _ccm_extinction(np.array([edge * (1 + 1e-6), edge * (1 - 1e-6)]))
    assert abs(below - above) < 0.01 * below


def test_reddened_quasars_simulate_without_floating_point_overflow():
    n = 200
    z = np.linspace(0.3, 3.0, n)
    _instrument()  # GaiaXPy's configuration is read (and its imports warn) before the check
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error", RuntimeWarning)
        table = simulate_xp_continuous(np.arange(1, n + 1), np.array(["QSO"] * n), np.zeros(n), np.full(n, 17.0),
                                       np.random.default_rng(5), redshift=z, a_v=np.full(n, 3.0))
    spectra = convert_xp(table)
    flux = np.concatenate([np.asarray(spectra[c].combine_chunks().flatten()) for c in ("bp_flux", "rp_flux")])
    assert np.all(np.isfinite(flux))


def test_float32_continuum_matches_the_float64_blackbody_and_power_law():
    lam = _instrument()["bp"]["lam"]
    teff = np.array([2600.0, 3500.0, 5800.0, 9000.0, 20000.0, 5000.0])
    alpha = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -0.7])
    qso = np.array([False] * 5 + [True])
    a_v = np.array([0.0, 1.0, 0.3, 2.0, 5.0, 0.5])
    # reference straight from the definitions, in float64
    planck = (lam[None, :] / 500.0) ** -5 / np.expm1(1.438777e7 / (lam[None, :] * teff[:, None]))
    power = (lam[None, :] / 500.0) ** (-2.0 - alpha[:, None])
    want = np.where(qso[:, None], power, planck) * 10 ** (-0.4 * a_v[:, None] * _ccm_extinction(lam)[None, :])
    f32 = np.float32
    got = _continuum(lam.astype(f32)[None, :], teff.astype(f32)[:, None], alpha.astype(f32)[:, None], qso[:, None],
                     a_v.astype(f32)[:, None])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_correlations_are_the_archive_ordered_lower_triangle_of_b_bt():
    rng = np.random.default_rng(2)
    scaled = rng.normal(0.0, 0.3, (2, 7, 55))
    full = np.einsum("rnk,rnl->nkl", scaled, scaled)
    k, l = np.tril_indices(55, k=-1)  # archive order: (1,0), (2,0), (2,1), (3,0), ...
    np.testing.assert_allclose(_correlations(scaled), full[:, k, l], rtol=1e-5, atol=1e-7)


def test_simulated_correlation_matrices_are_valid_correlation_matrices():
    table = simulate_xp_continuous(np.arange(1, 21), np.array(["RRAB"] * 20), np.full(20, 7000.0), np.full(20, 15.0),
                                   np.random.default_rng(1))
    corr = np.asarray(table["bp_coefficient_correlations"].combine_chunks().flatten()).reshape(20, -1)
    k, l = np.tril_indices(55, k=-1)
    for row in corr:
        r = np.eye(55)
        r[k, l] = r[l, k] = row
        assert np.all(np.abs(row) < 1.0)
        assert np.linalg.eigvalsh(r).min() > 0.0
