"""XP continuous -> sampled conversion (against GaiaXPy on real DR3 rows) and the XP simulator."""

from pathlib import Path

import gaiaxpy
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from latentcat.errors import InputError
from latentcat.gaia.simulate_xp import pseudo_wavelength, simulate_xp_continuous
from latentcat.gaia.xp import XP_SAMPLING, convert_xp, design_matrix

DATA = Path(__file__).parent / "data" / "gaia_dr3"
XP_FILES = ["XP_CONTINUOUS_RAW.csv", "XP_CONTINUOUS_RAW_with_missing_BP.csv"]
LIST_COLUMNS = ["coefficients", "coefficient_errors", "coefficient_correlations"]


def read_archive_csv(path: Path) -> pa.Table:
    """An archive XP_CONTINUOUS CSV ("(v1, v2, ...)" array cells, empty for a missing band) as Arrow."""
    df = pd.read_csv(path)
    columns = {"source_id": pa.array(df["source_id"].to_numpy(), type=pa.int64())}
    for band in ("bp", "rp"):
        for name in LIST_COLUMNS:
            cells = df[f"{band}_{name}"]
            columns[f"{band}_{name}"] = pa.array(
                [None if pd.isna(c) else [float(v) for v in c.strip("()").split(",")] for c in cells],
                type=pa.list_(pa.float64()))
    return pa.table(columns)


@pytest.fixture(scope="module")
def gaiaxpy_reference():
    out = {}
    for name in XP_FILES:
        ref, _ = gaiaxpy.convert(str(DATA / name), sampling=XP_SAMPLING, truncation=False, save_file=False)
        out[name] = ref
    return out


@pytest.mark.parametrize("name", XP_FILES)
def test_convert_matches_gaiaxpy(name, gaiaxpy_reference):
    table = read_archive_csv(DATA / name)
    ours = convert_xp(table)
    assert ours.column_names == ["source_id", "bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"]
    assert ours.schema.field("bp_flux").type == pa.list_(pa.float32())
    ids = ours["source_id"].to_numpy()
    n_compared = 0
    for _, row in gaiaxpy_reference[name].iterrows():
        i = int(np.flatnonzero(ids == row["source_id"])[0])
        band = row["xp"].lower()
        if np.ndim(row["flux"]) == 0:  # GaiaXPy marks a missing band with a scalar NaN
            assert ours[f"{band}_flux"][i].as_py() is None
            continue
        for ours_col, ref_col in ((f"{band}_flux", "flux"), (f"{band}_flux_error", "flux_error")):
            got = np.array(ours[ours_col][i].as_py())
            want = np.asarray(row[ref_col], dtype=float)
            # 1e-4 relative; values crossing zero are compared on the scale of the spectrum
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        n_compared += 1
    assert n_compared >= 4


