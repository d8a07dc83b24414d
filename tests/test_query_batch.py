"""Many queries at once (Catalog.similar with a batch, iter_similar, the similar_to_many macro),
metadata taken from the loaded source_meta, and where filters applied inside the search."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from catalog_fixtures import NO_XP_ID, QUERY_ID, write_inputs
from latentcat.catalog import index as lc_index
from latentcat.catalog import store
from latentcat.errors import LatentcatError
from latentcat.query import catalog as qcat
from latentcat.query import open as open_catalog

HEAD = ["query_id", "rank", "source_id", "distance", "blocks"]


@pytest.fixture(scope="module")
def cat(query_catalog):
    with open_catalog(query_catalog) as c:
        yield c


@pytest.fixture(scope="module")
def ivf_cat(tmp_path_factory):
    """A catalogue of 1,500 sources with approximate (IVF) indexes."""
    inputs = write_inputs(tmp_path_factory.mktemp("ivf_inputs"), n=1500, seed=9, with_arrays=False)
    path = tmp_path_factory.mktemp("ivf") / "cat"
    store.write_catalog(path, build_info={}, exact_max=200, target_recall=0.9, **inputs)
    with open_catalog(path) as c:
        yield c


def _queries(cat, n: int = 60) -> list[int]:
    """Sources of every part set: all parts, no XP, no colour, XP alone, ..."""
    rows = cat.sql("SELECT source_id, parts FROM space WHERE parts <> '' ORDER BY source_id").to_pylist()
    by_parts: dict[str, list[int]] = {}
    for r in rows:
        by_parts.setdefault(r["parts"], []).append(r["source_id"])
    picked = [QUERY_ID, NO_XP_ID] + [ids[0] for ids in by_parts.values()]
    picked += [r["source_id"] for r in rows[:: max(1, len(rows) // n)]]
    return list(dict.fromkeys(picked))


def _space(cat) -> tuple[np.ndarray, np.ndarray]:
    """Every source's stored search-space vector (NaN where a part is missing), read with DuckDB."""
    rows = cat.sql("SELECT source_id, s_xp, s_dmdt, s_fold, s_colour FROM space ORDER BY source_id").to_pylist()
    dims = {"s_xp": 5, "s_dmdt": 5, "s_fold": 5, "s_colour": 1}
    x = np.array([[v for c, d in dims.items() for v in (r[c] if r[c] is not None else [np.nan] * d)]
                  for r in rows], np.float64)
    return np.array([r["source_id"] for r in rows], np.int64), x


def _exact(ids, x, query_id, k, allowed=None):
    """Exact neighbours of a source on the parts it has, among the sources that have them."""
    q = x[np.searchsorted(ids, query_id)]
    use = np.isfinite(q)
    ok = np.isfinite(x[:, use]).all(axis=1) & (ids != query_id)
    if allowed is not None:
        ok &= np.isin(ids, allowed)
    d = np.sqrt(((np.nan_to_num(x[:, use]) - q[use]) ** 2).sum(axis=1))
    d[~ok] = np.inf
    order = np.argsort(d, kind="stable")[: min(k, ok.sum())]
    return ids[order], d[order]


@pytest.mark.parametrize("modality", ["space", "all"])
@pytest.mark.parametrize("where", [None, "phot_g_mean_mag < 17.5"])
def test_batch_equals_single_calls(cat, modality, where):
    ids = _queries(cat)
    batch = cat.similar(ids, k=7, modality=modality, where=where)
    assert batch.column_names[:5] == HEAD
    assert batch.column("query_id").to_pylist() == sorted(batch.column("query_id").to_pylist(), key=ids.index)
    blocks = set()
    for sid in ids:
        one = cat.similar(sid, k=7, modality=modality, where=where)
        mine = batch.filter(pa.compute.equal(batch.column("query_id"), sid))
        assert mine.column("source_id").to_pylist() == one.column("source_id").to_pylist(), sid
        np.testing.assert_allclose(mine.column("distance").to_numpy(), one.column("distance").to_numpy(),
                                   rtol=1e-5, atol=1e-6)
        assert mine.drop_columns(["query_id", "distance"]).equals(one.drop_columns(["distance"]))
        blocks |= set(one.column("blocks").to_pylist())
    # the batch held sources with different part sets (one without XP, one without colour, ...)
    assert len(blocks) >= 3
    assert ("space:dmdt+fold+colour" if modality == "space" else "dmdt+fold") in blocks


