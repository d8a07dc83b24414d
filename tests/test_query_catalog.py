"""The read-only Catalog (FAISS) against the SQL macros stored in catalog.duckdb and numpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from catalog_fixtures import NO_XP_ID, QUERY_ID, make_tables, write_inputs
from latentcat.catalog import store
from latentcat.errors import LatentcatError
from latentcat.query import open as open_catalog

N = 800
SEED = 3


@pytest.fixture(scope="module")
def tables():
    return make_tables(N, seed=SEED)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"), n=N, seed=SEED)


@pytest.fixture(scope="module")
def cat_dir(tmp_path_factory, inputs):
    path = tmp_path_factory.mktemp("cat") / "cat"
    store.write_catalog(path, build_info={"seed": SEED}, **inputs)
    return path


@pytest.fixture(scope="module")
def ivf_dir(tmp_path_factory, inputs):
    """The same catalogue with approximate (IVF) indexes."""
    path = tmp_path_factory.mktemp("ivf") / "cat"
    store.write_catalog(path, build_info={}, exact_max=50, target_recall=0.9, **inputs)
    return path


@pytest.fixture(scope="module")
def cat(cat_dir):
    with open_catalog(cat_dir) as c:
        yield c


@pytest.fixture(scope="module")
def bare(cat_dir):
    """A plain DuckDB connection: no latentcat code involved in answering queries."""
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    yield con
    con.close()


def brute_force(tables, query_id, blocks, k, mask=None):
    """Exact neighbours computed with numpy from the input tables."""
    emb = tables["embeddings"]
    ids = np.asarray(emb.column("source_id"))
    cols = [emb.column(f"z_{b}").to_pylist() for b in blocks]
    ok = np.array([all(c[i] is not None for c in cols) for i in range(len(ids))])
    x = np.array([np.concatenate([c[i] for c in cols]) if ok[i] else np.zeros(5 * len(blocks))
                  for i in range(len(ids))], np.float32)
    q = x[np.searchsorted(ids, query_id)]
    if mask is not None:
        ok &= mask
    d = np.sqrt(((x - q) ** 2).sum(1))
    d[~ok | (ids == query_id)] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return ids[order], d[order]


def space_brute_force(tables, query_id, k, mask=None):
    """Exact search-space neighbours from the input tables with numpy alone: every latent value
    and the BP - RP colour (of the sources with a latent block) minus its median over the
    sources that have it, over 1.4826 times its median absolute deviation, times its part's
    weight (1; dm-dt 0.5: docs in latentcat/analysis/space.py), on the query's parts."""
    emb, src = tables["embeddings"], tables["sources"]
    ids = np.asarray(emb.column("source_id"))
    colour = dict(zip(src.column("source_id").to_pylist(), src.column("bp_rp").to_pylist()))
    raw = [np.array([[np.nan] * 5 if v is None else v for v in emb.column(f"z_{b}").to_pylist()], float)
           for b in ("xp", "dmdt", "fold")]
    coded = np.isfinite(np.hstack(raw)).any(axis=1)
    raw.append(np.array([[np.nan if colour.get(i) is None or not c else colour[i]]
                         for i, c in zip(ids.tolist(), coded)], float))
    parts = []
    for x, weight in zip(raw, (1.0, 0.5, 1.0, 1.0)):  # xp, dmdt, fold, colour
        ok = np.isfinite(x).all(axis=1)
        med = np.median(x[ok], axis=0)
        parts.append(weight * (x - med) / (1.4826 * np.median(np.abs(x[ok] - med), axis=0)))
    q = np.searchsorted(ids, query_id)
    use = [p for p in parts if np.isfinite(p[q]).all()]
    x = np.hstack(use)
    ok = np.isfinite(x).all(axis=1) & (ids != query_id) & (True if mask is None else mask)
    d = np.where(ok, np.sqrt(((np.nan_to_num(x) - x[q]) ** 2).sum(1)), np.inf)
    order = np.argsort(d, kind="stable")[:k]
    return ids[order], d[order]