def test_missing_bp_gives_null_bp_and_valid_rp():
    table = read_archive_csv(DATA / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    out = convert_xp(table)
    no_bp = np.flatnonzero(table["bp_coefficients"].is_null().to_numpy(zero_copy_only=False))
    assert no_bp.size == 1
    i = int(no_bp[0])
    assert out["bp_flux"][i].as_py() is None and out["bp_flux_error"][i].as_py() is None
    rp, rp_err = np.array(out["rp_flux"][i].as_py()), np.array(out["rp_flux_error"][i].as_py())
    assert rp.shape == (55,) and np.isfinite(rp).all() and (rp_err > 0).all()


def test_wrong_coefficient_length_names_the_source():
    table = read_archive_csv(DATA / "XP_CONTINUOUS_RAW.csv")
    rows = table.to_pylist()
    rows[1]["rp_coefficients"] = rows[1]["rp_coefficients"][:54]
    bad = pa.Table.from_pylist(rows, schema=table.schema)
    with pytest.raises(InputError, match=str(rows[1]["source_id"])):
        convert_xp(bad)


def test_design_matrix_shape_and_band_check():
    d = design_matrix("bp")
    assert d.shape == (55, XP_SAMPLING.size)
    assert design_matrix("RP", np.linspace(0, 60, 7)).shape == (55, 7)
    with pytest.raises(ValueError):
        design_matrix("g")


# --- simulator ---------------------------------------------------------------------------------

def simulate(classes, teff, g, seed=0, **kw):
    n = len(classes)
    table = simulate_xp_continuous(np.arange(1, n + 1, dtype=np.int64), np.array(classes), np.array(teff, float),
                                   np.array(g, float), np.random.default_rng(seed), **kw)
    return table, convert_xp(table)


def fluxes(spectra, i, band):
    return np.array(spectra[f"{band}_flux"][i].as_py()), np.array(spectra[f"{band}_flux_error"][i].as_py())


def test_simulated_mira_is_much_redder_than_rr_lyrae():
    _, spectra = simulate(["MIRA", "RRAB"], [2800, 7000], [14, 14], a_v=0.0)
    ratio = [fluxes(spectra, i, "rp")[0].sum() / fluxes(spectra, i, "bp")[0].sum() for i in range(2)]
    # a 2800 K photosphere under TiO emits several times more red than blue photons than a 7000 K one
    assert ratio[0] > 3 * ratio[1]


def test_simulated_quasar_shows_its_emission_lines():
    z = 0.5
    _, spectra = simulate(["QSO", "RRAB"], [0, 7000], [15, 15], redshift=z, a_v=0.0)
    for rest, band in ((279.8, "bp"), (486.1, "rp"), (656.3, "rp")):
        u0 = float(pseudo_wavelength(rest * (1 + z), band))
        assert 5 < u0 < 55
        contrast = []
        for i in range(2):
            f = fluxes(spectra, i, band)[0]
            peak = np.interp(u0, XP_SAMPLING, f)
            sides = 0.5 * (np.interp(u0 - 5, XP_SAMPLING, f) + np.interp(u0 + 5, XP_SAMPLING, f))
            contrast.append(peak / sides)
        assert contrast[0] > 1.1, (rest, contrast)  # the line stands above the QSO continuum
        assert contrast[0] > contrast[1] + 0.05  # and the star has no such feature there


def test_simulated_errors_grow_with_magnitude():
    g = [12.0, 15.0, 18.0, 20.0]
    _, spectra = simulate(["EW"] * 4, [6000] * 4, g, a_v=0.0)
    rel = []
    for i in range(4):
        f, e = fluxes(spectra, i, "rp")
        rel.append(np.median(e / np.abs(f).max()))
    assert np.all(np.diff(rel) > 0), rel
    bp = [fluxes(spectra, i, "bp")[0].sum() * 60 / 54 for i in range(4)]
    # flux scale: G = 15 gives a BP flux of order 1e4 e-/s, and each magnitude is a factor 10**0.4
    assert 3e3 < bp[1] < 1e5
    assert np.isclose(bp[0] / bp[1], 10 ** 1.2, rtol=0.05)


def test_simulated_rows_convert_to_finite_positive_spectra():
    classes = ["RRAB", "DCEP", "EA", "SOLAR_LIKE", "YSO", "MIRA", "SR", "QSO", "DSCT|GDOR|SXPHE"]
    teff = [6800, 6000, 5500, 4200, 3900, 2900, 3300, 0, 7500]
    table, spectra = simulate(classes, teff, [15] * len(classes), seed=3)
    assert table.num_rows == len(classes)
    for col in ("bp_coefficients", "rp_coefficients"):
        assert all(len(v) == 55 for v in table[col].to_pylist())
    assert all(len(v) == 1485 for v in table["bp_coefficient_correlations"].to_pylist())
    for i in range(len(classes)):
        for band in ("bp", "rp"):
            f, e = fluxes(spectra, i, band)
            assert np.isfinite(f).all() and np.isfinite(e).all() and (e > 0).all()
            # negative only within the noise and the basis ringing (~1 % of the peak)
            assert np.mean(f > -3 * e - 0.02 * f.max()) > 0.95, (classes[i], band)
        assert fluxes(spectra, i, "rp")[0].max() > 20 * fluxes(spectra, i, "rp")[1].max()


def test_same_seed_same_table():
    args = (["RRAB", "QSO", "MIRA"], [7000, 0, 3000], [14, 16, 12])
    a, _ = simulate(*args, seed=42)
    b, _ = simulate(*args, seed=42)
    c, _ = simulate(*args, seed=43)
    assert a.equals(b)
    assert not a.equals(c)
