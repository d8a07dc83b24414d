"""`add`: new sources through the catalogue's own settings and models, appended atomically."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import latentcat
from latentcat.blocks import BLOCKS
from latentcat.catalog import add as add_module
from latentcat.catalog import index as lc_index
from latentcat.catalog import store
from latentcat.catalog.add import add_sources, drift_report
from latentcat.encode import catalogue_settings
from latentcat.errors import InputError, LatentcatError
from latentcat.gaia.simulate import simulate_survey
from latentcat.analyse import analyse, analysis_inputs, fit_outliers
from latentcat.analysis.store import load_analysis
from latentcat.layout import ANALYSIS_DIR

N_NEW = 12


@pytest.fixture(scope="module")
def new_archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("new_sources")
    simulate_survey(n=N_NEW, seed=101, out=out)
    return out / "archive"


@pytest.fixture
def catalogue(tiny_build, tmp_path) -> Path:
    """A private copy of the built catalogue."""
    return Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _ids(cat_dir: Path, table: str = "embeddings") -> set[int]:
    with latentcat.open(cat_dir) as cat:
        return set(cat.sql(f"SELECT source_id FROM {table}").column("source_id").to_pylist())


def _recon_losses(cat_dir: Path, ids: set[int] | None = None) -> dict[str, np.ndarray]:
    """Each modality's stored reconstruction losses (of ``ids`` only, if given), NaN where none."""
    with latentcat.open(cat_dir) as cat:
        table = cat.sql("SELECT source_id, recon_loss_xp, recon_loss_dmdt, recon_loss_fold FROM embeddings")
    keep = np.ones(table.num_rows, bool) if ids is None else np.isin(table.column("source_id").to_numpy(), list(ids))
    return {m: table.column(f"recon_loss_{m}").to_numpy(zero_copy_only=False).astype(np.float32)[keep]
            for m in ("xp", "dmdt", "fold")}


def test_added_sources_are_found_as_their_own_nearest_neighbour(catalogue, new_archive):
    before = _ids(catalogue)
    catalogue_losses = _recon_losses(catalogue)
    new_ids = set(pq.read_table(new_archive / "EpochPhotometry_sim.parquet", columns=["source_id"])
                  .column("source_id").to_pylist())
    report = add_sources(catalogue, [new_archive])

    assert report["added"] + report["replaced"] == N_NEW
    assert report["replaced"] == len(new_ids & before)
    assert _ids(catalogue) == before | new_ids
    assert _ids(catalogue, "sources") >= new_ids and _ids(catalogue, "features") >= new_ids
    with latentcat.open(catalogue) as cat:
        info = cat.info()
        assert info["counts"]["embeddings"] == len(before | new_ids)
        record = info["build_info"]["additions"][-1]
        assert record["added"] == report["added"] and len(record["inputs"]) == 4
        assert all(len(v["sha256"]) == 64 for v in record["inputs"].values())
        for sid in sorted(new_ids):
            codes = cat.codes(sid)
            have = [b for b in BLOCKS if codes[b] is not None]
            vector = np.concatenate([codes[b] for b in have])
            top = cat.similar(vector, k=3, modality="+".join(have))
            assert top.column("source_id")[0].as_py() == sid
            assert top.column("distance")[0].as_py() == pytest.approx(0.0, abs=1e-3)
        # the record of the HATS copy counts the added sources too
        assert info["build_info"]["embeddings_hats"]["rows"] == len(before | new_ids)
        # the indexes hold every source with the blocks (or search-space parts), the added ones included
        for name, index_info in info["build_info"]["indexes"].items():
            if name.startswith("space:"):
                has = " AND ".join(f"s_{p} IS NOT NULL" for p in name.removeprefix("space:").split("+"))
                n = cat.sql(f"SELECT count(*) AS n FROM space WHERE {has}").column("n")[0].as_py()
            else:
                has = " AND ".join(f"has_{b}" for b in name.split("+"))
                n = cat.sql(f"SELECT count(*) AS n FROM embeddings WHERE {has}").column("n")[0].as_py()
            assert index_info["n"] == n
        # the added sources are in the search space by the stored rule: each is its own nearest
        # neighbour there, and FAISS and the SQL macro agree on their neighbours
        for sid in sorted(new_ids):
            parts = {p: v for p, v in cat.space_vector(sid).items() if v is not None}
            top = cat.similar(np.concatenate(list(parts.values())), k=3, modality="space:" + "+".join(parts))
            assert top.column("source_id")[0].as_py() == sid
            macro = cat.sql(f"SELECT source_id FROM similar_to({sid}, 5)").column("source_id").to_pylist()
            assert cat.similar(sid, k=5).column("source_id").to_pylist() == macro

    # new shards beside the build's, so later stages see the added rows once
    shards = sorted((catalogue / "embeddings").glob("embeddings-*.parquet"))
    rows = pq.read_table(shards).column("source_id").to_pylist()
    assert sorted(rows) == sorted(before | new_ids)
    # the HATS copy of the embeddings is rewritten with the added sources
    hats_rows = duckdb.sql(f"SELECT source_id FROM read_parquet('{catalogue}/embeddings_hats/dataset/**/*.parquet')")
    assert sorted(r[0] for r in hats_rows.fetchall()) == sorted(before | new_ids)
    # drift: the added sources' reconstruction losses (as now stored) against those the
    # catalogue held before, the replaced sources' old ones included
    added_losses = _recon_losses(catalogue, new_ids)
    for m, drift in report["drift"].items():
        ref, new = catalogue_losses[m], added_losses[m]
        ref, new = ref[np.isfinite(ref)], new[np.isfinite(new)]
        assert drift["catalogue"]["n"] == ref.size and drift["added"]["n"] == new.size
        assert drift["catalogue"]["p99"] == pytest.approx(np.percentile(ref, 99), rel=1e-6)
        assert drift["added"]["p50"] == pytest.approx(np.percentile(new, 50), rel=1e-6)
        assert drift["fraction_above_catalogue_p99"] == pytest.approx(np.mean(new > drift["catalogue"]["p99"]))
        assert report["fraction_above_catalogue_p99"][m] == drift["fraction_above_catalogue_p99"]
    assert report["drift"]["dmdt"]["added"]["n"] == report["drift"]["fold"]["added"]["n"] == N_NEW
    assert 0 < report["drift"]["xp"]["added"]["n"] < N_NEW  # the faint added sources have no XP
    # the added sources are simulated like the catalogue's own: few are out of its range
    assert all(d["fraction_above_catalogue_p99"] <= 0.25 for d in report["drift"].values())
    assert not list(catalogue.parent.glob(".cat.add-*"))