def test_faiss_search_and_sql_macro_agree(cat, bare, tables):
    got = cat.similar(QUERY_ID, k=10)  # the search space, the default
    macro = bare.execute("SELECT source_id, distance FROM similar_to(?, 10)", [QUERY_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    np.testing.assert_allclose(got.column("distance").to_numpy(), [r[1] for r in macro], rtol=1e-5)
    ids, dist = space_brute_force(tables, QUERY_ID, 10)
    assert got.column("source_id").to_pylist() == ids.tolist()
    np.testing.assert_allclose(got.column("distance").to_numpy(), dist, rtol=1e-4)
    assert got.column("rank").to_pylist() == list(range(1, 11))
    assert set(got.column("blocks").to_pylist()) == {"space:xp+dmdt+fold+colour"}
    assert QUERY_ID not in got.column("source_id").to_pylist()
    # the latent codes alone: FAISS, the similar_to_latents macro and numpy agree too
    got = cat.similar(QUERY_ID, k=10, modality="all")
    macro = bare.execute("SELECT source_id, distance FROM similar_to_latents(?, 10)", [QUERY_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    ids, dist = brute_force(tables, QUERY_ID, ("xp", "dmdt", "fold"), 10)
    assert got.column("source_id").to_pylist() == ids.tolist()
    np.testing.assert_allclose(got.column("distance").to_numpy(), dist, rtol=1e-5)
    assert set(got.column("blocks").to_pylist()) == {"xp+dmdt+fold"}


@pytest.mark.parametrize("block", ["xp", "dmdt", "fold"])
def test_the_one_block_macros_give_the_one_block_search(cat, bare, tables, block):
    got = cat.similar(QUERY_ID, k=10, modality=block, with_meta=False)
    macro = bare.execute(f"SELECT source_id, distance FROM similar_to_{block}(?, 10)", [QUERY_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    ids, dist = brute_force(tables, QUERY_ID, (block,), 10)
    assert [r[0] for r in macro] == ids.tolist()
    np.testing.assert_allclose([r[1] for r in macro], dist, rtol=1e-5)
    assert bare.execute(f"SELECT * FROM similar_to_block(?, 10, '{block}')", [QUERY_ID]).fetchall() == macro


@pytest.mark.parametrize("modality", ["xp", "dmdt", "fold"])
def test_single_modality_matches_its_macro(cat, bare, modality):
    got = cat.similar(QUERY_ID, k=7, modality=modality)
    macro = bare.execute(f"SELECT source_id FROM similar_to_{modality}(?, 7)", [QUERY_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    assert set(got.column("blocks").to_pylist()) == {modality}


def test_neighbours_share_the_query_class(cat, tables):
    # the fixture's classes are separated clusters: the nearest sources are of the same class
    got = cat.similar(QUERY_ID, k=5)
    labels = dict(zip(tables["labels"].column("source_id").to_pylist(),
                      tables["labels"].column("best_class_name").to_pylist()))
    named = [c for c in got.column("best_class_name").to_pylist() if c is not None]
    assert named and set(named) == {labels[QUERY_ID]}


def test_metadata_columns_are_joined(cat, tables):
    got = cat.similar(QUERY_ID, k=5)
    src = tables["sources"]
    g = dict(zip(src.column("source_id").to_pylist(), src.column("phot_g_mean_mag").to_pylist()))
    for sid, mag in zip(got.column("source_id").to_pylist(), got.column("phot_g_mean_mag").to_pylist()):
        assert mag == pytest.approx(g[sid])
    assert {"period", "g_amplitude", "best_class_name", "has_xp"} <= set(got.column_names)


def test_missing_xp_query_uses_dmdt_and_fold(cat, bare, tables):
    got = cat.similar(NO_XP_ID, k=10)
    assert set(got.column("blocks").to_pylist()) == {"space:dmdt+fold+colour"}
    assert not all(got.column("has_xp").to_pylist())
    macro = bare.execute("SELECT source_id, parts FROM similar_to(?, 10)", [NO_XP_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    assert {r[1] for r in macro} == {"dmdt+fold+colour"}
    assert got.column("source_id").to_pylist() == space_brute_force(tables, NO_XP_ID, 10)[0].tolist()
    got = cat.similar(NO_XP_ID, k=10, modality="all")
    assert set(got.column("blocks").to_pylist()) == {"dmdt+fold"}
    assert all(got.column("has_dmdt").to_pylist()) and all(got.column("has_fold").to_pylist())
    assert not all(got.column("has_xp").to_pylist())  # sources without XP are candidates too
    macro = bare.execute("SELECT source_id, blocks FROM similar_to_available(?, 10)", [NO_XP_ID]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    assert {r[1] for r in macro} == {"dmdt+fold"}
    ids, _ = brute_force(tables, NO_XP_ID, ("dmdt", "fold"), 10)
    assert got.column("source_id").to_pylist() == ids.tolist()
    # the joint latent macro has nothing to say about it: its 15-D code is NULL
    assert bare.execute("SELECT count(*) FROM similar_to_latents(?, 10)", [NO_XP_ID]).fetchone()[0] == 0
    with pytest.raises(LatentcatError, match=f"source_id {NO_XP_ID} has no xp code"):
        cat.similar(NO_XP_ID, modality="xp")


@pytest.mark.parametrize("which", ["cat_dir", "ivf_dir"])
def test_where_filter_applies_before_the_top_k_cut(request, tables, which):
    with open_catalog(request.getfixturevalue(which)) as c:
        # a selective filter: ~2% of the catalogue, mostly far from the query in latent space
        got = c.similar(QUERY_ID, k=10, where="phot_g_mean_mag > 18.5 AND has_xp")
        g = np.asarray(tables["sources"].column("phot_g_mean_mag"))
        emb = tables["embeddings"]
        mask = g > 18.5
        for b in ("xp", "dmdt", "fold"):
            mask &= np.asarray(emb.column(f"has_{b}"))
        assert 10 <= mask.sum() < 0.05 * N
        assert got.num_rows == 10
        assert all(m > 18.5 for m in got.column("phot_g_mean_mag").to_pylist())
        assert not all(m > 18.5 for m in c.similar(QUERY_ID, k=10).column("phot_g_mean_mag").to_pylist())
        ids, _ = space_brute_force(tables, QUERY_ID, 10, mask=mask)
        # exact search over the allowed sources gives exactly the same set
        assert got.column("source_id").to_pylist() == ids.tolist()


def test_where_filter_with_fewer_matches_than_k(cat):
    got = cat.similar(QUERY_ID, k=10, where="best_class_name = 'NO_SUCH_CLASS'")
    assert got.num_rows == 0
    with pytest.raises(LatentcatError, match="bad where filter"):
        cat.similar(QUERY_ID, where="no_such_column > 1")


def test_search_by_vector(cat, bare, tables):
    z = bare.execute("SELECT z FROM embeddings WHERE source_id = ?", [QUERY_ID]).fetchone()[0]
    got = cat.similar(np.array(z, np.float32), k=3, modality="all")
    assert got.column("source_id")[0].as_py() == QUERY_ID  # a vector query keeps its own source
    assert got.column("distance")[0].as_py() == pytest.approx(0.0, abs=1e-6)
    macro = bare.execute("SELECT source_id FROM similar_to_vector(?, 3)", [z]).fetchall()
    assert got.column("source_id").to_pylist() == [r[0] for r in macro]
    s = bare.execute("SELECT list_concat(s_xp, s_dmdt, s_fold, s_colour) FROM space WHERE source_id = ?",
                     [QUERY_ID]).fetchone()[0]
    got = cat.similar(np.array(s, np.float32), k=3)  # a search-space vector: 16 values
    assert got.column("source_id")[0].as_py() == QUERY_ID
    assert got.column("source_id").to_pylist()[1:] == cat.similar(QUERY_ID, k=2).column("source_id").to_pylist()
    with pytest.raises(LatentcatError, match="has 16 values, got 5"):
        cat.similar(np.zeros(5), k=3)
    with pytest.raises(LatentcatError, match="has 15 values, got 5"):
        cat.similar(np.zeros(5), k=3, modality="all")
    with pytest.raises(LatentcatError, match="NaN"):
        cat.similar(np.full(5, np.nan), modality="fold")


def test_unknown_source_and_bad_arguments(cat):
    with pytest.raises(LatentcatError, match=r"^source_id 42 is not in the catalogue$"):
        cat.similar(42)
    with pytest.raises(LatentcatError, match="unknown modality"):
        cat.similar(QUERY_ID, modality="spectrum")
    with pytest.raises(LatentcatError, match="k must be between 1 and 10000, got 0"):
        cat.similar(QUERY_ID, k=0)


def test_catalogue_is_read_only(cat):
    before = cat.sql("SELECT count(*) AS n FROM map").column("n")[0].as_py()
    with pytest.raises(LatentcatError, match="read-only"):
        cat.sql("INSERT INTO map VALUES (1, 0.0, 0.0, NULL)")
    with pytest.raises(LatentcatError, match="read-only"):
        cat.sql("DROP TABLE sources")
    assert cat.sql("SELECT count(*) AS n FROM map").column("n")[0].as_py() == before
    assert cat.sql("SELECT count(*) AS n FROM sources").column("n")[0].as_py() == N


def test_sql_binds_parameters_and_reports_errors_in_one_line(cat):
    got = cat.sql("SELECT source_id FROM sources WHERE source_id = $id", {"id": QUERY_ID})
    assert got.column("source_id").to_pylist() == [QUERY_ID]
    with pytest.raises(LatentcatError) as err:
        cat.sql("SELECT * FROM no_such_table")
    assert "\n" not in str(err.value)


def test_two_processes_read_at_once(cat, cat_dir):
    code = textwrap.dedent(f"""
        import latentcat.query as q
        c = q.open({str(cat_dir)!r})
        print(*c.similar({QUERY_ID}, k=5).column("source_id").to_pylist())
        try:
            c.sql("INSERT INTO map VALUES (1, 0.0, 0.0, NULL)")
        except Exception as err:
            print(type(err).__name__)
    """)
    # this process keeps its read-only handle open while two others open the same file
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    expected = " ".join(str(s) for s in cat.similar(QUERY_ID, k=5).column("source_id").to_pylist())
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.splitlines() == [expected, "LatentcatError"]


def test_info_reports_counts_and_build(cat, tables):
    info = cat.info()
    assert info["counts"]["embeddings"] == tables["embeddings"].num_rows
    assert info["counts"]["labels"] == tables["labels"].num_rows
    assert info["build_info"]["seed"] == SEED
    assert info["build_info"]["indexes"]["dmdt+fold"]["type"] == "flat"


def test_open_a_folder_without_catalogue(tmp_path):
    with pytest.raises(LatentcatError, match="not a latentcat catalogue"):
        open_catalog(tmp_path)


def test_similar_without_metadata_gives_the_same_neighbours(cat):
    full = cat.similar(QUERY_ID, k=9)
    bare = cat.similar(QUERY_ID, k=9, with_meta=False)
    assert bare.column_names == ["rank", "source_id", "distance", "blocks"]
    assert bare.column("source_id").to_pylist() == full.column("source_id").to_pylist()
    assert bare.column("distance").to_pylist() == full.column("distance").to_pylist()


@pytest.mark.parametrize("query", [QUERY_ID, [QUERY_ID, NO_XP_ID]], ids=["one", "batch"])
def test_metadata_columns_asked_for_are_those_of_the_full_answer(cat, query):
    columns = ["best_class_name", "phot_g_mean_mag", "source_id", "period"]
    full = cat.similar(query, k=7)
    some = cat.similar(query, k=7, with_meta=columns)
    head = (["query_id"] if isinstance(query, list) else []) + ["rank", "source_id", "distance", "blocks"]
    assert some.column_names == head + ["best_class_name", "phot_g_mean_mag", "period"]
    assert some.equals(full.select(some.column_names))
    liked = cat.like([QUERY_ID, NO_XP_ID], top=6, with_meta=["ruwe"])
    assert liked.column_names[-1] == "ruwe"
    assert liked.column("ruwe").equals(cat.like([QUERY_ID, NO_XP_ID], top=6).column("ruwe"))


def test_unknown_metadata_columns_are_refused_before_any_search(cat):
    with pytest.raises(LatentcatError, match=r"^source_meta has no column 'magnitude' \(it has: has_xp, "):
        cat.similar(QUERY_ID, with_meta=["phot_g_mean_mag", "magnitude"])
    with pytest.raises(LatentcatError, match="with_meta takes True, False or a list"):
        cat.similar(QUERY_ID, with_meta="phot_g_mean_mag")
    with pytest.raises(LatentcatError, match="source_meta has no column 'distance'"):
        list(cat.iter_similar([QUERY_ID], with_meta=["distance"]))


def test_one_query_on_ivf_indexes_gives_the_batch_answer(ivf_dir):
    """A single source_id takes a path of its own (plain lists, search_one): the same rows as the
    same source searched in a batch, with and without a where filter."""
    with open_catalog(ivf_dir) as c:
        ids = c.sql("SELECT source_id FROM space WHERE parts <> '' ORDER BY source_id LIMIT 12").column(0).to_pylist()
        for where in (None, "phot_g_mean_mag < 17"):
            batch = c.similar(ids, k=8, where=where)
            for sid in ids:
                one = c.similar(sid, k=8, where=where)
                mine = batch.filter(pa.compute.equal(batch.column("query_id"), sid)).drop_columns(["query_id"])
                assert one.equals(mine), (sid, where)


def test_dataframe_convenience_matches_the_arrow_answer(cat):
    query = "SELECT source_id, phot_g_mean_mag FROM sources WHERE phot_g_mean_mag < ? ORDER BY source_id"
    frame = cat.df(query, [15.0])
    table = cat.sql(query, [15.0])
    assert list(frame.columns) == table.column_names
    assert frame["source_id"].tolist() == table.column("source_id").to_pylist()
