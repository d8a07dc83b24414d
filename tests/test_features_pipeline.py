"""The feature stage end to end: simulate -> ingest -> features, nulls, resume, workers."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentcat.errors import InputError
from latentcat.features import period as period_search
from latentcat.features.extract import FEATURES_SCHEMA, extract_features, shard_name
from latentcat.gaia.ingest import ingest
from latentcat.gaia.simulate import simulate_survey


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """500 simulated sources, ingested, and their features in shards of 150."""
    root = tmp_path_factory.mktemp("survey")
    simulate_survey(n=500, seed=11, out=root)
    ingest([root / "archive"], root / "stage")
    report = extract_features(root / "stage", root / "features", shard_size=150)
    return root, report


def _read(folder: Path) -> pa.Table:
    return pq.read_table(folder).sort_by("source_id")


def test_every_source_has_one_row_in_the_schema(survey):
    root, report = survey
    table = _read(root / "features")
    lc_ids = pq.read_table(root / "stage" / "light_curves.parquet", columns=["source_id"])["source_id"].to_numpy()
    xp_ids = pq.read_table(root / "stage" / "xp.parquet", columns=["source_id"])["source_id"].to_numpy()
    assert table.schema.equals(FEATURES_SCHEMA)
    assert table["source_id"].to_numpy().tolist() == np.union1d(lc_ids, xp_ids).tolist()
    assert report["n_shards"] == 4 and report["shards_written"] == 4
    ok = table.filter(pa.compute.is_null(table["lc_reason"]))
    assert all(len(v) == 200 for v in ok["dmdt"].to_pylist())
    assert (ok["n_obs"].to_numpy() == [len(v) for v in ok["fold_mag"].to_pylist()]).all()
    no_xp = table.filter(pa.compute.equal(table["xp_reason"], "no_xp"))["source_id"].to_numpy()
    assert set(no_xp) == set(lc_ids) - set(xp_ids)


def test_periods_of_simulated_pulsators_and_binaries(survey):
    root, _ = survey
    feats = _read(root / "features").to_pandas().set_index("source_id")
    truth = pq.read_table(root / "truth.parquet").to_pandas().set_index("source_id")
    both = feats.join(truth[["class", "period", "mean_g"]].rename(columns={"period": "true_period"}))
    sel = both[(both["n_obs"] >= 40) & (both["mean_g"] < 18) & both["class"].isin(["RRAB", "RRC", "DCEP", "T2CEP", "EB", "EW", "ELL"])]
    ratio = sel["period"] / sel["true_period"]
    binary = sel["class"].isin(["EB", "EW", "ELL"])
    # a sinusoid fits the two minima of a binary's orbit: the search finds P_orb / 2
    good = (np.abs(ratio - 1) < 0.01) | (binary & (np.abs(2 * ratio - 1) < 0.01))
    assert len(sel) >= 15
    assert good.mean() >= 0.9


def test_too_few_epochs_and_missing_xp_give_nulls_and_reasons(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    rng = np.random.default_rng(5)
    t30 = np.sort(rng.uniform(1700, 2700, 30))
    lc = pa.table(
        {
            "source_id": pa.array([11, 22], pa.int64()),
            "n_g": pa.array([5, 30], pa.int32()),
            "g_time": pa.array([[1700.0, 1750.0, 1800.0, 1900.0, 2000.0], t30.tolist()], pa.list_(pa.float64())),
            "g_mag": pa.array([[15.0, 15.1, 15.0, 15.2, 15.1], (15 + 0.1 * np.sin(t30)).tolist()], pa.list_(pa.float32())),
            "g_mag_err": pa.array([[0.01] * 5, [0.01] * 30], pa.list_(pa.float32())),
        }
    )
    pq.write_table(lc, stage / "light_curves.parquet")
    flux = pa.array([np.linspace(1, 50, 55).tolist()], pa.list_(pa.float32()))
    none = pa.array([None], pa.list_(pa.float32()))
    pq.write_table(
        pa.table({"source_id": pa.array([33], pa.int64()), "bp_flux": none, "bp_flux_error": none, "rp_flux": flux, "rp_flux_error": flux}),
        stage / "xp.parquet",
    )
    report = extract_features(stage, tmp_path / "out")
    rows = {r["source_id"]: r for r in _read(tmp_path / "out").to_pylist()}
    assert sorted(rows) == [11, 22, 33]
    five, fine, xp_only = rows[11], rows[22], rows[33]
    assert five["lc_reason"] == "too_few_epochs" and five["n_obs"] == 5
    assert five["dmdt"] is None and five["period"] is None and five["fold_mag"] is None and five["g_mean"] is None
    assert fine["lc_reason"] is None and fine["period"] > 0 and fine["xp_reason"] == "no_xp" and fine["xp_flux"] is None
    assert xp_only["lc_reason"] == "no_light_curve" and xp_only["n_obs"] == 0
    assert xp_only["xp_reason"] == "missing_bp" and xp_only["xp_flux"] is None and xp_only["xp_scale"] is None
    assert report["lc_reasons"] == {"too_few_epochs": 1, "no_light_curve": 1}


def test_a_killed_run_resumes_with_the_missing_shard_only(survey, tmp_path):
    root, _ = survey
    out = tmp_path / "features"
    extract_features(root / "stage", out, shard_size=150)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("features-*.parquet")}
    last = out / shard_name(2)
    expected = pq.read_table(last)
    last.unlink()
    (out / f".{shard_name(2)}.tmp-123-0a1b2c3d").write_bytes(b"half a shard")  # what a kill leaves behind
    report = extract_features(root / "stage", out, shard_size=150)
    assert report["shards_written"] == 1 and report["shards_skipped"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("features-*.parquet")}
    assert {k: after[k] for k in before if k != shard_name(2)} == {k: v for k, v in before.items() if k != shard_name(2)}
    assert pq.read_table(last).equals(expected)
    assert not list(out.glob("*.tmp*"))
    with pytest.raises(InputError, match="other inputs or settings"):
        extract_features(root / "stage", out, shard_size=50)


def test_two_workers_write_identical_shards(survey, tmp_path):
    root, _ = survey
    extract_features(root / "stage", tmp_path / "two", shard_size=150, n_workers=2)
    for k in range(3):
        assert pq.read_table(tmp_path / "two" / shard_name(k)).equals(pq.read_table(root / "features" / shard_name(k)))


def test_bad_staged_light_curve_names_file_and_source(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    lc = pa.table(
        {
            "source_id": pa.array([7], pa.int64()),
            "g_time": pa.array([[1700.0, 1690.0, 1800.0]], pa.list_(pa.float64())),
            "g_mag": pa.array([[15.0, 15.1, 15.0]], pa.list_(pa.float32())),
            "g_mag_err": pa.array([[0.01, 0.01, 0.01]], pa.list_(pa.float32())),
        }
    )
    pq.write_table(lc, stage / "light_curves.parquet")
    with pytest.raises(InputError, match=r"light_curves\.parquet: g_time is not sorted ascending for source_id 7"):
        extract_features(stage, tmp_path / "out")


def test_bp_epochs_of_unequal_lengths_name_file_and_source(tmp_path):
    """A BP time without its magnitude would pair other transits' values: one clear error, no shard."""
    stage = tmp_path / "stage"
    stage.mkdir()
    t = np.sort(np.random.default_rng(3).uniform(1700, 2700, 30))
    curve = lambda offset, drop=0: pa.array([(t + offset)[drop:].tolist()], pa.list_(pa.float64()))  # noqa: E731
    values = lambda m, drop=0: pa.array([[m] * (30 - drop)], pa.list_(pa.float32()))  # noqa: E731
    lc = pa.table({
        "source_id": pa.array([9], pa.int64()),
        "g_time": curve(0.0), "g_mag": values(15.0), "g_mag_err": values(0.01),
        "bp_time": curve(27 / 86400), "bp_mag": values(15.4, drop=1), "bp_mag_err": values(0.02),
        "rp_time": curve(35 / 86400), "rp_mag": values(14.6), "rp_mag_err": values(0.02),
    })
    pq.write_table(lc, stage / "light_curves.parquet")
    with pytest.raises(InputError, match=r"light_curves\.parquet: bp_time, bp_mag and bp_mag_err have different lengths "
                                         r"for source_id 9"):
        extract_features(stage, tmp_path / "out")
    assert not list((tmp_path / "out").glob("features-*.parquet"))


