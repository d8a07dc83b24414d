"""Classifiers, outlier ranking and the 2-D map on a synthetic catalogue of the real schema."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors

from catalog_fixtures import NO_XP_ID, QUERY_ID, make_tables
from latentcat.catalog import store
from latentcat.catalog.index import codes_to_numpy, vectors_for
from latentcat.errors import LatentcatError
from latentcat.query import open as open_catalog
from latentcat.analyse import analyse, analysis_inputs, fit_classifier, fit_map_model, fit_outliers, labels_of
from latentcat.analysis.store import load_analysis, save_analysis
from latentcat.analysis.latent_map import ParametricMap, fit_map
from latentcat.analysis.outliers import OutlierModel

N = 1500
SEED = 7
RARE = "CV"           # a class given to 3 sources only
N_FAR = 5             # sources with all blocks moved far from every cluster
MAP_STEPS = 100       # short fits where only determinism and the plumbing are tested


def _set_rows(column: pa.ChunkedArray, rows: np.ndarray, values: np.ndarray) -> pa.Array:
    """A list<float> column with the given rows replaced."""
    data = column.to_pylist()
    for r, v in zip(rows, values):
        data[r] = v.tolist()
    return pa.array(data, column.type)


@pytest.fixture(scope="module")
def tables():
    """Fixture tables plus a rare class, far-away codes and badly reconstructed sources."""
    t = make_tables(N, seed=SEED, with_arrays=False)
    emb = t["embeddings"]
    ids = emb.column("source_id").to_numpy()
    has = {b: emb.column(f"has_{b}").to_numpy(zero_copy_only=False) for b in ("xp", "dmdt", "fold")}
    labelled = np.isin(ids, t["labels"].column("source_id").to_numpy())
    rng = np.random.default_rng(SEED)
    full = np.flatnonzero(has["xp"] & has["dmdt"] & ~labelled & (ids != QUERY_ID))
    far = rng.choice(full, N_FAR, replace=False)
    lc_only = np.flatnonzero(~has["xp"] & has["dmdt"] & ~labelled & (ids != NO_XP_ID))
    far_no_xp = rng.choice(lc_only, 1)
    for b in ("xp", "dmdt", "fold"):
        rows = far if b == "xp" else np.concatenate([far, far_no_xp])
        values = np.full((rows.size, 5), 25.0, np.float32)
        emb = emb.set_column(emb.schema.get_field_index(f"z_{b}"), f"z_{b}",
                             _set_rows(emb.column(f"z_{b}"), rows, values))
    # four sources the fold VAE reconstructs badly
    bad = rng.choice(np.flatnonzero(has["fold"] & ~np.isin(np.arange(N), far)), 4, replace=False)
    loss = emb.column("recon_loss_fold").to_numpy(zero_copy_only=False).copy()
    loss[bad] = 50.0
    emb = emb.set_column(emb.schema.get_field_index("recon_loss_fold"), "recon_loss_fold",
                         pa.array(loss, pa.float32(), mask=~has["fold"]))
    t["embeddings"] = emb
    # a class with three labelled sources
    lab = t["labels"]
    names = np.array(lab.column("best_class_name").to_pylist(), dtype=object)
    names[rng.choice(len(names), 3, replace=False)] = RARE
    t["labels"] = lab.set_column(1, "best_class_name", pa.array(names.tolist(), pa.string()))
    t["far"], t["far_no_xp"], t["bad_fold"] = ids[far], ids[far_no_xp], ids[bad]
    return t


@pytest.fixture(scope="module")
def cat_dir(tmp_path_factory, tables):
    root = tmp_path_factory.mktemp("analyse")
    dirs = {k: root / k for k in ("stage", "features", "embeddings")}
    for d in dirs.values():
        d.mkdir()
    pq.write_table(tables["sources"], dirs["stage"] / "sources.parquet")
    pq.write_table(tables["labels"], dirs["stage"] / "labels.parquet")
    pq.write_table(tables["features"], dirs["features"] / "features-00000.parquet")
    pq.write_table(tables["embeddings"], dirs["embeddings"] / "embeddings-00000.parquet")
    path = root / "cat"
    store.write_catalog(path, dirs["stage"], dirs["features"], dirs["embeddings"],
                        build_info={"seed": SEED})
    return path


@pytest.fixture(scope="module")
def cat(cat_dir):
    with open_catalog(cat_dir) as c:
        yield c


@pytest.fixture(scope="module")
def logreg(cat):
    return fit_classifier(cat, model="logreg", cv=5, seed=0)


def _blocks_of(tables, space: bool = True) -> dict[int, str]:
    """source_id -> the search-space parts it has, e.g. 'dmdt+fold+colour' ('' for none), or with
    ``space=False`` its latent blocks, from the input tables. A source has the colour part when
    gaia_source gives its bp_rp and it has a latent block."""
    emb, src = tables["embeddings"], tables["sources"]
    flags = [emb.column(f"has_{b}").to_pylist() for b in ("xp", "dmdt", "fold")]
    colour = dict(zip(src.column("source_id").to_pylist(), src.column("bp_rp").to_pylist()))
    out = {}
    for sid, *fl in zip(emb.column("source_id").to_pylist(), *flags):
        parts = [b for b, f in zip(("xp", "dmdt", "fold"), fl) if f]
        if space and parts and colour.get(sid) is not None:
            parts.append("colour")
        out[sid] = "+".join(parts)
    return out


# ---------------------------------------------------------------------------------------
# classifiers


def test_separable_classes_are_recovered(logreg):
    recall = dict(zip(logreg.report.column("class").to_pylist(),
                      logreg.report.column("recall").to_pylist()))
    assert set(recall) == {"RRAB", "EW", "SR", "DSCT|GDOR|SXPHE", "SOLAR_LIKE", "YSO"}
    assert min(recall.values()) > 0.9, recall
    assert logreg.macro_f1 > 0.9


def test_confusion_matrix_counts_every_labelled_source_once(logreg, tables):
    blocks = _blocks_of(tables)
    lab = tables["labels"]
    scored = [
        sid for sid, name in zip(lab.column("source_id").to_pylist(),
                                 lab.column("best_class_name").to_pylist())
        if name != RARE and blocks[sid]
    ]
    assert logreg.confusion.shape == (6, 6)
    assert logreg.confusion.sum() == len(scored)
    assert logreg.n_unscored == 0
    np.testing.assert_array_equal(logreg.confusion.sum(axis=1), logreg.report.column("support"))
    # the true-class counts equal the label counts of the input table
    names = [n for n, sid in zip(lab.column("best_class_name").to_pylist(),
                                 lab.column("source_id").to_pylist()) if n != RARE and blocks[sid]]
    expected = [names.count(c) for c in logreg.classes]
    assert logreg.confusion.sum(axis=1).tolist() == expected


def test_a_class_with_three_sources_is_left_out_and_reported(logreg):
    assert logreg.left_out == {RARE: 3}
    assert RARE not in logreg.classes
    assert RARE not in set(logreg.predictions.column("class").to_pylist())


def test_every_source_with_a_code_is_predicted_on_its_own_blocks(logreg, tables):
    blocks = _blocks_of(tables)
    pred = logreg.predictions
    got = dict(zip(pred.column("source_id").to_pylist(), pred.column("blocks").to_pylist()))
    with_code = {sid for sid, b in blocks.items() if b}
    assert set(got) == with_code
    assert logreg.n_without_code == len(blocks) - len(with_code) > 0
    assert logreg.n_without_model == 0
    assert all(got[sid] == blocks[sid] for sid in got)  # no missing block is ever used
    assert got[NO_XP_ID] == "dmdt+fold+colour" and got[QUERY_ID] == "xp+dmdt+fold+colour"
    p = pred.column("probability").to_numpy()
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p <= 1))
    assert set(pred.column("model_id").to_pylist()) == {logreg.model_id}


def test_sources_without_xp_get_the_dmdt_fold_model(cat, logreg, tables):
    # the search space classifies a source without XP on the parts it has
    truth = dict(zip(tables["labels"].column("source_id").to_pylist(),
                     tables["labels"].column("best_class_name").to_pylist()))
    hits = [truth[sid] == c for sid, c, b in zip(*(logreg.predictions.column(k).to_pylist()
                                                   for k in ("source_id", "class", "blocks")))
            if b == "dmdt+fold+colour" and sid in truth and truth[sid] != RARE]
    assert len(hits) > 50 and np.mean(hits) > 0.9
    # "all" classifies a source without XP with a model that never saw an XP block: the same
    # model as asking for dm-dt + fold alone. A zero- or mean-filled XP block would differ.
    logreg = fit_classifier(cat, model="logreg", modality="all", cv=5, seed=0)
    alone = fit_classifier(cat, model="logreg", modality="dmdt+fold", cv=5, seed=0)
    assert alone.classes == logreg.classes
    a = {r["source_id"]: r for r in alone.predictions.to_pylist()}
    checked = 0
    for r in logreg.predictions.to_pylist():
        if r["blocks"] == "dmdt+fold":
            assert a[r["source_id"]]["class"] == r["class"]
            assert a[r["source_id"]]["probability"] == pytest.approx(r["probability"], rel=1e-5)
            checked += 1
    assert checked > 100
    # and the labelled sources without XP are classified well from their light curve alone
    truth = dict(zip(tables["labels"].column("source_id").to_pylist(),
                     tables["labels"].column("best_class_name").to_pylist()))
    hits = [truth[sid] == c for sid, c, b in zip(*(logreg.predictions.column(k).to_pylist()
                                                   for k in ("source_id", "class", "blocks")))
            if b == "dmdt+fold" and sid in truth and truth[sid] != RARE]
    assert len(hits) > 50 and np.mean(hits) > 0.9


def test_model_id_is_stable_and_names_what_was_fitted(cat, logreg):
    again = fit_classifier(cat, model="logreg", cv=5, seed=0)
    assert again.model_id == logreg.model_id
    assert again.predictions.equals(logreg.predictions)
    other = fit_classifier(cat, model="logreg", cv=5, seed=1)
    assert other.model_id != logreg.model_id
    assert logreg.model_id.startswith("logreg-")


@pytest.mark.parametrize("model", ["hgb", "rf"])
def test_tree_models_are_one_model_that_takes_missing_parts_as_they_are(cat, tables, model):
    """Gradient-boosted trees and forests are one model on every part, a missing part given as
    NaN: every source with a code is predicted, on the parts it has, and the sources without XP
    are classified as well as with it. Nothing is filled in: the same source with its XP block
    taken away gets the prediction the model gives a source without XP."""
    res = fit_classifier(cat, model=model, cv=2, seed=0)
    assert list(res.fitted.models_) == ["xp+dmdt+fold+colour"] and res.fitted.native_
    blocks = _blocks_of(tables)
    got = {r["source_id"]: r for r in res.predictions.to_pylist()}
    assert set(got) == {sid for sid, b in blocks.items() if b}
    assert all(got[sid]["blocks"] == blocks[sid] for sid in got)
    truth = dict(zip(tables["labels"].column("source_id").to_pylist(), tables["labels"].column("best_class_name").to_pylist()))
    for parts in ("xp+dmdt+fold+colour", "dmdt+fold+colour"):
        hits = [truth[s] == r["class"] for s, r in got.items() if r["blocks"] == parts and s in truth and truth[s] != RARE]
        assert len(hits) > 50 and np.mean(hits) > 0.9, parts
    ids, parts, _ = analysis_inputs(cat)
    row = int(np.searchsorted(ids, QUERY_ID))
    one = {b: v[row:row + 1].copy() for b, v in parts.items()}
    one["xp"][:] = np.nan
    no_xp = res.fitted.predict_table(ids[row:row + 1], one).to_pylist()[0]
    assert no_xp["blocks"] == "dmdt+fold+colour"
    features = np.hstack([one[b] for b in parts])
    proba = res.fitted.models_["xp+dmdt+fold+colour"].predict_proba(features)[0]
    assert no_xp["probability"] == pytest.approx(float(proba.max()), rel=1e-6)


def test_boosting_stops_early_unless_a_tenth_cannot_hold_every_class():
    """Early stopping holds out a stratified tenth; with classes of ten sources (the least
    classify keeps) or of one, that tenth cannot hold every class, and the fit runs its rounds."""
    from latentcat.analysis.classify import ROUNDS_WITHOUT_STOP, classify, fit_model, make_model

    rng = np.random.default_rng(5)
    y = np.repeat([f"C{k}" for k in range(5)], 10)
    blocks = {"fold": (rng.normal(0, 0.3, (50, 5)) + np.repeat(np.arange(5), 10)[:, None]).astype(np.float32)}
    res = classify(np.arange(50, dtype=np.int64), blocks, y, model="hgb", modality="fold", seed=0)
    assert res.predictions.num_rows == 50 and res.n_unscored == 0  # every source scored and predicted
    x = blocks["fold"][:11]
    lone = np.array([0] * 10 + [1])  # a class of one source
    without = fit_model(make_model("hgb"), x, lone).named_steps["clf"]
    assert without.early_stopping is False and without.n_iter_ == ROUNDS_WITHOUT_STOP
    # with every class large enough for the held-out tenth, boosting keeps its early stop
    # (without it, 500 rounds of balanced boosting can drift far from its best)
    x = (rng.normal(0, 0.3, (600, 5)) + np.repeat(np.arange(3), 200)[:, None]).astype(np.float32)
    fitted = fit_model(make_model("hgb"), x, np.repeat(np.arange(3), 200)).named_steps["clf"]
    assert fitted.early_stopping is True and fitted.n_iter_ < fitted.max_iter


def test_cross_validation_and_final_fit_are_capped_by_stratified_samples():
    from latentcat.analysis.classify import stratified_sample

    y = np.repeat(np.arange(4), [9000, 900, 90, 9])
    y = np.concatenate([y, np.full(500, -1)])  # unlabelled rows are never drawn
    keep = stratified_sample(y, 1000, seed=3, least=5)
    assert not keep[y < 0].any()
    counts = np.bincount(y[keep], minlength=4)
    assert abs(counts.sum() - 1000) <= 10
    np.testing.assert_allclose(counts[:3], [1000 * 9000 / 9999, 1000 * 900 / 9999, 1000 * 90 / 9999], atol=1)
    assert counts[3] == 5  # a rare class keeps enough sources for its folds
    assert np.array_equal(keep, stratified_sample(y, 1000, seed=3, least=5))  # seeded
    assert stratified_sample(y, 20_000, seed=3).sum() == (y >= 0).sum()  # under the cap: every labelled source


def test_forest_classifier_on_one_block(cat):
    res = fit_classifier(cat, model="rf", modality="fold", cv=3, seed=0)
    assert min(res.report.column("recall").to_pylist()) > 0.85
    assert set(res.predictions.column("blocks").to_pylist()) == {"fold"}


@pytest.mark.parametrize("labels", [
    "labels.no_such_column", "nolabels.best_class_name", "best_class_name",
    "labels.best_class_name; DROP TABLE labels", "labels.best_class_name.x",
])
def test_bad_labels_argument_is_one_clear_error(cat, labels):
    with pytest.raises(LatentcatError, match="table.column") as err:
        fit_classifier(cat, labels=labels)
    assert "\n" not in str(err.value)


def test_bad_model_and_modality_are_rejected(cat):
    with pytest.raises(LatentcatError, match="unknown model"):
        fit_classifier(cat, model="svm")
    with pytest.raises(LatentcatError, match="unknown modality"):
        fit_classifier(cat, modality="spectra")


def test_too_few_classes_is_an_error_not_a_crash(cat):
    # every ra value is its own class: no class reaches min_per_class
    with pytest.raises(LatentcatError, match="fewer than two classes"):
        fit_classifier(cat, labels="sources.ra")


# ---------------------------------------------------------------------------------------
# outliers


def test_far_away_codes_rank_first(cat, tables):
    got = fit_outliers(cat, method="isolation_forest", seed=0)[0]
    top = got.column("source_id").to_pylist()[: N_FAR + 1]
    assert set(top) == set(tables["far"]) | set(tables["far_no_xp"])
    assert got.column("rank").to_pylist() == list(range(1, got.num_rows + 1))
    s = got.column("score").to_numpy()
    assert np.all(np.diff(s) <= 0)
    assert set(got.column("method").to_pylist()) == {"isolation_forest:space"}
    # every source with a code is scored on its own blocks, the others are absent
    blocks = _blocks_of(tables)
    scored = dict(zip(got.column("source_id").to_pylist(), got.column("blocks").to_pylist()))
    assert scored == {sid: b for sid, b in blocks.items() if b}


def test_outliers_top_and_determinism(cat):
    a, _ = fit_outliers(cat, seed=3)
    b, _ = fit_outliers(cat, seed=3)
    assert a.num_rows > 20 and a.equals(b)


def test_reconstruction_loss_ranking(cat, tables):
    got = fit_outliers(cat, method="recon_loss", modality="fold")[0]
    assert set(got.column("source_id").to_pylist()[:4]) == set(tables["bad_fold"])
    assert got.num_rows == int(pc.sum(tables["embeddings"].column("has_fold")).as_py())
    both = fit_outliers(cat, method="recon_loss")[0]
    assert set(both.column("source_id").to_pylist()[:4]) == set(tables["bad_fold"])
    with pytest.raises(LatentcatError, match="unknown outlier method"):
        fit_outliers(cat, method="lof")[0]


# ---------------------------------------------------------------------------------------
# map


@pytest.fixture(scope="module")
def codes(cat):
    ids, blocks = codes_to_numpy(cat.sql("SELECT source_id, z_xp, z_dmdt, z_fold FROM embeddings"))
    return vectors_for(ids, blocks, ("xp", "dmdt", "fold"))


def _neighbours_kept(z: np.ndarray, xy: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in z that stay among its k in xy."""
    a = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    b = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    return float(np.mean([np.intersect1d(p, q).size / k for p, q in zip(a, b)]))


