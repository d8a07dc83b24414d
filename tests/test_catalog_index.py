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
