"""Tests of the Gaia-like survey simulator (cadence, errors, light-curve shapes, files)."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from astropy.timeseries import LombScargle

from latentcat.errors import InputError
from latentcat.gaia import simulate_lc as lc
from latentcat.gaia.simulate import (
    FAINT_XP_FRACTION, PHOT_REJECTED_FRACTION, VAR_REJECTED_FRACTION, XP_G_LIMIT, simulate_survey, simulate_tables,
)

DATA = Path(__file__).parent / "data" / "gaia_dr3"
DR3_CLASSES = {
    "ACV|CP|MCP|ROAM|ROAP|SXARI", "ACYG", "AGN", "BCEP", "BE|GCAS|SDOR|WR", "CEP", "CV", "DSCT|GDOR|SXPHE", "ECL",
    "ELL", "EP", "LPV", "MICROLENSING", "RCB", "RR", "RS", "S", "SDB", "SN", "SOLAR_LIKE", "SPB", "WD", "YSO",
}


@pytest.fixture(scope="module")
def sim():
    return simulate_tables(3000, 7)


def lists(table, column):
    """A list column as a list of float arrays (nulls as NaN)."""
    col = table.column(column).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(float)
    return np.split(flat, col.offsets.to_numpy()[1:-1])


def truth_of(sim, cls):
    truth = sim["truth"]
    return np.flatnonzero(truth.column("class").to_numpy(zero_copy_only=False) == cls)


def clean_g(sim, i):
    """Times, mags and errors of the usable (not rejected) G transits of source row ``i``."""
    ep = sim["epoch_photometry"].slice(i, 1)
    t = np.asarray(ep.column("g_transit_time")[0].as_py())
    m = np.array(ep.column("g_transit_mag")[0].as_py(), dtype=float)
    f = np.array(ep.column("g_transit_flux")[0].as_py(), dtype=float)
    fe = np.array(ep.column("g_transit_flux_error")[0].as_py(), dtype=float)
    var = np.asarray(ep.column("variability_flag_g_reject")[0].as_py())
    ok = np.isfinite(m) & ~var
    return t[ok], m[ok], 1.0857 * fe[ok] / f[ok]


def test_same_seed_gives_identical_tables_and_files(tmp_path):
    a, b = simulate_tables(300, 3), simulate_tables(300, 3)
    for key in a:
        if a[key] is not None:  # compare as Python values: NaN == NaN there
            assert a[key].schema == b[key].schema and a[key].to_pydict().__repr__() == b[key].to_pydict().__repr__(), key
    assert not a["epoch_photometry"].equals(simulate_tables(300, 4)["epoch_photometry"])
    simulate_survey(200, 5, tmp_path / "x")
    simulate_survey(200, 5, tmp_path / "y")
    files = sorted(p.relative_to(tmp_path / "x") for p in (tmp_path / "x").rglob("*") if p.is_file())
    assert files and all((tmp_path / "x" / f).read_bytes() == (tmp_path / "y" / f).read_bytes() for f in files)


def test_transit_counts_span_and_visit_groups(sim):
    times = lists(sim["epoch_photometry"], "g_transit_time")
    n = np.array([t.size for t in times])
    assert n.min() >= 20 and n.max() <= 150
    assert 40 <= np.median(n) <= 80  # DR3 median ~50
    assert np.array_equal(n, sim["epoch_photometry"].column("n_transits").to_numpy())
    span = np.array([t[-1] - t[0] for t in times])
    assert np.all((np.concatenate(times) > 1666) & (np.concatenate(times) < 2710))
    assert np.median(span) > 950 and span.min() > 850
    gaps = np.concatenate([np.diff(t) for t in times])
    assert np.all(gaps > 0)
    # within a visit: 106.5 min between FoVs and 6-h spins; between visits: days to weeks
    assert np.all((gaps < 1.0) | (gaps > 2.0))
    has_pair = np.array([np.any(np.abs(np.diff(t) - 106.5 / 1440) < 1e-6) for t in times])
    assert has_pair.mean() > 0.95
    assert np.median(gaps[gaps > 2.0]) > 10


def test_within_visit_spacings_match_real_dr3_epochs():
    real = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml")
    real = real[real["band"] == "G"]
    real_gaps = np.concatenate([np.diff(np.sort(np.asarray(real["time"][real["source_id"] == s])))
                                for s in np.unique(real["source_id"])])
    real_short = np.round(real_gaps[real_gaps < 1.0], 2)
    sim_times, _ = lc.gaia_cadence(np.full(300, 45.0), np.random.default_rng(0))
    sim_gaps = np.diff(sim_times)
    sim_short = np.round(sim_gaps[(sim_gaps > 0) & (sim_gaps < 1.0)], 2)
    # every short spacing seen in real DR3 data is produced by the simulator, and vice versa mostly
    assert set(real_short) <= set(sim_short)
    assert np.isin(sim_short, real_short).mean() > 0.9


def _group_sizes(times):
    """Sizes of the visit groups (transits closer than 1.5 d) of each time array."""
    return np.concatenate([np.diff(np.r_[0, np.flatnonzero(np.diff(t) > 1.5) + 1, len(t)]) for t in times])


def test_visit_group_sizes_match_real_dr3_epochs():
    real = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml")
    real = real[real["band"] == "G"]
    real_sizes = _group_sizes([np.sort(np.asarray(real["time"][real["source_id"] == s])) for s in np.unique(real["source_id"])])
    times, offsets = lc.gaia_cadence(np.random.default_rng(1).uniform(-90, 90, 2000), np.random.default_rng(2))
    sim_sizes = _group_sizes(np.split(times, offsets[1:-1]))
    for k in (1, 2, 3):
        assert np.mean(sim_sizes == k) == pytest.approx(np.mean(real_sizes == k), abs=0.06), k
    assert np.mean(sim_sizes >= 4) == pytest.approx(np.mean(real_sizes >= 4), abs=0.05)
    assert sim_sizes.max() <= lc.MAX_GROUP


def test_error_curve_is_monotone_and_matches_real_dr3_errors():
    g = np.linspace(8, 21, 200)
    err = lc.g_mag_error(g)
    assert np.all(np.diff(err) > 0)
    assert 0.002 < lc.g_mag_error(np.array(15.0)) < 0.005
    assert 0.05 < lc.g_mag_error(np.array(20.5)) < 0.2
    real = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml")
    for band, fn in (("G", lc.g_mag_error), ("BP", lc.xp_mag_error), ("RP", lc.xp_mag_error)):
        rows = real[real["band"] == band]
        for s in np.unique(rows["source_id"]):
            r = rows[rows["source_id"] == s]
            reported = np.nanmedian(1.0857 * np.asarray(r["flux_error"]) / np.asarray(r["flux"]))
            ratio = fn(np.nanmedian(np.asarray(r["mag"], dtype=float))) / reported
            assert 0.5 < ratio < 2.0, (band, s, ratio)


def test_simulated_errors_grow_with_magnitude(sim):
    mags = np.concatenate(lists(sim["epoch_photometry"], "g_transit_mag"))
    foe = np.concatenate(lists(sim["epoch_photometry"], "g_transit_flux_over_error"))
    ok = np.isfinite(mags)
    bins = np.digitize(mags[ok], [12, 14, 16, 18, 20])
    med = [np.median(1.0857 / foe[ok][bins == k]) for k in range(6)]
    assert np.all(np.diff(med) > 0)


def test_fluxes_and_magnitudes_agree_with_dr3_zero_points(sim):
    ep = sim["epoch_photometry"]
    for flux, mag, zp in (("g_transit_flux", "g_transit_mag", 25.6874), ("bp_flux", "bp_mag", 25.3385),
                          ("rp_flux", "rp_mag", 24.7479)):
        f, m = np.concatenate(lists(ep, flux)), np.concatenate(lists(ep, mag))
        ok = np.isfinite(f)
        assert np.array_equal(ok, np.isfinite(m))
        np.testing.assert_allclose(-2.5 * np.log10(f[ok]) + zp, m[ok], atol=1e-9)


def test_rejected_transits_are_null_and_flagged_outliers_are_outlying(sim):
    ep = sim["epoch_photometry"]
    rej = np.concatenate(lists(ep, "rejected_by_photometry")).astype(bool)
    mag = np.concatenate(lists(ep, "g_transit_mag"))
    assert np.array_equal(np.isnan(mag), rej)
    assert abs(rej.mean() - PHOT_REJECTED_FRACTION) < 0.005
    flag = np.concatenate(lists(ep, "variability_flag_g_reject")).astype(bool)
    assert abs(flag.mean() - VAR_REJECTED_FRACTION) < 0.003 and not np.any(flag & rej)
    # on constant stars brighter than G = 18 (errors < 0.02 mag) a flagged point sits
    # >= 0.3 mag minus the noise away from the source median
    g = sim["gaia_source"].column("phot_g_mean_mag").to_numpy()
    n_flagged = n_points = n_checked = 0
    for i in truth_of(sim, "CONST"):
        m = np.array(ep.column("g_transit_mag")[int(i)].as_py(), dtype=float)
        f = np.asarray(ep.column("variability_flag_g_reject")[int(i)].as_py())
        n_flagged, n_points = n_flagged + f.sum(), n_points + f.size
        if g[i] < 18:
            n_checked += f.sum()
            assert np.all(np.abs(m[f] - np.nanmedian(m)) > 0.2)
    assert n_checked > 0 and n_flagged > 0.5 * VAR_REJECTED_FRACTION * n_points


@pytest.mark.parametrize("cls", ["RRAB", "DCEP"])
def test_true_period_is_recovered_by_lomb_scargle(sim, cls):
    truth = sim["truth"]
    g = sim["gaia_source"].column("phot_g_mean_mag").to_numpy()
    rows = [i for i in truth_of(sim, cls) if g[i] < 17.5][:5]
    assert len(rows) == 5
    for i in rows:
        t, m, e = clean_g(sim, i)
        p_true = truth.column("period")[int(i)].as_py()
        # two Fourier terms: RRab light curves are far from sinusoids (R21 ~ 0.5)
        freq, power = LombScargle(t, m, e, nterms=2).autopower(minimum_frequency=1 / 100, maximum_frequency=3,
                                                               samples_per_peak=5)
        p_best = 1 / freq[np.argmax(power)]
        assert abs(p_best - p_true) / p_true < 0.01, (cls, i, p_true, p_best)


def model_curve(cls, n_cycles=2.0, n=4000, seed=0):
    """The noiseless model of one source of ``cls`` on a dense grid, with its parameters."""
    rng = np.random.default_rng(seed)
    code = np.array([lc.CLASSES.index(cls)])
    p, sub = lc.draw_parameters(code, rng)
    t = p["t0"][0] + np.linspace(0, n_cycles * p["period"][0], n, endpoint=False)
    dm, amp = lc.light_curves(code, p, sub, t, np.array([0, n]), rng)
    return ((t - p["t0"][0]) / p["period"][0]) % 1.0, dm, amp[0], {k: v[0] for k, v in p.items()}


@pytest.mark.parametrize("seed", range(5))
def test_ew_minima_are_equal_and_eb_minima_are_not(seed):
    phase, dm, amp, p = model_curve("EW", seed=seed)
    prim = dm[(phase < 0.25) | (phase > 0.75)].max()
    sec = dm[(phase > 0.25) & (phase < 0.75)].max()
    assert prim == pytest.approx(sec, abs=1e-6)
    assert prim == pytest.approx(p["depth_primary"], abs=1e-3) and amp == pytest.approx(prim, abs=1e-3)
    phase, dm, _, p = model_curve("EB", seed=seed)
    prim = dm[(phase < 0.25) | (phase > 0.75)].max()
    sec = dm[(phase > 0.25) & (phase < 0.75)].max()
    assert sec < 0.85 * prim


@pytest.mark.parametrize("seed", range(5))
def test_ea_is_flat_between_two_unequal_eclipses(seed):
    phase, dm, amp, p = model_curve("EA", seed=seed)
    w = p["eclipse_width"]
    d1 = np.abs((phase + 0.5) % 1 - 0.5)
    d2 = np.abs((phase - p["secondary_phase"] + 0.5) % 1 - 0.5)
    outside = (d1 > w) & (d2 > w)
    assert outside.mean() > 0.7 and np.all(dm[outside] == 0.0)
    assert dm[d1 < w].max() == pytest.approx(p["depth_primary"], abs=0.01)
    assert 0 < dm[d2 < w].max() < dm[d1 < w].max()


def test_ea_observed_out_of_eclipse_scatter_matches_the_errors(sim):
    truth = sim["truth"]
    chi = []
    for i in truth_of(sim, "EA")[:60]:
        t, m, e = clean_g(sim, int(i))
        per, t0 = truth.column("period")[int(i)].as_py(), truth.column("t0")[int(i)].as_py()
        w = truth.column("eclipse_width")[int(i)].as_py()
        ph2 = truth.column("secondary_phase")[int(i)].as_py()
        phase = ((t - t0) / per) % 1
        out = (np.abs((phase + 0.5) % 1 - 0.5) > w) & (np.abs((phase - ph2 + 0.5) % 1 - 0.5) > w)
        chi.append((m[out] - np.median(m[out])) / e[out])
    chi = np.concatenate(chi)
    assert 0.8 < np.std(chi) < 1.3


def test_mira_amplitudes_are_large_and_dsct_periods_short(sim):
    truth = sim["truth"]
    mira = truth_of(sim, "MIRA")
    amp = truth.column("amplitude").to_numpy()
    assert np.all(amp[mira] >= 1.5)
    observed = [np.ptp(clean_g(sim, int(i))[1]) for i in mira]
    assert np.mean(np.array(observed) > 1.0) > 0.9
    per = truth.column("period").to_numpy()
    assert np.all((per[mira] >= 100) & (per[mira] <= 1000))
    dsct = truth_of(sim, "DSCT")
    # the amplitudes of what DR3 classifies as delta Scuti: median 0.17 mag, HADS included
    assert np.all((per[dsct] >= 0.02) & (per[dsct] <= 0.25)) and 0.1 < np.median(amp[dsct]) < 0.25
    ew = truth_of(sim, "EW")
    assert np.all((per[ew] >= 0.25) & (per[ew] <= 0.8))
    assert np.all(np.isnan(per[truth_of(sim, "QSO")])) and np.all(amp[truth_of(sim, "CONST")] == 0)


def test_damped_random_walk_has_its_variance_and_correlation_time():
    rng = np.random.default_rng(1)
    n_src, n_ep = 400, 150
    t = np.tile(np.arange(n_ep) * 20.0, n_src)
    offsets = np.arange(n_src + 1) * n_ep
    x = lc.drw(t, offsets, np.full(n_src, 100.0), np.full(n_src, 0.2), rng).reshape(n_src, n_ep)
    assert np.std(x) == pytest.approx(0.2, rel=0.05)
    lag1 = np.mean(x[:, 1:] * x[:, :-1]) / np.var(x)
    assert lag1 == pytest.approx(np.exp(-20.0 / 100.0), abs=0.03)


def test_xp_only_for_bright_and_a_documented_fraction_of_faint_sources(sim):
    g = sim["gaia_source"].column("phot_g_mean_mag").to_numpy()
    has = sim["truth"].column("has_xp").to_numpy(zero_copy_only=False)
    assert np.all(has[g < XP_G_LIMIT])
    assert abs(has[g >= XP_G_LIMIT].mean() - FAINT_XP_FRACTION) < 0.02
    sid = sim["truth"].column("source_id").to_numpy()
    assert set(sim["xp_continuous"].column("source_id").to_pylist()) == set(sid[has])


def test_classifier_table_is_dr3_like(sim):
    vari = sim["vari_classifier_result"]
    truth = sim["truth"]
    const = set(truth.column("source_id").to_numpy()[truth_of(sim, "CONST")])
    sids = vari.column("source_id").to_numpy()
    assert not const & set(sids) and len(sids) == truth.num_rows - len(const)
    assert set(vari.column("best_class_name").to_pylist()) <= DR3_CLASSES
    assert set(vari.column("classifier_name").to_pylist()) == {"nTransits:5+"}
    score = vari.column("best_class_score").to_numpy()
    assert np.all((score > 0) & (score <= 1))
    name = dict(zip(truth.column("source_id").to_pylist(), truth.column("class").to_pylist()))
    coarse = {"RRAB": "RR", "RRC": "RR", "DCEP": "CEP", "T2CEP": "CEP", "EW": "ECL", "EA": "ECL", "MIRA": "LPV"}
    pairs = [(coarse[name[s]], c) for s, c in zip(sids, vari.column("best_class_name").to_pylist()) if name[s] in coarse]
    right = np.mean([a == b for a, b in pairs])
    assert 0.85 < right < 0.99  # some, but not many, misclassifications


def test_qso_parallaxes_are_consistent_with_zero(sim):
    src = sim["gaia_source"]
    plx = src.column("parallax").to_numpy()
    err = src.column("parallax_error").to_numpy()
    z = (plx / err)[truth_of(sim, "QSO")]
    assert abs(np.mean(z)) < 0.15 and 0.85 < np.std(z) < 1.15
    assert np.mean((plx / err)[truth_of(sim, "EW")]) > 2


def test_files_are_readable_by_pyarrow_and_astropy(tmp_path):
    summary = simulate_survey(150, 2, tmp_path, epoch_format="ecsv.gz")
    archive = tmp_path / "archive"
    assert (tmp_path / "truth.parquet").exists() and not (archive / "truth.parquet").exists()
    ecsv = Table.read(archive / "EpochPhotometry_sim.csv.gz", format="ascii.ecsv")
    truth = pq.read_table(tmp_path / "truth.parquet")
    assert len(ecsv) == 150 and list(ecsv["source_id"]) == truth.column("source_id").to_pylist()
    assert [len(x) for x in ecsv["g_transit_time"]] == truth.column("n_g_transits").to_pylist()
    assert len(Table.read(archive / "gaia_source.csv", format="ascii.csv")) == 150
    vari = Table.read(archive / "vari_classifier_result.csv", format="ascii.csv")
    assert len(vari) == sum(summary["labels"].values())
    assert sum(summary["classes"].values()) == 150
    summary = simulate_survey(150, 2, tmp_path / "pq")
    assert summary["files"]["epoch_photometry"] == [str(tmp_path / "pq" / "archive" / "EpochPhotometry_sim.parquet")]
    ep = pq.read_table(summary["files"]["epoch_photometry"][0])
    assert ep.schema.field("g_transit_time").type.value_type.bit_width == 64
    assert not list(archive.glob(".*tmp*"))


def test_bad_arguments_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        simulate_tables(0, 1)
    with pytest.raises(InputError):
        simulate_survey(10, 1, tmp_path, epoch_format="fits")