def test_map_unrolls_a_curved_sheet():
    # a swiss roll (a 2-D sheet) turned into 15-D: no linear projection keeps its
    # neighbourhoods (PCA: trustworthiness 0.92, 24 % of neighbours kept; the untrained
    # network: 0.95, 48 %), a map that learned the kNN graph does
    rng = np.random.default_rng(0)
    t = 1.5 * np.pi * (1 + 2 * rng.random(1500))
    sheet = np.column_stack([t * np.cos(t), 20 * rng.random(1500), t * np.sin(t),
                             np.zeros((1500, 12))])
    rotation, _ = np.linalg.qr(rng.normal(size=(15, 15)))
    z = (sheet @ rotation + rng.normal(0, 0.05, (1500, 15))).astype(np.float32)
    x, y = fit_map(z, seed=0, n_steps=600)
    xy = np.column_stack([x, y])
    assert x.dtype == np.float32 and x.shape == (1500,)
    assert trustworthiness(z, xy, n_neighbors=10) >= 0.97
    assert _neighbours_kept(z, xy) >= 0.6


def test_map_is_deterministic_for_a_seed(codes):
    _, z = codes
    x, y = fit_map(z, seed=0, n_steps=MAP_STEPS)
    assert trustworthiness(z, np.column_stack([x, y]), n_neighbors=10) >= 0.9
    x2, y2 = fit_map(z, seed=0, n_steps=MAP_STEPS)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = fit_map(z, seed=1, n_steps=MAP_STEPS)
    assert not np.allclose(x, x3)


