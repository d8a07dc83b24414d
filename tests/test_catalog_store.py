"""catalog.duckdb and the FAISS indexes as written by latentcat.catalog.store."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalog_fixtures import make_tables, write_inputs
from latentcat.blocks import block_set_name, BLOCK_SETS
from latentcat.catalog import index as lc_index
from latentcat.catalog import store
from latentcat.errors import InputError, LatentcatError

N = 600


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"), n=N, seed=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory, inputs):
    cat_dir = tmp_path_factory.mktemp("cat") / "cat"
    info = store.write_catalog(cat_dir, build_info={"seed": 1, "config": {"k": "v"}}, **inputs)
    return cat_dir, info


def test_schema_ddl_loads_with_the_documented_types():
    con = duckdb.connect()
    for script in ("schema", "space_search", "macros"):  # as write_catalog runs them
        con.execute(store.sql_script(script))
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"sources", "labels", "features", "embeddings", "space", "space_rule", "space_search",
                      "space_lists", "predictions", "outlier_scores", "map", "build_info"}
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                             "WHERE table_name = 'space_search'").fetchall())
    assert types["v"] == "FLOAT[16]" and types["part_set"] == "UTINYINT"
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                             "WHERE table_name = 'embeddings'").fetchall())
    assert types["z"] == "FLOAT[15]"
    assert types["z_xp"] == types["z_dmdt"] == types["z_fold"] == "FLOAT[5]"
    feature_cols = {r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'features'").fetchall()}
    assert {"period", "period_fap", "g_amplitude", "n_obs", "g_mean"} <= feature_cols
    assert not feature_cols & {"dmdt", "fold_phase", "xp_flux"}  # no arrays in the summary
    # a zero-filled stand-in for a missing block is refused by the table itself
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO embeddings (source_id, z_xp, has_xp, has_dmdt, has_fold) "
                    "VALUES (1, [0,0,0,0,0], false, false, false)")


def test_catalogue_holds_every_input_row(built):
    cat_dir, info = built
    tables = make_tables(N, seed=1)
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    for name in ("sources", "labels", "features", "embeddings"):
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == tables[name].num_rows
        assert info["counts"][name] == tables[name].num_rows
    # the extra gaia_source column of the staging table is kept with its values
    flags = con.execute("SELECT DISTINCT phot_variable_flag FROM sources").fetchall()
    assert flags == [("VARIABLE",)]
    # null feature values stay null
    n_null_period = tables["features"].column("period").null_count
    assert n_null_period > 0
    assert con.execute("SELECT count(*) FROM features WHERE period IS NULL").fetchone()[0] == n_null_period


def test_joint_code_is_the_concatenation_and_null_when_a_block_is_missing(built):
    cat_dir, _ = built
    emb = make_tables(N, seed=1)["embeddings"]
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    rows = con.sql("SELECT source_id, z FROM embeddings ORDER BY source_id").to_arrow_table()
    assert rows.column("source_id").to_pylist() == emb.column("source_id").to_pylist()
    z = rows.column("z").to_pylist()
    for i in range(emb.num_rows):
        blocks = [emb.column(f"z_{b}")[i].as_py() for b in ("xp", "dmdt", "fold")]
        if any(b is None for b in blocks):
            assert z[i] is None
        else:
            np.testing.assert_array_equal(z[i], np.concatenate(blocks).astype(np.float32))
    n_missing = sum(v is None for v in z)
    assert 0 < n_missing < emb.num_rows  # the fixture has both kinds


def test_build_info_and_index_files(built):
    cat_dir, info = built
    assert info["seed"] == 1 and info["config"] == {"k": "v"}
    idx = info["indexes"]
    assert {k for k in idx if not k.startswith("space:")} == {block_set_name(b) for b in BLOCK_SETS}
    emb = make_tables(N, seed=1)["embeddings"]
    has = {b: np.asarray(emb.column(f"has_{b}")) for b in ("xp", "dmdt", "fold")}
    assert idx["xp+dmdt+fold"]["n"] == int(np.sum(has["xp"] & has["dmdt"] & has["fold"]))
    assert idx["dmdt+fold"]["n"] == int(np.sum(has["dmdt"] & has["fold"]))
    assert idx["xp"]["n"] == int(np.sum(has["xp"]))
    # the search space: every part set a source has, and those a query from data needs
    colour = np.isfinite(make_tables(N, seed=1)["sources"].column("bp_rp").to_numpy(zero_copy_only=False))
    assert idx["space:xp+dmdt+fold+colour"]["n"] == int(np.sum(has["xp"] & has["dmdt"] & has["fold"] & colour))
    assert idx["space:dmdt+fold+colour"]["n"] == int(np.sum(has["dmdt"] & has["fold"] & colour))
    assert idx["space:dmdt+fold"]["n"] == int(np.sum(has["dmdt"] & has["fold"]))
    assert idx["space:xp"]["n"] == int(np.sum(has["xp"]))
    for name, entry in idx.items():
        assert entry["type"] == "flat" and entry["recall_at_10"] == 1.0
        index = lc_index.read_index(cat_dir / entry["file"])
        assert index.ntotal == entry["n"] and index.d == entry["dim"]
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    stored = dict(con.execute("SELECT key, value::VARCHAR FROM build_info").fetchall())
    assert set(stored) == {"seed", "config", "counts", "indexes", "embeddings_hats", "catalog_format", "sql_lists"}
    sql_lists = json.loads(stored["sql_lists"])  # the SQL search's part sets: those the space indexes have
    assert set(sql_lists) == {k.removeprefix("space:") for k in info["indexes"] if k.startswith("space:")}
    assert all(v["recall_at_10"] >= 0.95 and 1 <= v["nprobe"] <= v["nlist"] for v in sql_lists.values())


def test_ivf_index_above_the_threshold_measures_its_recall(tmp_path, inputs):
    info = store.write_catalog(tmp_path / "cat", build_info={}, exact_max=100,
                               target_recall=0.95, **inputs)
    entry = info["indexes"]["dmdt+fold"]
    assert entry["type"] == "ivf_flat"
    assert entry["nlist"] == int(4 * np.sqrt(entry["n"]))
    assert entry["recall_at_10"] >= 0.95
    # recompute the recall independently: numpy brute force against the stored index
    emb = make_tables(N, seed=1)["embeddings"]
    keep = np.asarray(emb.column("has_dmdt")) & np.asarray(emb.column("has_fold"))
    ids = np.asarray(emb.column("source_id"))[keep]
    x = np.hstack([np.array(emb.column(c).filter(pa.array(keep)).to_pylist(), np.float32)
                   for c in ("z_dmdt", "z_fold")])
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    truth = ids[np.argsort(d2, axis=1, kind="stable")[:, :10]]
    index = lc_index.read_index(tmp_path / "cat" / entry["file"])
    _, found = index.search(x, 10)
    assert lc_index.recall_at_k(found, truth) >= 0.95


def test_index_is_written_atomically(tmp_path, monkeypatch):
    import faiss

    rng = np.random.default_rng(0)
    x_old, x_new = rng.normal(size=(50, 5)).astype(np.float32), rng.normal(size=(80, 5)).astype(np.float32)
    old, _ = lc_index.build_index(x_old, np.arange(50, dtype=np.int64))
    new, _ = lc_index.build_index(x_new, np.arange(1000, 1080, dtype=np.int64))
    path = tmp_path / "xp.faiss"
    lc_index.write_index(old, path)
    before = path.read_bytes()

    # a write that dies half-way through the file (the disk fills up)
    real_write = faiss.write_index

    def dies_midway(index, name):
        real_write(index, name)
        size = Path(name).stat().st_size
        with open(name, "r+b") as fh:
            fh.truncate(size // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        lc_index.write_index(new, path)
    # the old index is still there, whole: same bytes, and it answers with its own vectors
    assert path.read_bytes() == before
    _, found = lc_index.read_index(path).search(x_old[:5], 1)
    assert found[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["xp.faiss"]  # no temporary left behind

    monkeypatch.setattr(faiss, "write_index", real_write)
    lc_index.write_index(new, path)
    index = lc_index.read_index(path)
    assert index.ntotal == 80
    assert index.search(x_new[:3], 1)[1][:, 0].tolist() == [1000, 1001, 1002]
    assert [p.name for p in tmp_path.iterdir()] == ["xp.faiss"]


def _rewrite(path, column, values):
    table = pq.read_table(path)
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, table.schema.field(i), values), path)


@pytest.fixture()
def fresh_inputs(tmp_path):
    return write_inputs(tmp_path / "in", n=60, seed=2)


def test_repeated_source_id_names_file_and_source(tmp_path, fresh_inputs):
    shard0, shard1 = sorted(fresh_inputs["emb_dir"].glob("embeddings-*.parquet"))
    ids = pq.read_table(shard1).column("source_id").to_pylist()
    first0 = pq.read_table(shard0).column("source_id")[0].as_py()
    _rewrite(shard1, "source_id", pa.array([first0] + ids[1:], pa.int64()))
    with pytest.raises(InputError, match=rf"embeddings-0000\d\.parquet: row 0, source_id {first0}: "
                                         r"source_id appears more than once"):
        store.write_catalog(tmp_path / "cat", build_info={}, **fresh_inputs)
    assert not (tmp_path / "cat" / "catalog.duckdb").exists()


def test_flag_disagreeing_with_block_is_refused(tmp_path, fresh_inputs):
    shard = sorted(fresh_inputs["emb_dir"].glob("embeddings-*.parquet"))[1]
    table = pq.read_table(shard)
    has_xp = table.column("has_xp").to_pylist()
    row = has_xp.index(False)
    has_xp[row] = True
    _rewrite(shard, "has_xp", pa.array(has_xp))
    sid = table.column("source_id")[row].as_py()
    with pytest.raises(InputError, match=rf"embeddings-00001\.parquet: row {row}, source_id {sid}: "
                                         r"has_xp disagrees with z_xp"):
        store.write_catalog(tmp_path / "cat", build_info={}, **fresh_inputs)


def test_short_or_nan_latent_block_is_refused(tmp_path, fresh_inputs):
    shard = sorted(fresh_inputs["emb_dir"].glob("embeddings-*.parquet"))[0]
    table = pq.read_table(shard)
    z = table.column("z_dmdt").to_pylist()
    row = next(i for i, v in enumerate(z) if v is not None)
    z[row] = z[row][:4]
    _rewrite(shard, "z_dmdt", pa.array(z, pa.list_(pa.float32())))
    with pytest.raises(InputError, match=rf"row {row}, .*z_dmdt is not 5 finite numbers"):
        store.write_catalog(tmp_path / "cat", build_info={}, **fresh_inputs)
    z[row] = [1.0, float("nan"), 0.0, 0.0, 0.0]
    _rewrite(shard, "z_dmdt", pa.array(z, pa.list_(pa.float32())))
    with pytest.raises(InputError, match=rf"row {row}, .*z_dmdt is not 5 finite numbers"):
        store.write_catalog(tmp_path / "cat2", build_info={}, **fresh_inputs)


def test_missing_column_and_unknown_source_are_refused(tmp_path, fresh_inputs):
    shard = sorted(fresh_inputs["features_dir"].glob("features-*.parquet"))[0]
    pq.write_table(pq.read_table(shard).drop_columns(["period_fap"]), shard)
    with pytest.raises(InputError, match=r"features-00000\.parquet: features table lacks column\(s\) period_fap"):
        store.write_catalog(tmp_path / "cat", build_info={}, **fresh_inputs)

    inputs = write_inputs(tmp_path / "in2", n=60, seed=2)
    sources = inputs["stage_dir"] / "sources.parquet"
    table = pq.read_table(sources)
    dropped = table.column("source_id")[5].as_py()
    pq.write_table(table.filter(pc.not_equal(table.column("source_id"), dropped)), sources)
    with pytest.raises(InputError, match=rf"source_id {dropped} has an embedding but no row in .*sources\.parquet"):
        store.write_catalog(tmp_path / "cat2", build_info={}, **inputs)


def test_existing_catalogue_is_not_overwritten(built, inputs):
    cat_dir, _ = built
    with pytest.raises(LatentcatError, match="a catalogue already exists"):
        store.write_catalog(cat_dir, build_info={}, **inputs)


def test_predictions_and_outlier_scores_writers(tmp_path, fresh_inputs):
    cat_dir = tmp_path / "cat"
    store.write_catalog(cat_dir, build_info={}, **fresh_inputs)
    ids = pq.read_table(fresh_inputs["stage_dir"] / "sources.parquet").column("source_id")
    preds = pa.table({"source_id": ids, "class": pa.array(["RRAB"] * len(ids)),
                      "probability": pa.array(np.full(len(ids), 0.5, np.float32))})
    assert store.write_predictions(cat_dir, preds, "logreg-v1") == len(ids)
    assert store.write_predictions(cat_dir, preds.slice(0, 3), "logreg-v1") == 3  # replaces
    scores = pa.table({"source_id": ids.slice(0, 3), "score": pa.array([0.1, 0.9, 0.5], pa.float32())})
    store.write_outlier_scores(cat_dir, scores, "iforest")
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), any_value(model_id) FROM predictions").fetchone() == (3, "logreg-v1")
    ranked = con.execute("SELECT source_id FROM outlier_scores ORDER BY rank").fetchall()
    assert [r[0] for r in ranked] == [ids[1].as_py(), ids[2].as_py(), ids[0].as_py()]


def test_search_space_is_the_stored_rule_applied_to_codes_and_colour(built):
    from latentcat.analysis.space import PARTS, WEIGHTS, SearchSpace, space_parts, vectors_of

    cat_dir, _ = built
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    rule = SearchSpace.from_table(con.sql("SELECT * FROM space_rule").to_arrow_table())
    codes = con.sql("SELECT e.source_id, z_xp, z_dmdt, z_fold, s.bp_rp FROM embeddings e "
                    "LEFT JOIN sources s USING (source_id) ORDER BY source_id").to_arrow_table()
    stored = con.sql("SELECT * FROM space ORDER BY source_id").to_arrow_table()
    assert stored.column("source_id").equals(codes.column("source_id"))
    _, latents = lc_index.codes_to_numpy(codes)
    bp_rp = codes.column("bp_rp").to_numpy(zero_copy_only=False).astype(float)
    want = rule.transform(space_parts(latents, bp_rp))
    got = vectors_of(stored)
    for p in PARTS:
        np.testing.assert_allclose(got[p], want[p], rtol=1e-6, atol=1e-6)
        present = np.isfinite(got[p][:, 0])
        # standardised by the catalogue's own median and spread, times the part's weight
        np.testing.assert_allclose(np.median(got[p][present], axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(1.4826 * np.median(np.abs(got[p][present]), axis=0), WEIGHTS[p], rtol=1e-5)
    assert WEIGHTS["dmdt"] == 0.5 and rule.weight == WEIGHTS
    # a source without a colour has no colour part, and its parts column says so
    no_colour = ~np.isfinite(bp_rp)
    assert no_colour.any() and np.isnan(got["colour"][no_colour]).all()
    assert all("colour" not in p for p in np.asarray(stored.column("parts").to_pylist(), object)[no_colour])
    # the rule's values are exactly what the catalogue stores: its table round-trips
    again = SearchSpace.from_table(rule.to_table())
    for p in PARTS:
        assert np.array_equal(again.center[p], rule.center[p]) and np.array_equal(again.scale[p], rule.scale[p])
