"""More like these (Catalog.like): a rare class hidden in a crowd is found from some of its
members, the ranking follows its documented rule exactly, and the self-check reports it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_fixtures import NO_XP_ID, QUERY_ID, make_tables
from latentcat.catalog import store
from latentcat.errors import LatentcatError
from latentcat.query import open as open_catalog

N = 3000
N_RARE = 45


def _with_fold(emb: pa.Table, rows: np.ndarray, shift: np.ndarray) -> pa.Table:
    """The embeddings with the fold block of ``rows`` moved by ``shift``."""
    folds = emb.column("z_fold").to_pylist()
    for r in rows:
        folds[r] = (np.asarray(folds[r]) + shift).tolist()
    return emb.set_column(emb.schema.get_field_index("z_fold"), "z_fold", pa.array(folds, pa.list_(pa.float32())))


@pytest.fixture(scope="module")
def rare(tmp_path_factory):
    """A catalogue of 3,000 synthetic sources in which 45 RRAB sources (1.5%) form a rare class
    hidden in the RRAB crowd: the crowd's XP and dm-dt codes, and a fold code moved by 1.4 in one
    direction (the crowd scatters by 0.4 per value, 0.9 over the block), so that in the search
    space most of each one's nearest neighbours are crowd sources. Returns (catalogue folder,
    the rare source_ids)."""
    tables = make_tables(N, seed=21, with_arrays=False)
    labels = dict(zip(tables["labels"].column("source_id").to_pylist(),
                      tables["labels"].column("best_class_name").to_pylist()))
    emb = tables["embeddings"]
    ids = np.asarray(emb.column("source_id"))
    lc = np.asarray(emb.column("has_fold"))
    crowd = np.flatnonzero(np.array([labels.get(i) == "RRAB" for i in ids.tolist()]) & lc)
    rng = np.random.default_rng(4)
    chosen = np.sort(rng.choice(crowd[~np.isin(ids[crowd], [QUERY_ID, NO_XP_ID])], N_RARE, replace=False))
    direction = rng.normal(size=5)
    shift = 1.4 * direction / np.linalg.norm(direction)
    tables["embeddings"] = _with_fold(emb, chosen, shift)
    root = tmp_path_factory.mktemp("rare")
    for name in ("stage", "features", "embeddings"):
        (root / name).mkdir()
    pq.write_table(tables["sources"], root / "stage" / "sources.parquet")
    pq.write_table(tables["labels"], root / "stage" / "labels.parquet")
    pq.write_table(tables["features"], root / "features" / "features-00000.parquet")
    pq.write_table(tables["embeddings"], root / "embeddings" / "embeddings-00000.parquet")
    store.write_catalog(root / "cat", build_info={"seed": 21}, stage_dir=root / "stage",
                        features_dir=root / "features", emb_dir=root / "embeddings")
    return root / "cat", ids[chosen]


@pytest.fixture(scope="module")
def cat(rare):
    with open_catalog(rare[0]) as c:
        yield c


def test_hidden_members_of_a_rare_class_rank_far_above_chance(cat, rare):
    _, members = rare
    given, hidden = members[:30], members[30:]
    # hidden: most of a rare source's 10 nearest neighbours are crowd sources
    near = [np.isin(cat.similar(int(m), k=10).column("source_id").to_numpy(), members).mean() for m in members]
    assert np.mean(near) < 0.5
    got = cat.like(given, top=N)
    info = json.loads(got.schema.metadata[b"like_info"])
    assert info["blocks"] == "space:dmdt+fold"  # what every member has: every light curve is ranked
    ranked = got.column("source_id").to_numpy()
    assert len(ranked) == info["ranked"] and not np.isin(given, ranked).any()
    rank = np.array([np.flatnonzero(ranked == h)[0] + 1 for h in hidden])
    top = int(np.ceil(0.01 * info["ranked"]))
    # chance puts 1% of them in the top 1% and their median rank at half the catalogue
    assert np.mean(rank <= top) >= 0.3, rank
    assert np.mean(rank <= 5 * top) >= 0.7, rank
    assert np.median(rank) <= 0.05 * info["ranked"], rank
    # the self-check sees the same: held-out members in the top 1% at 30 times chance or more
    check = info["self_check"]
    assert check["held_out"] == 6 and check["chance"] == 0.01 and check["top_1pct"] == int(np.ceil(0.01 * check["ranked"]))
    assert check["recall"] >= 0.3 and check["median_rank"] <= 0.05 * check["ranked"]


def test_the_ranking_follows_the_documented_rule(cat, rare):
    _, members = rare
    given = members[:12]
    got = cat.like(given, top=50)
    info = json.loads(got.schema.metadata[b"like_info"])
    rows = cat.sql("SELECT source_id, s_xp, s_dmdt, s_fold, s_colour FROM space ORDER BY source_id").to_pylist()
    parts = info["blocks"].removeprefix("space:").split("+")
    vec = {r["source_id"]: np.concatenate([r[f"s_{p}"] for p in parts]) for r in rows
           if all(r[f"s_{p}"] is not None for p in parts)}
    used = [int(m) for m in given if int(m) in vec]
    assert info["used"] == len(used) and info["m"] == min(5, len(used))
    assert info["set_aside"] == sorted(int(m) for m in given if int(m) not in vec)
    x = np.array([vec[m] for m in used])
    score = {}
    for sid, v in vec.items():
        if sid in set(given.tolist()):
            continue
        d = np.sort(np.sqrt(((x - v) ** 2).sum(axis=1)))
        score[sid] = d[: info["m"]].mean()
    want = sorted(score, key=lambda s: (score[s], s))[:50]
    assert got.column("source_id").to_pylist() == want
    np.testing.assert_allclose(got.column("score").to_numpy(), [score[s] for s in want], rtol=1e-4)
    assert got.column("rank").to_pylist() == list(range(1, 51))
    assert set(got.column("nearest_member").to_pylist()) <= set(used)
    assert info["ranked"] == len(score)
    assert "phot_g_mean_mag" in got.column_names  # metadata joined


def test_the_parts_compared_and_the_members_set_aside(cat, rare):
    _, members = rare
    have = {r["source_id"]: r["parts"] for r in cat.sql("SELECT source_id, parts FROM space").to_pylist()}
    with_xp = [int(m) for m in members if have[int(m)] == "xp+dmdt+fold+colour"]
    without_xp = [int(m) for m in members if have[int(m)] == "dmdt+fold+colour"]
    no_light_curve = sorted(s for s, p in have.items() if p == "xp+colour")
    assert len(with_xp) >= 5 and len(without_xp) >= 3 and no_light_curve

    def info(ids, **kw):
        got = cat.like(ids, top=5, with_meta=False, **kw)
        assert got.column_names == ["rank", "source_id", "score", "nearest_member", "blocks"]
        assert not set(ids) & set(got.column("source_id").to_pylist())  # given, so never ranked
        return json.loads(got.schema.metadata[b"like_info"])

    # the parts every member has: all four, or without XP as soon as one member lacks it
    assert info(with_xp[:5])["blocks"] == "space:xp+dmdt+fold+colour"
    got = info(with_xp[:5] + without_xp[:1])
    assert got["blocks"] == "space:dmdt+fold+colour" and got["used"] == 6 and got["set_aside"] == []
    # a member without a light curve among light curves: they share only the colour, so the
    # parts that compare the most member values are used and it is set aside
    got = info(without_xp[:3] + no_light_curve[:1])
    assert got["blocks"] == "space:dmdt+fold+colour" and got["used"] == 3
    assert got["set_aside"] == no_light_curve[:1]
    # named parts are used as given
    got = cat.like(with_xp[:3], top=5, modality="space:fold")
    assert set(got.column("blocks").to_pylist()) == {"space:fold"}
    assert json.loads(got.schema.metadata[b"like_info"])["ranked"] > \
        json.loads(cat.like(with_xp[:3], top=5).schema.metadata[b"like_info"])["ranked"]
    with pytest.raises(LatentcatError, match="no source of the set has xp"):
        cat.like(without_xp[:3], modality="space:xp")


def test_where_filter_and_errors(cat, rare):
    _, members = rare
    got = cat.like(members[:10], top=20, where="phot_g_mean_mag < 16")
    assert got.num_rows == 20 and max(got.column("phot_g_mean_mag").to_pylist()) < 16
    one = cat.like([int(members[0])], top=3)
    assert json.loads(one.schema.metadata[b"like_info"])["self_check"] is None  # nothing to hold out
    with pytest.raises(LatentcatError, match="at least one source_id"):
        cat.like([])
    with pytest.raises(LatentcatError, match=r"^source_id 42 is not in the catalogue \(and 1 more"):
        cat.like([int(members[0]), 42, 43])
    with pytest.raises(LatentcatError, match="top must be between 1 and 10000"):
        cat.like(members[:3], top=0)
    with pytest.raises(LatentcatError, match="bad where filter"):
        cat.like(members[:3], where="no_such_column > 1")
    with pytest.raises(LatentcatError, match="takes source_ids"):
        cat.like(np.zeros((2, 16)))


def test_the_self_check_estimated_on_a_sample_agrees_with_the_exact_one():
    from latentcat.analysis.like import self_check

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60_000, 6)).astype(np.float32)
    members = rng.choice(60_000, 150, replace=False)
    x[members] = 1.5 + 0.8 * rng.standard_normal((150, 6))  # a class beside the crowd: some held-out members
    x[rng.choice(60_000, 300, replace=False)] = 1.5 + 0.8 * rng.standard_normal((300, 6))  # rank high, and its others
    exact = self_check(x, members, seed=4)
    estimate = self_check(x, members, seed=4, sample=10_000)
    assert exact["sampled"] is None and estimate["sampled"] == 10_000
    assert exact["ranked"] == estimate["ranked"] and exact["top_1pct"] == estimate["top_1pct"]
    assert abs(estimate["recall"] - exact["recall"]) <= 0.1 and 0.2 <= exact["recall"] < 1
    assert abs(estimate["median_rank"] - exact["median_rank"]) <= 0.2 * exact["median_rank"] + 20


@pytest.mark.parametrize("n_members, spread", [(300, 0.6), (1200, 1.5), (90, 3.0)])
def test_the_pruned_ranking_equals_scoring_every_row(n_members, spread):
    """best_rows skips the rows its cluster bound rules out: the same rows, scores and nearest
    members as scoring all of them, for tight and loose sets, with a filter."""
    from latentcat.analysis.like import best_rows, set_scores

    rng = np.random.default_rng(n_members)
    centres = rng.standard_normal((12, 10)) * 3
    label = rng.integers(0, 12, 80_000)
    x = (centres[label] + rng.standard_normal((80_000, 10))).astype(np.float32)
    members = rng.choice(np.flatnonzero(label == 4), n_members, replace=False)
    x[members] = centres[4] + spread * rng.standard_normal((n_members, 10))
    ids = rng.permutation(80_000).astype(np.int64) * 3
    eligible = rng.random(80_000) < 0.9
    eligible[members] = False
    rows, score, nearest = best_rows(x, x[members], 5, 100, eligible, ids)
    every, every_nearest = set_scores(x, x[members], 5)
    pos = np.flatnonzero(eligible)
    order = pos[np.lexsort((ids[pos], every[pos]))][:100]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(score, every[order], rtol=1e-5)  # float32 sums in other batches
    np.testing.assert_array_equal(nearest, every_nearest[order])


def test_the_pruned_self_check_equals_scoring_every_candidate(monkeypatch):
    from latentcat.analysis import like

    rng = np.random.default_rng(5)
    x = rng.standard_normal((60_000, 8)).astype(np.float32)
    members = rng.choice(60_000, 400, replace=False)
    x[members] = 1.2 + 0.7 * rng.standard_normal((400, 8))
    pruned = like.self_check(x, members, seed=6)
    monkeypatch.setattr(like, "PRUNE_MIN_MEMBERS", 10**9)  # every candidate scored
    every = like.self_check(x, members, seed=6)
    assert pruned == every and 0 < every["recall"] < 1