def test_map_places_new_sources_with_the_same_network(codes):
    _, z = codes
    half = z.shape[0] // 2
    m = ParametricMap(n_steps=300, seed=1, max_fit=half).fit(z)
    assert m.n_fit_ == half  # fitted on a sample, applied to all
    xy = m.transform(z)
    assert trustworthiness(z, xy, n_neighbors=10) >= 0.85
    # a source is placed the same alone or among others (to float32 rounding)
    np.testing.assert_allclose(m.transform(z[:10]), xy[:10], rtol=0, atol=1e-5)
    with pytest.raises(LatentcatError, match="NaN"):
        m.transform(np.full((2, 15), np.nan, np.float32))


def test_results_are_written_back_and_read(cat, tmp_path, cat_dir, logreg):
    copy = tmp_path / "cat"
    shutil.copytree(cat_dir, copy)
    done = analyse(copy, classifier={"model": "logreg"}, outliers=[("isolation_forest", "space")],
                   map_model={"n_steps": 50}, seed=0)
    xy, scores = done.map[0], done.outliers[0][0]
    assert done.classifier.predictions.equals(logreg.predictions)  # the same fit as on the open catalogue
    assert done.rows == {"predictions": logreg.predictions.num_rows, "outliers_isolation_forest:space": scores.num_rows,
                         "map": xy.num_rows}
    assert store.write_map(copy, xy) == xy.num_rows  # a new map replaces the old one
    with open_catalog(copy) as c:
        counts = c.info()["counts"]
        # every source with a code is on the map, XP or not
        with_code = c.sql("SELECT count(*) AS n FROM embeddings WHERE has_xp OR has_dmdt OR has_fold")
        assert counts["map"] == xy.num_rows == with_code.column("n")[0].as_py() > counts["embeddings_all_blocks"]
        assert counts["predictions"] == logreg.predictions.num_rows
        stored = c.map()
        assert stored.column("source_id").equals(xy.column("source_id"))
        np.testing.assert_array_equal(stored.column("x").to_numpy(), xy.column("x").to_numpy())
        meta = c.map(with_meta=True)
        assert "best_class_name" in meta.column_names and meta.num_rows == xy.num_rows
        ranks = c.sql("SELECT source_id FROM outlier_scores ORDER BY rank LIMIT 5")
        assert ranks.column("source_id").equals(scores.column("source_id").slice(0, 5))


