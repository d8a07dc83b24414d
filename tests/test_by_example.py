"""Query by example: raw light curves and XP spectra through the catalogue's own pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import latentcat
from latentcat.catalog import index as lc_index
from latentcat.errors import InputError, LatentcatError
from latentcat.gaia.ingest import ingest
from latentcat.query.by_example import read_query_file, similar_to_data, similar_to_file, to_gaia_time

DATA = Path(__file__).parent / "data" / "gaia_dr3"
DATALINK_EPOCHS = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
DATALINK_XP = DATA / "XP_CONTINUOUS_RAW.csv"

@pytest.fixture(scope="module")
def raw(tiny_build, tmp_path_factory):
    """The raw G light curves and sampled XP spectra of the catalogue's own inputs, by source_id."""
    stage = tmp_path_factory.mktemp("raw_stage")
    ingest([tiny_build.archive], stage)
    lcs = {r["source_id"]: r for r in pq.read_table(stage / "light_curves.parquet").to_pylist()}
    xps = {r["source_id"]: r for r in pq.read_table(stage / "xp.parquet").to_pylist()}
    return lcs, xps


@pytest.fixture(scope="module")
def cat(tiny_build):
    with latentcat.open(tiny_build.catalogue) as c:
        yield c


def _curve(row):
    return np.asarray(row["g_time"]), np.asarray(row["g_mag"]), np.asarray(row["g_mag_err"])


def _spectrum(row):
    return tuple(row[c] for c in ("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"))


def _with_all_blocks(cat, n=1):
    table = cat.sql("SELECT source_id FROM embeddings WHERE z IS NOT NULL ORDER BY source_id LIMIT ?", [n])
    return table.column("source_id").to_pylist()


def _remove(cat_dir: Path, out: Path, source_id: int) -> Path:
    """A copy of a catalogue without one source: its rows deleted, every index rebuilt."""
    from latentcat.analysis.space import present_sets, vectors_of

    shutil.copytree(cat_dir, out)
    con = duckdb.connect(str(out / "catalog.duckdb"))
    for table in ("embeddings", "features", "labels", "sources", "space"):
        con.execute(f"DELETE FROM {table} WHERE source_id = ?", [source_id])
    codes = con.sql("SELECT source_id, z_xp, z_dmdt, z_fold FROM embeddings ORDER BY source_id").to_arrow_table()
    space = con.sql("SELECT * FROM space ORDER BY source_id").to_arrow_table()
    con.close()
    shutil.rmtree(out / "index")
    lc_index.build_indexes(codes, out / "index")
    vectors = vectors_of(space)
    lc_index.build_set_indexes(space.column("source_id").to_numpy(), vectors, present_sets(vectors), out / "index",
                               space=True)
    return out


def test_removed_source_is_placed_among_its_old_neighbours(tiny_build, raw, cat, tmp_path):
    lcs, xps = raw
    source_id = _with_all_blocks(cat)[0]
    before = cat.similar(source_id, k=10).column("source_id").to_pylist()
    before_latent = cat.similar(source_id, k=10, modality="all").column("source_id").to_pylist()
    stored = cat.codes(source_id)
    feats = cat.sql("SELECT n_obs, period FROM features WHERE source_id = ?", [source_id]).to_pylist()[0]
    bp_rp = cat.sql("SELECT bp_rp FROM sources WHERE source_id = ?", [source_id]).column("bp_rp")[0].as_py()

    with latentcat.open(_remove(tiny_build.catalogue, tmp_path / "without", source_id)) as smaller:
        left = smaller.sql("SELECT count(*) AS n FROM embeddings WHERE source_id = ?", [source_id])
        assert left.column("n")[0].as_py() == 0
        neighbours, info = similar_to_data(smaller, _curve(lcs[source_id]), _spectrum(xps[source_id]), k=10,
                                           bp_rp=bp_rp)
        latent, _ = similar_to_data(smaller, _curve(lcs[source_id]), _spectrum(xps[source_id]), k=10, modality="all")

    found = neighbours.column("source_id").to_pylist()
    assert source_id not in found
    assert len(set(found) & set(before)) >= 8
    assert info["blocks"] == "space:xp+dmdt+fold+colour" == neighbours.column("blocks")[0].as_py()
    assert len(set(latent.column("source_id").to_pylist()) & set(before_latent)) >= 8
    assert latent.column("blocks")[0].as_py() == "xp+dmdt+fold"
    # the raw data went through the same cleaning, period search and encoders as the build
    assert info["n_obs"] == feats["n_obs"]
    assert info["period"] == pytest.approx(feats["period"], rel=1e-9)
    for block in ("xp", "dmdt", "fold"):
        np.testing.assert_allclose(info["latents"][block], stored[block], atol=1e-4)