def test_batch_of_vectors_and_of_arrow_ids(cat):
    ids = _queries(cat, 10)
    vectors = cat.sql("SELECT list_concat(s_xp, s_dmdt, s_fold, s_colour) AS v FROM space "
                      "WHERE parts = 'xp+dmdt+fold+colour' ORDER BY source_id LIMIT 5").column("v").to_pylist()
    got = cat.similar(np.array(vectors), k=4, with_meta=False)
    assert got.column_names == HEAD
    assert sorted(set(got.column("query_id").to_pylist())) == [0, 1, 2, 3, 4]  # row numbers
    for i, v in enumerate(vectors):
        one = cat.similar(np.array(v, np.float32), k=4, with_meta=False)
        mine = got.filter(pa.compute.equal(got.column("query_id"), i))
        assert mine.column("source_id").to_pylist() == one.column("source_id").to_pylist()
    # a column of source_ids straight from SQL is a batch too
    arrow = cat.similar(pa.array(ids, pa.int64()), k=3, with_meta=False)
    assert arrow.equals(cat.similar(ids, k=3, with_meta=False))
    # a single id keeps the single answer: no query_id
    assert cat.similar(QUERY_ID, k=3).column_names[:4] == HEAD[1:]


def test_iter_similar_streams_chunks_with_one_schema(cat):
    ids = _queries(cat)
    tables = list(cat.iter_similar(ids, k=5, chunk_size=7))
    assert len(tables) == -(-len(ids) // 7)
    assert len({t.schema for t in tables}) == 1
    assert pa.concat_tables(tables).equals(cat.similar(ids, k=5))
    empty = list(cat.iter_similar([], k=5))
    assert len(empty) == 1 and empty[0].num_rows == 0 and empty[0].schema == tables[0].schema
    assert cat.similar([], k=5).num_rows == 0


def test_a_bad_query_fails_the_batch_before_any_answer(cat):
    ids = _queries(cat, 10)
    with pytest.raises(LatentcatError, match=r"^source_id 42 is not in the catalogue \(and 1 more of the"):
        cat.iter_similar(ids + [42, 43], k=3)  # checked when called, before any chunk
    with pytest.raises(LatentcatError, match=f"source_id {NO_XP_ID} has no xp code"):
        cat.similar([QUERY_ID, NO_XP_ID], modality="xp")
    with pytest.raises(LatentcatError, match="query vector 1 holds NaN"):
        cat.similar(np.array([np.zeros(16), np.full(16, np.nan)]))
    with pytest.raises(LatentcatError, match="has 16 values, got 3"):
        cat.similar(np.zeros((2, 3)))


def test_metadata_comes_from_the_loaded_source_meta(cat):
    ids = _queries(cat, 20)
    got = cat.similar(ids, k=6)
    meta = cat.sql("SELECT * FROM source_meta").to_pylist()
    by_id = {r["source_id"]: r for r in meta}
    for row in got.to_pylist():
        want = by_id[row["source_id"]]
        assert {c: row[c] for c in want if c != "source_id"} == {c: v for c, v in want.items() if c != "source_id"}
    assert got.schema.names[5:] == [c for c in meta[0] if c != "source_id"]


@pytest.mark.parametrize("which", ["cat", "ivf_cat"])
def test_a_filter_gives_k_rows_whenever_k_sources_pass(request, which):
    c = request.getfixturevalue(which)
    ids, x = _space(c)
    g = c.sql("SELECT source_id, phot_g_mean_mag AS g FROM source_meta ORDER BY source_id").column("g").to_numpy(
        zero_copy_only=False)
    queries = _queries(c, 30)
    for cut in (13.0, 14.5, 17.0, 30.0):  # from a few passing sources to all of them
        where = f"phot_g_mean_mag < {cut}"
        allowed = ids[g < cut]
        got = c.similar(queries, k=10, where=where, with_meta=False)
        hits = total = 0
        for sid in queries:
            mine = got.filter(pa.compute.equal(got.column("query_id"), sid)).column("source_id").to_numpy()
            want, _ = _exact(ids, x, sid, 10, allowed)
            assert len(mine) == len(want)  # k rows whenever k pass, all of them otherwise
            assert np.isin(mine, allowed).all()
            if which == "cat":  # exact indexes: exactly the brute-force answer
                assert mine.tolist() == want.tolist()
            hits, total = hits + len(np.intersect1d(mine, want)), total + len(want)
        assert hits >= 0.85 * total  # IVF (built for recall@10 0.9): about the unfiltered recall


def test_large_allowed_sets_are_post_filtered_to_the_same_answer(cat, monkeypatch):
    ids = _queries(cat, 20)
    where = "phot_g_mean_mag < 16.5"
    with_selector = cat.similar(ids, k=8, where=where, with_meta=False)
    monkeypatch.setattr(lc_index, "SELECTOR_MAX", 0)  # every set now too large for a selector
    cat._filters.clear()
    assert cat._filter(where).selector() is None
    assert cat.similar(ids, k=8, where=where, with_meta=False).equals(with_selector)
    cat._filters.clear()


def test_a_filter_is_evaluated_once_and_the_cache_is_bounded(cat, monkeypatch):
    cat._filters.clear()
    first = cat._filter("phot_g_mean_mag < 16")
    assert cat._filter("phot_g_mean_mag < 16") is first  # no second evaluation
    cat.similar(QUERY_ID, where="phot_g_mean_mag < 16")
    assert list(cat._filters) == ["phot_g_mean_mag < 16"]
    monkeypatch.setattr(qcat, "FILTER_CACHE", 2)
    for cut in (14, 15, 17):
        cat.similar(QUERY_ID, where=f"phot_g_mean_mag < {cut}")
    assert list(cat._filters) == ["phot_g_mean_mag < 15", "phot_g_mean_mag < 17"]  # least recently used left
    monkeypatch.setattr(qcat, "FILTER_CACHE_IDS", 1)
    cat.similar(QUERY_ID, where="phot_g_mean_mag < 18")
    assert list(cat._filters) == ["phot_g_mean_mag < 18"]  # the newest stays, whatever its size
    with pytest.raises(LatentcatError, match="bad where filter"):
        cat.similar([QUERY_ID], where="1=1); COPY sources TO 'x.csv'; --")
    cat._filters.clear()


def test_similar_to_many_macro_matches_similar_to(query_catalog):
    con = duckdb.connect(str(query_catalog / "catalog.duckdb"), read_only=True)
    try:
        ids = [r[0] for r in con.execute("SELECT source_id FROM space WHERE parts <> '' ORDER BY source_id "
                                         "LIMIT 12").fetchall()] + [QUERY_ID, NO_XP_ID, 42]
        many = con.execute("SELECT query_id, rank, source_id, distance, parts FROM similar_to_many(?, 5) "
                           "ORDER BY query_id, rank", [ids]).fetchall()
        for sid in ids:
            one = con.execute("SELECT source_id, distance, parts FROM similar_to(?, 5)", [sid]).fetchall()
            mine = [r for r in many if r[0] == sid]
            assert [(r[2], r[4]) for r in mine] == [(r[0], r[2]) for r in one]
            np.testing.assert_allclose([r[3] for r in mine], [r[1] for r in one], rtol=1e-6)
            assert [r[1] for r in mine] == list(range(1, len(one) + 1))
        assert not [r for r in many if r[0] == 42]
        # a table of ids goes in as a list, and the result joins to sources
        joined = con.execute(
            "SELECT n.query_id, n.rank, n.source_id, s.phot_g_mean_mag "
            "FROM similar_to_many((SELECT list(source_id) FROM labels WHERE best_class_name = 'RRAB'), 3) AS n "
            "JOIN sources AS s USING (source_id) ORDER BY n.query_id, n.rank").fetchall()
        n_rr = con.execute("SELECT count(*) FROM labels JOIN space USING (source_id) "
                           "WHERE best_class_name = 'RRAB' AND parts <> ''").fetchone()[0]
        assert len(joined) == 3 * n_rr
    finally:
        con.close()
    with open_catalog(query_catalog) as c:
        api = c.similar([QUERY_ID, NO_XP_ID], k=5, with_meta=False)
    # the FAISS path gives the same neighbours (the index is exact here)
    assert [(r[0], r[2]) for r in many if r[0] in (QUERY_ID, NO_XP_ID)] == \
        list(zip(api.column("query_id").to_pylist(), api.column("source_id").to_pylist()))


def test_similar_to_many_in_the_duckdb_shell(query_catalog):
    """The 1.x shell (DuckDB 1.5) runs the macro over many ids."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "duckdb"
    shell = str(beside) if beside.is_file() else shutil.which("duckdb")
    if shell is None:
        pytest.fail("the `duckdb` shell is not installed: `python3 -m pip install -e .` brings it (duckdb-cli)")
    sql = ("SELECT n.query_id, n.rank, n.source_id FROM similar_to_many((SELECT list(source_id) FROM labels), 3) AS n "
           "JOIN sources AS s USING (source_id) ORDER BY n.query_id, n.rank")
    run = subprocess.run([shell, "-readonly", "-csv", "-noheader", str(query_catalog / "catalog.duckdb"), "-c", sql],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    rows = [tuple(map(int, line.split(","))) for line in run.stdout.splitlines() if line]
    con = duckdb.connect(str(query_catalog / "catalog.duckdb"), read_only=True)
    try:
        assert rows == con.execute(sql).fetchall()
    finally:
        con.close()
    assert len(rows) > 3 * 200