# ---------------------------------------------------------------------------------------
# fitted models kept with the catalogue (analysis/)


def test_stored_models_reproduce_the_catalogue_rows(cat, logreg, tmp_path):
    ids, blocks, losses = analysis_inputs(cat)
    fitted = []
    for method in ("isolation_forest", "recon_loss"):
        table, model = fit_outliers(cat, method, seed=0)
        fitted.append(model)
    xy, network = fit_map_model(cat, seed=0, n_steps=MAP_STEPS)

    manifest = save_analysis(tmp_path, classifier=logreg, outliers=fitted, map_model=network)
    assert manifest["classifiers"][logreg.model_id]["classes"] == logreg.classes
    assert set(manifest["outliers"]) == {"isolation_forest:space", "recon_loss:all"}
    loaded = load_analysis(tmp_path)
    assert loaded.classifiers[logreg.model_id].predict_table(ids, blocks).equals(logreg.predictions)
    for model in fitted:
        again = loaded.outliers[model.key].rank(ids, blocks, losses)
        assert again.equals(model.rank(ids, blocks, losses))
    assert loaded.map.place(ids, blocks).equals(xy)
    assert load_analysis(tmp_path / "elsewhere") is None


def test_saving_again_replaces_or_keeps_the_stored_models(cat, logreg, tmp_path):
    _, blocks, losses = analysis_inputs(cat)
    save_analysis(tmp_path, classifier=logreg,
                  outliers=[OutlierModel("isolation_forest", "xp").fit(blocks, losses)])
    save_analysis(tmp_path, outliers=[OutlierModel("recon_loss").fit(blocks, losses)])
    loaded = load_analysis(tmp_path)
    assert loaded.classifiers == {} and loaded.map is None
    assert list(loaded.outliers) == ["recon_loss:all"]
    assert sorted(p.name for p in (tmp_path / "analysis").iterdir()) == [
        "manifest.json", "outliers-recon_loss-all.joblib"]
    # a later classifier run stores its model beside the others
    save_analysis(tmp_path, classifier=logreg.fitted, keep=True)
    loaded = load_analysis(tmp_path)
    assert list(loaded.classifiers) == [logreg.model_id] and list(loaded.outliers) == ["recon_loss:all"]