def test_same_curve_in_mjd_jd_and_gaia_time_gives_the_same_answer(raw, cat):
    lcs, _ = raw
    source_id = _with_all_blocks(cat)[0]
    t, m, e = _curve(lcs[source_id])
    # MJD = JD - 2400000.5 and Gaia time = BJD - 2455197.5, so MJD = Gaia time + 55197
    np.testing.assert_allclose(to_gaia_time(t + 55197.0, "mjd"), t, atol=1e-8)
    gaia, info_g = similar_to_data(cat, (t, m, e), k=10)
    mjd, info_m = similar_to_data(cat, (t + 55197.0, m, e), k=10, time_format="mjd")
    jd, _ = similar_to_data(cat, (t + 2455197.5, m, e), k=10, time_format="jd")
    assert info_g["blocks"] == "space:dmdt+fold"
    ids = gaia.column("source_id").to_pylist()
    assert mjd.column("source_id").to_pylist() == ids == jd.column("source_id").to_pylist()
    np.testing.assert_allclose(mjd.column("distance").to_numpy(), gaia.column("distance").to_numpy(), atol=1e-4)
    assert info_m["period"] == pytest.approx(info_g["period"], rel=1e-6)
    with pytest.raises(LatentcatError, match="unknown time format 'hjd'"):
        similar_to_data(cat, (t, m, e), time_format="hjd")


def test_plain_csv_in_mjd(raw, cat, tmp_path):
    lcs, _ = raw
    source_id = _with_all_blocks(cat)[0]
    t, m, e = _curve(lcs[source_id])
    path = tmp_path / "obs.csv"
    rows = "\n".join(f"{float(a) + 55197.0!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(t, m, e))
    path.write_text("time,mag,mag_err\n" + rows + "\n")

    from_file, info = similar_to_file(cat, path, k=10, time_format="mjd")
    from_arrays, _ = similar_to_data(cat, (t, m, e), k=10)
    assert from_file.column("source_id").to_pylist() == from_arrays.column("source_id").to_pylist()
    assert info["blocks"] == "space:dmdt+fold" and info["n_obs"] > 10
    assert any(f"{t.size} G points read" in note for note in info["notes"])


def test_plain_csv_with_other_columns_or_bad_values_is_one_clear_error(tmp_path):
    bands = tmp_path / "bands.csv"
    bands.write_text("time,bp_mag,mag_err\n1700.1,15.2,0.01\n")
    with pytest.raises(InputError, match=r"bands.csv: a plain light-curve CSV needs exactly the columns time,mag"):
        read_query_file(bands)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,mag,mag_err\n1700.1,15.2,0.01\n1701.3,oops,0.01\n")
    with pytest.raises(InputError, match=r"bad.csv: column 'mag', row 2"):
        read_query_file(bad)
    empty = tmp_path / "hole.csv"
    empty.write_text("time,mag,mag_err\n1700.1,15.2,0.01\n1701.3,,0.01\n")
    with pytest.raises(InputError, match=r"hole.csv: row 2, column 'mag'"):
        read_query_file(empty)


def test_too_few_points_is_one_clear_error(cat):
    t = np.linspace(1700.0, 2600.0, 5)
    with pytest.raises(LatentcatError, match="5 G points; the catalogue's features need at least 10"):
        similar_to_data(cat, (t, np.full(5, 15.0), np.full(5, 0.01)))
    with pytest.raises(LatentcatError, match="give a light curve, an XP spectrum or both"):
        similar_to_data(cat)


def test_datalink_epoch_photometry_uses_g_and_reports_bp_rp_ignored(cat):
    with pytest.raises(InputError, match="holds 8 sources"):
        read_query_file(DATALINK_EPOCHS)
    with pytest.raises(InputError, match="use time format 'gaia'"):
        read_query_file(DATALINK_EPOCHS, time_format="mjd", source_id=1302439147363430272)

    data = read_query_file(DATALINK_EPOCHS, source_id=1302439147363430272)
    t, m, e = data.light_curve
    assert t.size == 99 and np.all(np.diff(t) >= 0)
    assert 1666 < t.min() and t.max() < 2710  # DR3 epochs on Gaia's time axis
    assert any("BP (99 epochs), RP (99 epochs) ignored" in note for note in data.notes)
    assert data.xp is None

    neighbours, info = similar_to_data(cat, data.light_curve, k=5)
    assert neighbours.num_rows == 5 and info["blocks"] == "space:dmdt+fold"
    assert info["n_obs"] <= 99 and np.isfinite(info["period"])


def test_datalink_xp_continuous_finds_xp_neighbours(cat):
    data = read_query_file(DATALINK_XP, source_id=_first_id(DATALINK_XP))
    assert data.light_curve is None
    assert all(np.asarray(a).shape == (55,) for a in data.xp)
    neighbours, info = similar_to_data(cat, xp=data.xp, k=5, modality="xp")
    assert neighbours.num_rows == 5 and info["blocks"] == "xp"
    assert np.all(np.diff(neighbours.column("distance").to_numpy()) >= 0)
    with pytest.raises(LatentcatError, match="the query has no dmdt code"):
        similar_to_data(cat, xp=data.xp, modality="dmdt")


def _first_id(path: Path) -> int:
    return int(path.read_text().splitlines()[1].split(",")[0])