def test_adding_again_replaces_or_skips(catalogue, new_archive):
    add_sources(catalogue, [new_archive])
    counts = latentcat.open(catalogue).info()["counts"]

    again = add_sources(catalogue, [new_archive])
    assert again["replaced"] == N_NEW and again["added"] == 0
    assert again["counts"] == counts
    rows = pq.read_table(sorted((catalogue / "features").glob("features-*.parquet"))).column("source_id").to_pylist()
    assert len(rows) == len(set(rows)) == counts["features"]

    digests = _digests(catalogue)
    skipped = add_sources(catalogue, [new_archive], skip_existing=True)
    assert skipped["skipped_existing"] == N_NEW and skipped["added"] == 0
    assert _digests(catalogue) == digests


def test_killed_add_leaves_the_catalogue_byte_identical(catalogue, new_archive, monkeypatch):
    digests = _digests(catalogue)
    real_write = lc_index.write_index
    calls = []

    def dies_on_third_index(index, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed while writing the indexes")
        real_write(index, path)

    monkeypatch.setattr(lc_index, "write_index", dies_on_third_index)
    with pytest.raises(KeyboardInterrupt):
        add_sources(catalogue, [new_archive])
    assert len(calls) == 3
    assert _digests(catalogue) == digests
    assert not list(catalogue.parent.glob(".cat.add-*"))
    with latentcat.open(catalogue) as cat:
        assert cat.info()["counts"]["embeddings"] == 240
        assert "additions" not in cat.info()["build_info"]


def test_bad_input_is_one_clear_error_and_changes_nothing(catalogue, tmp_path):
    digests = _digests(catalogue)
    bad = tmp_path / "notes.csv"
    bad.write_text("colour,comment\nred,bright\n")
    with pytest.raises(InputError, match="notes.csv: unknown layout"):
        add_sources(catalogue, [bad])
    assert _digests(catalogue) == digests


def test_drift_report_against_catalogue_percentiles():
    catalogue = {m: np.arange(100, dtype=np.float32) for m in ("xp", "dmdt", "fold")}
    catalogue["xp"] = np.full(100, np.nan, np.float32)  # no XP in the catalogue
    added = {"xp": np.array([1.0], np.float32), "dmdt": np.array([50.0, 99.0, 200.0, np.nan], np.float32),
             "fold": np.array([np.nan], np.float32)}
    drift = drift_report(catalogue, added)
    # numpy's linear percentile of 0..99: p99 = 98.01, so 99 and 200 lie above it
    assert drift["dmdt"]["catalogue"]["p99"] == pytest.approx(98.01)
    assert drift["dmdt"]["added"]["n"] == 3
    assert drift["dmdt"]["fraction_above_catalogue_p99"] == pytest.approx(2 / 3)
    assert drift["xp"]["catalogue"]["n"] == 0 and drift["xp"]["fraction_above_catalogue_p99"] is None
    assert drift["fold"]["added"]["n"] == 0 and drift["fold"]["fraction_above_catalogue_p99"] is None


def test_feature_settings_come_from_the_catalogue(tiny_build):
    with latentcat.open(tiny_build.catalogue) as cat:
        settings = catalogue_settings(tiny_build.catalogue, cat.info()["build_info"])
    assert settings["min_epochs"] == 10 and settings["shard_size"] == 100
    assert settings["keep_variability_rejected"] is False


def test_stored_outlier_scores_are_marked_stale_not_invented(catalogue, new_archive):
    from latentcat.catalog.store import write_outlier_scores

    shutil.rmtree(catalogue / ANALYSIS_DIR, ignore_errors=True)  # a catalogue that stores no models
    with latentcat.open(catalogue) as cat:
        scores = cat.sql("SELECT source_id, recon_loss_fold AS score FROM embeddings WHERE has_fold")
    write_outlier_scores(catalogue, scores, "recon_loss_fold")
    derived = ("map", "outlier_scores", "predictions")
    with latentcat.open(catalogue) as cat:
        filled = [t for t in derived if cat.sql(f"SELECT count(*) AS n FROM {t}").column("n")[0].as_py()]
    report = add_sources(catalogue, [new_archive])
    new_ids = set(pq.read_table(new_archive / "EpochPhotometry_sim.parquet", columns=["source_id"])
                  .column("source_id").to_pylist())
    with latentcat.open(catalogue) as cat:
        stale = cat.info()["build_info"]["stale"]
        for table in derived:  # no score, class or map position is made up for the added sources
            rows = set(cat.sql(f"SELECT source_id FROM {table}").column("source_id").to_pylist())
            assert not rows & new_ids
    assert "outlier_scores" in filled and stale["tables"] == filled
    assert stale["sources_without_rows"] == N_NEW == report["stale"]["sources_without_rows"]


# ---------------------------------------------------------------------------------------
# derived tables: the added sources get rows from the models stored in analysis/

OUTLIER_KEYS = ("isolation_forest:space", "recon_loss:all")


def analyse_and_store(cat_dir: Path) -> None:
    """What the build's analyse stage does, with the build's seed: fit, write the tables
    (replacing the build's own rows), store the models."""
    with latentcat.open(cat_dir) as cat:
        seed = cat.info()["build_info"]["seed"]
    analyse(cat_dir, classifier={}, outliers=[("isolation_forest", "space"), ("recon_loss", "all")],
            map_model={"n_steps": 50}, seed=seed, keep=False)


@pytest.fixture(scope="module")
def analysed(tiny_build, tmp_path_factory) -> Path:
    path = Path(shutil.copytree(tiny_build.catalogue, tmp_path_factory.mktemp("analysed") / "cat"))
    analyse_and_store(path)
    return path


@pytest.fixture
def analysed_copy(analysed, tmp_path) -> Path:
    return Path(shutil.copytree(analysed, tmp_path / "cat"))


def _table(cat_dir: Path, sql: str):
    with latentcat.open(cat_dir) as cat:
        return cat.sql(sql)


def test_added_sources_get_rows_from_the_stored_models(analysed_copy, new_archive):
    before = {
        "pred": _table(analysed_copy, "SELECT * FROM predictions ORDER BY source_id"),
        "out": _table(analysed_copy, "SELECT * FROM outlier_scores ORDER BY method, source_id"),
        "map": _table(analysed_copy, "SELECT * FROM map ORDER BY source_id"),
    }
    old_ids = _ids(analysed_copy)
    report = add_sources(analysed_copy, [new_archive])
    models = load_analysis(analysed_copy)
    with latentcat.open(analysed_copy) as cat:
        ids, blocks, losses = analysis_inputs(cat)
        info = cat.info()
        pred = cat.sql("SELECT * FROM predictions ORDER BY source_id")
        out = cat.sql("SELECT * FROM outlier_scores ORDER BY method, source_id")
        xy = cat.sql("SELECT * FROM map ORDER BY source_id")
    assert "stale" not in info["build_info"] and report["stale"] is None
    added = ~np.isin(ids, list(old_ids - set(_new_ids(new_archive))))
    assert added.sum() == N_NEW
    sub = {b: v[added] for b, v in blocks.items()}
    sub_losses = {b: v[added] for b, v in losses.items()}

    # predictions: exactly what the loaded classifier says for the added sources
    (model_id, classifier), = models.classifiers.items()
    want = classifier.predict_table(ids[added], sub)
    got = pred.filter(pa.array(np.isin(pred.column("source_id").to_numpy(), ids[added])))
    assert got.num_rows == want.num_rows > 0
    assert got.column("source_id").equals(want.column("source_id"))
    assert got.column("class").equals(want.column("class"))
    np.testing.assert_array_equal(got.column("probability").to_numpy(), want.column("probability").to_numpy())
    assert set(pred.column("model_id").to_pylist()) == {model_id}
    assert report["analysis"]["predictions"] == {model_id: want.num_rows}
    old = before["pred"].filter(pa.array(np.isin(before["pred"].column("source_id").to_numpy(),
                                                 pred.column("source_id").to_numpy()[~np.isin(
                                                     pred.column("source_id").to_numpy(), ids[added])])))
    assert old.equals(pred.filter(pa.array(~np.isin(pred.column("source_id").to_numpy(), ids[added]))))

    for key in OUTLIER_KEYS:
        rows = out.filter(pa.array(np.array(out.column("method").to_pylist()) == key))
        sid, score, rank = (rows.column(c).to_numpy() for c in ("source_id", "score", "rank"))
        # ranks are a permutation of 1..N that orders the scores (ties by source_id)
        assert sorted(rank.tolist()) == list(range(1, rows.num_rows + 1))
        order = np.lexsort((sid, -score.astype(np.float64)))
        np.testing.assert_array_equal(rank[order], np.arange(1, rows.num_rows + 1))
        # the added sources' scores come from the stored model, on the catalogue's scale
        score_new, _ = models.outliers[key].score(sub, sub_losses)
        ok = np.isfinite(score_new)
        mine = np.isin(sid, ids[added])
        np.testing.assert_array_equal(sid[mine], ids[added][ok])
        np.testing.assert_array_equal(score[mine], score_new[ok])
        # the catalogue's own scores are untouched
        old = before["out"].filter(pa.array(np.array(before["out"].column("method").to_pylist()) == key))
        keep = np.isin(old.column("source_id").to_numpy(), sid)
        np.testing.assert_array_equal(old.column("score").to_numpy()[keep], score[~mine])
        assert report["analysis"]["outlier_scores"][key]["scored"] == int(ok.sum())

    placed = models.map.place(ids[added], sub)
    coded = np.any([~np.isnan(sub[b][:, 0]) for b in sub], axis=0)  # every source with a code is placed
    assert placed.num_rows == coded.sum() > 0
    mine = np.isin(xy.column("source_id").to_numpy(), ids[added])
    np.testing.assert_array_equal(xy.column("source_id").to_numpy()[mine], ids[added][coded])
    for c in ("x", "y"):
        np.testing.assert_array_equal(xy.column(c).to_numpy()[mine], placed.column(c).to_numpy())
    assert xy.column("blocks").filter(pa.array(mine)).equals(placed.column("blocks"))
    with latentcat.open(analysed_copy) as cat:
        n_coded = cat.sql("SELECT count(*) AS n FROM space").column("n")[0].as_py()
    assert xy.num_rows == n_coded
    kept = np.isin(before["map"].column("source_id").to_numpy(), xy.column("source_id").to_numpy()[~mine])
    np.testing.assert_array_equal(before["map"].column("x").to_numpy()[kept], xy.column("x").to_numpy()[~mine])


def _new_ids(archive: Path) -> list[int]:
    table = pq.read_table(archive / "EpochPhotometry_sim.parquet", columns=["source_id"])
    return table.column("source_id").to_pylist()


def test_rows_the_stored_model_does_not_reproduce_are_marked_stale(analysed_copy, new_archive):
    # isolation-forest rows rewritten by another fit (seed 5): the stored forests (seed 0)
    # would put the added sources on a different scale, so that method gets no new rows
    with latentcat.open(analysed_copy) as cat:
        other, _ = fit_outliers(cat, "isolation_forest", seed=5)
    store.write_outlier_scores(analysed_copy, other, "isolation_forest:space")
    report = add_sources(analysed_copy, [new_archive])
    new = set(_new_ids(new_archive))
    with latentcat.open(analysed_copy) as cat:
        stale = cat.info()["build_info"]["stale"]
        forest = set(cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'isolation_forest:space'")
                     .column("source_id").to_pylist())
        loss = set(cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'recon_loss:all'")
                   .column("source_id").to_pylist())
    assert stale["tables"] == ["outlier_scores"]
    assert stale["keys"] == {"outlier_scores": ["isolation_forest:space"]}
    assert not forest & new and new <= loss
    assert set(report["analysis"]) == {"predictions", "outlier_scores", "map"}
    assert list(report["analysis"]["outlier_scores"]) == ["recon_loss:all"]


def test_killed_while_scoring_leaves_the_analysed_catalogue_byte_identical(analysed_copy, new_archive,
                                                                           monkeypatch):
    digests = _digests(analysed_copy)
    real_insert = add_module._insert
    calls = []

    def dies_on_third_insert(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed while scoring the added sources")
        real_insert(*args, **kwargs)

    monkeypatch.setattr(add_module, "_insert", dies_on_third_insert)
    with pytest.raises(KeyboardInterrupt):
        add_sources(analysed_copy, [new_archive])
    assert calls == ["insert_predictions", "insert_outlier_scores", "insert_outlier_scores"]
    assert _digests(analysed_copy) == digests
    assert not list(analysed_copy.parent.glob(".cat.add-*"))


def test_a_catalogue_opened_before_add_stays_the_old_one(catalogue, new_archive):
    old_ids = _ids(catalogue)
    reader = latentcat.open(catalogue)  # held open across the addition, no index used yet
    try:
        add_sources(catalogue, [new_archive])
        new_ids = _ids(catalogue) - old_ids
        assert new_ids
        with latentcat.open(catalogue) as fresh:
            probes = {sid: (fresh.space_vector(sid), fresh.codes(sid)) for sid in sorted(new_ids)}
            assert fresh.info()["counts"]["embeddings"] == len(old_ids | new_ids)
        assert reader.info()["counts"]["embeddings"] == len(old_ids)
        for sid, (parts, codes) in probes.items():  # every index the old reader uses is the old one
            space = {p: v for p, v in parts.items() if v is not None}
            queries = [(np.concatenate(list(space.values())), "space:" + "+".join(space))]
            queries += [(v, b) for b, v in codes.items() if v is not None]
            for vector, modality in queries:
                found = reader.similar(vector, k=20, modality=modality)
                assert set(found.column("source_id").to_pylist()) <= old_ids
                assert found.column("best_class_name").null_count < found.num_rows  # metadata from the same snapshot
            with pytest.raises(LatentcatError, match="is not in the catalogue"):
                reader.similar(sid)
    finally:
        reader.close()


def test_adding_to_a_catalogue_written_before_the_colour_slope(catalogue, new_archive):
    """An older catalogue's features table gains the colour-slope columns; its rows keep NULL there."""
    con = duckdb.connect(str(catalogue / "catalog.duckdb"))
    old_ids = {r[0] for r in con.execute("SELECT source_id FROM features").fetchall()}
    for column in ("colour_slope", "colour_slope_err"):
        con.execute(f"ALTER TABLE features DROP COLUMN {column}")
    con.close()
    add_sources(catalogue, [new_archive])
    with duckdb.connect(str(catalogue / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source_id, colour_slope, colour_slope_err, lc_reason FROM features").fetchall()
    new = [r for r in rows if r[0] not in old_ids]
    assert new and all(r[1] is None for r in rows if r[0] in old_ids)
    with_lc = [r for r in new if r[3] is None]
    measured = [r for r in with_lc if r[1] is not None]
    assert len(measured) >= len(with_lc) // 2 and all(np.isfinite(r[1]) and r[2] > 0 for r in measured)
