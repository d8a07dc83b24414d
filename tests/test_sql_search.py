"""The search space laid out for SQL (latentcat/catalog/space_search.py): the packed rows of
space_search, and the IVF lists behind similar_to_approx, against the exact macros."""

import shutil

import duckdb
import numpy as np
import pytest

from catalog_fixtures import NO_XP_ID, QUERY_ID
from latentcat.analysis.space import PART_DIM, PARTS, present_sets, vectors_of
from latentcat.catalog import space_search
from latentcat.catalog.store import DB_NAME
from latentcat.query import open as open_catalog


def _rows(con, sql, params=None):
    return con.execute(sql, params).fetchall()


def test_space_search_holds_every_source_of_each_part_set_packed(query_catalog):
    con = duckdb.connect(str(query_catalog / DB_NAME), read_only=True)
    try:
        table = con.sql("SELECT source_id, s_xp, s_dmdt, s_fold, s_colour FROM space ORDER BY source_id").to_arrow_table()
        ids, vectors = table.column("source_id").to_numpy(), vectors_of(table)
        sets = present_sets(vectors)
        assert ("dmdt", "fold", "colour") in sets and ("xp", "dmdt", "fold", "colour") in sets
        stored = {r[0] for r in _rows(con, "SELECT DISTINCT part_set FROM space_search")}
        assert stored == {space_search.part_set_bits(s) for s in sets}
        for parts in sets:
            has = np.all([np.isfinite(vectors[p][:, 0]) for p in parts], axis=0)
            got = con.execute("SELECT source_id, v FROM space_search WHERE part_set = ? ORDER BY source_id",
                              [space_search.part_set_bits(parts)]).fetchnumpy()
            np.testing.assert_array_equal(got["source_id"], ids[has])
            v = np.stack(got["v"]).astype(np.float32)
            width = sum(PART_DIM[p] for p in parts)
            np.testing.assert_array_equal(v[:, :width], np.hstack([vectors[p][has] for p in parts]))
            assert not v[:, width:].any()  # zeros after the set's parts
        # the table is laid out by part set and list, for the scans
        order = _rows(con, "SELECT part_set, list_id FROM space_search")
        assert order == sorted(order)
    finally:
        con.close()


@pytest.fixture(scope="module")
def listed(query_catalog, tmp_path_factory):
    """A copy of the query catalogue whose part sets are cut into lists of about 20 sources."""
    path = tmp_path_factory.mktemp("listed") / "catalog"
    shutil.copytree(query_catalog, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(space_search, "LIST_SIZE", 20)
        con = duckdb.connect(str(path / DB_NAME))
        try:
            info = space_search.write_space_search(con, seed=5)
        finally:
            con.close()
    return path, info


def test_indexed_sql_search_finds_the_exact_neighbours_it_promises(listed):
    path, info = listed
    full = info["xp+dmdt+fold+colour"]
    assert full["nlist"] > 5 and 1 <= full["nprobe"] < full["nlist"] and full["recall_at_10"] >= 0.95
    con = duckdb.connect(str(path / DB_NAME), read_only=True)
    try:
        stored = dict(_rows(con, "SELECT part_set, any_value(nprobe) FROM space_lists GROUP BY part_set"))
        assert stored[space_search.part_set_bits(tuple(PARTS))] == full["nprobe"]
        ids = [r[0] for r in _rows(con, "SELECT source_id FROM space WHERE parts = 'xp+dmdt+fold+colour' ORDER BY source_id")]
        hits = total = 0
        for sid in ids:
            exact = _rows(con, "SELECT source_id, distance FROM similar_to(?, 10)", [sid])
            approx = _rows(con, "SELECT source_id, distance FROM similar_to_approx(?, 10, NULL)", [sid])
            assert len(approx) == 10
            assert all(a[1] >= e[1] - 1e-6 for a, e in zip(approx, exact))  # never nearer than the truth
            hits += len({a for a, _ in approx} & {e for e, _ in exact})
            total += len(exact)
        assert hits / total >= 0.95  # what the stored nprobe was chosen for
        for sid in (QUERY_ID, NO_XP_ID):  # probing every list is the exact search
            every = _rows(con, "SELECT source_id, distance, parts FROM similar_to_approx(?, 10, 100000)", [sid])
            assert every == _rows(con, "SELECT source_id, distance, parts FROM similar_to(?, 10)", [sid])
        # the batch form answers each query as the single one does
        many = _rows(con, "SELECT query_id, rank, source_id FROM similar_to_many_approx(?, 5, NULL) ORDER BY query_id, rank",
                     [ids[:20] + [NO_XP_ID]])
        for sid in ids[:20] + [NO_XP_ID]:
            one = [r[0] for r in _rows(con, "SELECT source_id FROM similar_to_approx(?, 5, NULL)", [sid])]
            assert [r[2] for r in many if r[0] == sid] == one
    finally:
        con.close()
    with open_catalog(path) as cat:  # read through latentcat, whose reader statements allow macros
        rows = cat.sql(f"SELECT source_id FROM similar_to_approx({QUERY_ID}, 5, 2)").column("source_id").to_pylist()
    assert len(rows) == 5


def test_exact_batch_skips_lists_yet_answers_as_the_single_exact_search(listed):
    """similar_to_many bounds each query's k-th distance from its nearest lists, then compares only
    the lists whose radius lets them hold a nearer source: its answer is still similar_to's."""
    path, _ = listed
    con = duckdb.connect(str(path / DB_NAME), read_only=True)
    try:
        radius = _rows(con, "SELECT l.part_set, l.list_id, l.radius, max(array_distance(e.v, l.centroid)) FROM space_lists l "
                            "JOIN space_search e USING (part_set, list_id) GROUP BY ALL")
        assert radius and all(r >= m for _, _, r, m in radius)  # every source within its list's radius
        ids = [r[0] for r in _rows(con, "SELECT source_id FROM space WHERE parts <> '' ORDER BY hash(source_id) LIMIT 60")]
        many = _rows(con, "SELECT query_id, rank, source_id, distance, parts FROM similar_to_many(?, 7) ORDER BY query_id, rank",
                     [ids + [NO_XP_ID]])
        for sid in ids + [NO_XP_ID]:
            one = _rows(con, "SELECT source_id, distance, parts FROM similar_to(?, 7)", [sid])
            mine = [r for r in many if r[0] == sid]
            assert [(r[2], r[4]) for r in mine] == [(r[0], r[2]) for r in one]
            np.testing.assert_allclose([r[3] for r in mine], [r[1] for r in one], rtol=1e-6)
    finally:
        con.close()


def test_the_duckdb_shell_runs_the_indexed_search_as_duckdb_does(listed):
    """The 1.x shell gives the rows of the Python DuckDB for the exact and the indexed macros."""
    from test_duckdb_shell import _shell_rows

    path, _ = listed
    sql = (f"SELECT 'exact', source_id FROM similar_to({NO_XP_ID}, 5) UNION ALL "
           f"SELECT 'approx', source_id FROM similar_to_approx({QUERY_ID}, 5, NULL) UNION ALL "
           f"SELECT 'many', source_id FROM similar_to_many_approx([{QUERY_ID}, {NO_XP_ID}], 3, 2)")
    shell = [(r[0], int(r[1])) for r in _shell_rows(path / DB_NAME, sql)]
    con = duckdb.connect(str(path / DB_NAME), read_only=True)
    try:
        assert sorted(shell) == sorted(_rows(con, sql))
    finally:
        con.close()
    assert len(shell) == 5 + 5 + 6