def test_a_new_source_is_scored_on_the_catalogue_loss_scale(cat):
    _, blocks, losses = analysis_inputs(cat)
    model = OutlierModel("recon_loss").fit(blocks, losses)
    # the robust scale, computed here from the stored losses themselves
    ref = {}
    for b in ("xp", "dmdt", "fold"):
        x = losses[b][np.isfinite(losses[b])].astype(np.float64)
        med = np.median(x)
        ref[b] = (med, 1.4826 * np.median(np.abs(x - med)))
    new = {"xp": np.array([np.nan, ref["xp"][0] + 3 * ref["xp"][1]]),
           "dmdt": np.array([np.nan, ref["dmdt"][0]]),
           "fold": np.array([ref["fold"][0] + 2 * ref["fold"][1], ref["fold"][0]])}
    score, names = model.score({}, new)
    np.testing.assert_allclose(score, [2.0, 3.0 / np.sqrt(3)], rtol=1e-5)
    assert names.tolist() == ["fold", "xp+dmdt+fold"]


def test_fitted_models_are_scikit_learn_estimators(cat, logreg):
    from sklearn.base import clone

    ids, blocks, losses = analysis_inputs(cat)
    # the classifier: a clone refitted on the same labels gives the catalogue's predictions
    twin = clone(logreg.fitted)
    assert twin.get_params() == {"model": "logreg", "modality": "space", "seed": 0,
                                 "labels": "labels.best_class_name", "build_id": logreg.fitted.build_id}
    assert not hasattr(twin, "models_")
    names = labels_of(cat, "labels.best_class_name", ids.size).to_pylist()
    y = [v if v in logreg.classes else None for v in names]
    assert twin.fit(blocks, y).predict_table(ids, blocks).equals(logreg.predictions)
    assert twin.model_id_ == logreg.model_id
    predicted = twin.predict(blocks)
    assert set(predicted[predicted != np.array(None)]) <= set(logreg.classes)
    # the outlier model
    model = OutlierModel("isolation_forest", "space", seed=4).fit(blocks, losses)
    twin = clone(model)
    assert twin.get_params() == {"method": "isolation_forest", "modality": "space", "seed": 4}
    assert not hasattr(twin, "forests_")  # a clone is unfitted
    np.testing.assert_array_equal(twin.fit(blocks, losses).score_samples(blocks, losses),
                                  model.score_samples(blocks, losses))
    other = clone(model).set_params(seed=5).fit(blocks, losses).score_samples(blocks, losses)
    assert not np.allclose(other[np.isfinite(other)], model.score_samples(blocks, losses)[np.isfinite(other)])