def _simulated_ea_curves(n: int, seed: int):
    """Cleaned G curves (as the feature stage sees them) of the simulated EA with >= 40 epochs and G < 18."""
    from latentcat.features.clean import clean_mask
    from latentcat.features.ragged import compact, pad_lists
    from latentcat.gaia.simulate import simulate_tables

    tables = simulate_tables(n, seed)
    truth = tables["truth"]
    rows = np.flatnonzero((truth["class"].to_numpy(zero_copy_only=False) == "EA") & (truth["mean_g"].to_numpy() < 18))
    ep, truth = tables["epoch_photometry"].take(rows), truth.take(rows).to_pandas()
    t, m = pad_lists(ep["g_transit_time"], np.float64), pad_lists(ep["g_transit_mag"], np.float64)
    flux, flux_err = pad_lists(ep["g_transit_flux"], np.float64), pad_lists(ep["g_transit_flux_error"], np.float64)
    e = 1.0857 * flux_err / flux  # as ingest derives it (docs/schemas.md)
    flagged = (pad_lists(ep["rejected_by_photometry"], np.float64) == 1) | (pad_lists(ep["variability_flag_g_reject"], np.float64) == 1)
    _, (t, m, e) = compact(np.isfinite(m) & np.isfinite(e) & ~flagged, t, m, e)
    n_obs, (t, m, e) = compact(clean_mask(m, e), t, m, e)
    keep = n_obs >= 40
    return t[keep], m[keep], e[keep], truth[keep].reset_index(drop=True)


