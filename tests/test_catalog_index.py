"""latentcat.catalog.index: block sets, exact and IVF search, filtered search."""

from __future__ import annotations

import numpy as np
import pytest

from latentcat.blocks import BLOCK_SETS, parse_block_set
from latentcat.catalog import index as lc_index


def _data(n=3000, d=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(8, d))
    x = (centres[rng.integers(0, 8, n)] + rng.normal(0, 0.5, size=(n, d))).astype(np.float32)
    ids = np.sort(rng.choice(2**62, size=n, replace=False)).astype(np.int64)
    return x, ids


def _exact(x, ids, q, k, allowed=None):
    d = np.sqrt(((x - q) ** 2).sum(1))
    if allowed is not None:
        d[~np.isin(ids, allowed)] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return ids[order], d[order]


def test_block_sets_and_names():
    assert BLOCK_SETS[0] == ("xp", "dmdt", "fold")
    assert len(BLOCK_SETS) == 7  # every non-empty combination, once
    assert parse_block_set("all") == ("xp", "dmdt", "fold")
    assert parse_block_set("fold+dmdt") == ("dmdt", "fold")  # canonical order
    for bad in ("spectrum", "xp+xp", ""):
        with pytest.raises(ValueError):
            parse_block_set(bad)


@pytest.mark.parametrize("exact_max", [10**6, 100])
@pytest.mark.parametrize("selector_max", [10**6, 0])
def test_filtered_search_returns_the_k_nearest_allowed(monkeypatch, exact_max, selector_max):
    """Both filter strategies (IDSelector, post-filter) on exact and IVF indexes."""
    monkeypatch.setattr(lc_index, "SELECTOR_MAX", selector_max)
    x, ids = _data()
    index, info = lc_index.build_index(x, ids, exact_max=exact_max, target_recall=0.9)
    assert info["type"] == ("flat" if exact_max > len(ids) else "ivf_flat")
    rng = np.random.default_rng(1)
    for share in (0.5, 0.01):  # a loose and a selective filter
        allowed = ids[rng.random(len(ids)) < share]
        q = x[rng.integers(len(x))]
        dist, found = lc_index.search(index, q, 10, allowed)
        assert len(found) == 10 and np.isin(found, allowed).all()
        want, want_d = _exact(x, ids, q, 10, allowed)
        if info["type"] == "flat":
            assert found.tolist() == want.tolist()
            np.testing.assert_allclose(dist, want_d, rtol=1e-4, atol=1e-5)
        else:
            assert len(np.intersect1d(found, want)) >= 8
        assert np.all(np.diff(dist) >= 0)


def test_k_larger_than_allowed_set_returns_what_exists():
    x, ids = _data(500, 5)
    index, _ = lc_index.build_index(x, ids, exact_max=50)
    _, found = lc_index.search(index, x[0], 10, ids[:4])
    assert sorted(found.tolist()) == sorted(ids[:4].tolist())


def test_recall_at_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert lc_index.recall_at_k(truth, truth) == 1.0
    assert lc_index.recall_at_k(np.array([[1, 2, 9], [-1, -1, -1]]), truth) == pytest.approx(2 / 6)


@pytest.mark.parametrize("exact_max", [10**6, 100])
def test_search_many_answers_each_query_as_one_search(exact_max):
    """One call for many queries: each row as `search` gives it, the excluded id left out, and
    k rows whenever k allowed vectors exist (IVF widens nprobe for the rows that need it)."""
    x, ids = _data()
    index, _ = lc_index.build_index(x, ids, exact_max=exact_max, target_recall=0.9)
    rng = np.random.default_rng(2)
    rows = rng.choice(len(ids), 40, replace=False)
    allowed = lc_index.Allowed(ids[rng.random(len(ids)) < 0.02])  # ~60 ids: a selective filter
    exact = exact_max > len(ids)
    for sel in (None, allowed):
        dist, found = lc_index.search_many(index, x[rows], 10, sel, exclude=ids[rows])
        assert dist.shape == found.shape == (40, 10)
        assert (found >= 0).all() and not (found == ids[rows][:, None]).any()
        assert np.all(np.diff(dist, axis=1) >= 0)
        for r, row in enumerate(rows):
            one_d, one = lc_index.search(index, x[row], 11, sel)
            keep = one != ids[row]
            if exact:
                assert found[r].tolist() == one[keep][:10].tolist()
                np.testing.assert_allclose(dist[r], one_d[keep][:10], rtol=1e-4, atol=1e-4)
            if sel is not None:
                assert allowed.contains(found[r]).all()
                if exact:
                    want, _ = _exact(x, ids, x[row], 11, allowed.ids)
                    assert found[r].tolist() == [i for i in want if i != ids[row]][:10]
    # fewer allowed than k: what exists, then -1 and inf
    dist, found = lc_index.search_many(index, x[:2], 10, ids[:4])
    assert sorted(found[0][found[0] >= 0].tolist()) == sorted(ids[:4].tolist())
    assert (found[:, 4:] == -1).all() and np.isinf(dist[:, 4:]).all()


def test_read_index_turns_off_prefetch_threads(tmp_path):
    """A memory-mapped IVF index opens with OnDiskInvertedLists, whose 32 prefetch threads per
    search cost 50 times the search itself; read_index turns them off."""
    import faiss

    x, ids = _data()
    index, _ = lc_index.build_index(x, ids, exact_max=100, target_recall=0.9)
    lc_index.write_index(index, tmp_path / "ivf.faiss")
    opened = lc_index.read_index(tmp_path / "ivf.faiss")
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(opened).invlists)
    assert getattr(lists, "prefetch_nthread", 0) == 0
    _, want = index.search(x[:5], 10)
    _, got = opened.search(x[:5], 10)
    assert (got == want).all()