def test_forests_score_new_codes_and_leave_unknown_block_sets_unscored(cat):
    ids, blocks, losses = analysis_inputs(cat, "all")
    has = np.stack([~np.isnan(blocks[b][:, 0]) for b in ("xp", "dmdt", "fold")], axis=1)
    full = has.all(axis=1)
    model = OutlierModel("isolation_forest", "all").fit({b: v[full] for b, v in blocks.items()}, {})
    assert list(model.forests_) == ["xp+dmdt+fold"]
    catalogue, _ = model.score({b: v[full] for b, v in blocks.items()}, {})
    typical = {b: np.median(v[full], axis=0, keepdims=True) for b, v in blocks.items()}
    far = {b: np.full((1, 5), -30.0, np.float32) for b in blocks}
    no_xp = {"xp": np.full((1, 5), np.nan, np.float32), "dmdt": typical["dmdt"], "fold": typical["fold"]}
    score = [model.score(x, {})[0][0] for x in (typical, far, no_xp)]
    assert score[0] < np.percentile(catalogue, 50) < np.percentile(catalogue, 99) < score[1]
    assert np.isnan(score[2])  # no forest was fitted on dm-dt + fold alone: not invented


def test_a_source_without_xp_is_on_the_map_among_its_class(cat, tables):
    xy, fitted = fit_map_model(cat, seed=0, n_steps=300)
    rows = {r["source_id"]: r for r in xy.to_pylist()}
    # the network maps the sources with every part; the others are placed by the parts they have
    assert fitted.parts_ == ("xp", "dmdt", "fold", "colour")
    from sklearn.base import clone

    assert clone(fitted).get_params() == {"modality": "space", "seed": 0, "map_params": {"n_steps": 300}}
    ids_all, vectors, _ = analysis_inputs(cat)
    on_map = fitted.transform(vectors)  # the same positions as the placed table, NaN where not placed
    where = {sid: i for i, sid in enumerate(ids_all)}
    np.testing.assert_array_equal(on_map[[where[s] for s in xy.column("source_id").to_pylist()]],
                                  np.column_stack([xy.column("x").to_numpy(), xy.column("y").to_numpy()]))
    assert np.isnan(on_map[:, 0]).sum() == len(ids_all) - xy.num_rows
    assert rows[QUERY_ID]["blocks"] == "xp+dmdt+fold+colour"
    assert rows[NO_XP_ID]["blocks"] == "dmdt+fold+colour"
    blocks = _blocks_of(tables)
    assert set(rows) == {sid for sid, b in blocks.items() if b}  # every source with a code
    assert all(set(r["blocks"].split("+")) <= set(blocks[sid].split("+")) for sid, r in rows.items())
    # on the map, the sources nearest a labelled source without XP are mostly of its class
    truth = dict(zip(tables["labels"].column("source_id").to_pylist(),
                     tables["labels"].column("best_class_name").to_pylist()))
    ids = np.array([sid for sid in rows if sid in truth])
    pos = np.array([[rows[s]["x"], rows[s]["y"]] for s in ids])
    purity = []
    for i in np.flatnonzero([rows[s]["blocks"] == "dmdt+fold+colour" for s in ids])[:50]:
        d = ((pos - pos[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        purity.append(np.mean([truth[s] == truth[ids[i]] for s in ids[np.argsort(d)[:10]]]))
    assert len(purity) >= 20 and np.mean(purity) >= 0.8


def test_many_references_are_searched_through_an_index_that_places_as_exact_search(cat, monkeypatch):
    """Above PLACE_EXACT_MAX references the sources lacking a part are placed through an IVF
    index: nearly where exact search puts them, alone as among others, and the index is not
    pickled with the map."""
    import pickle

    from latentcat.analysis import latent_map

    ids, vectors, _ = analysis_inputs(cat)
    fitted = latent_map.LatentMap(seed=0, map_params={"n_steps": 100}).fit(vectors)
    exact = fitted.transform(vectors)
    monkeypatch.setattr(latent_map, "PLACE_EXACT_MAX", 100)
    fitted.__dict__.pop("_reference_indexes", None)
    indexed = fitted.transform(vectors)
    assert all(type(i).__name__ == "IndexIVFFlat" for i in fitted._reference_indexes.values())
    placed = ~np.isnan(exact[:, 0])
    lacking = np.any([np.isnan(vectors[b][:, 0]) for b in fitted.parts_], axis=0) & placed
    assert lacking.sum() >= 50
    np.testing.assert_array_equal(np.isnan(indexed[:, 0]), ~placed)
    np.testing.assert_array_equal(indexed[~lacking], exact[~lacking])  # the network's sources are untouched
    spread = np.nanstd(exact, axis=0).mean()
    moved = np.linalg.norm(indexed[lacking] - exact[lacking], axis=1)
    assert np.median(moved) < 0.01 * spread and np.mean(moved < 0.1 * spread) >= 0.95
    one = np.flatnonzero(lacking)[:1]
    np.testing.assert_array_equal(fitted.transform({b: v[one] for b, v in vectors.items()}), indexed[one])
    assert "_reference_indexes" not in pickle.loads(pickle.dumps(fitted)).__dict__


def test_quantile_bins_keep_the_order_of_values_and_their_missing_rows():
    """Boosting's inputs become quantile-bin numbers: at most 255 per column, in the order of
    the values, NaN still NaN, and a value beyond the training range in the end bin."""
    from latentcat.analysis.classify import QuantileBins

    rng = np.random.default_rng(2)
    x = rng.standard_t(3, (5000, 3))
    x[::7, 1] = np.nan
    x[:, 2] = np.round(x[:, 2])  # few distinct values: one bin each
    bins = QuantileBins().fit(x)
    out = bins.transform(x)
    assert np.array_equal(np.isnan(out), np.isnan(x))
    for j in range(3):
        ok = ~np.isnan(x[:, j])
        assert np.unique(out[ok, j]).size <= 255
        order = np.argsort(x[ok, j], kind="stable")
        assert np.all(np.diff(out[ok, j][order]) >= 0)  # monotone
    assert np.unique(out[:, 2]).size == np.unique(x[:, 2]).size
    beyond = bins.transform(np.array([[1e9, -1e9, 0.0]]))
    assert beyond[0, 0] == np.nanmax(out[:, 0]) and beyond[0, 1] == 0