def _eclipses_seen(t: np.ndarray, e: np.ndarray, truth) -> np.ndarray:
    """Distinct eclipses (primary or secondary) holding an epoch at least 5 sigma deep, from the true orbit."""
    col = lambda name: truth[name].to_numpy()[:, None]  # noqa: E731
    cycle = (t - col("t0")) / col("period")
    x1 = (cycle + 0.5) % 1.0 - 0.5
    x2 = (cycle - col("secondary_phase") + 0.5) % 1.0 - 0.5
    in1, in2 = np.abs(x1) < col("eclipse_width"), np.abs(x2) < col("eclipse_width")
    f1, f2 = 1 - 10 ** (-0.4 * col("depth_primary")), 1 - 10 ** (-0.4 * col("depth_secondary"))
    shape = lambda x: np.sqrt(np.clip(1 - (x / col("eclipse_width")) ** 2, 0, None))  # noqa: E731
    depth = -2.5 * np.log10(1 - f1 * shape(x1) - f2 * shape(x2))
    deep = (depth > 5 * e) & (in1 | in2)
    label = np.where(in1, np.round(cycle), np.round(cycle - col("secondary_phase")) + 0.5)
    return np.array([len(np.unique(label[i][deep[i]])) for i in range(len(t))])


def test_detached_eclipsing_binaries_recover_their_period():
    t, m, e, truth = _simulated_ea_curves(30_000, seed=22)
    res = period_search.find_periods(t, m, e)
    # 'period' is the time between eclipses: P_orb / 2 with both eclipses seen, P_orb with one
    ratio = res["period"] / truth["period"].to_numpy()
    good = (np.abs(ratio - 1) < 0.01) | (np.abs(2 * ratio - 1) < 0.01)
    seen = _eclipses_seen(t, e, truth)
    well_sampled = seen >= 7
    assert len(t) >= 150 and well_sampled.sum() >= 80
    # a curve with few eclipses on it does not fix the period; seven distinct eclipses nearly always do
    assert good[well_sampled].mean() >= 0.9
    # over all of them: the Lomb-Scargle peak alone gets about 40 %
    assert good.mean() >= 0.55
