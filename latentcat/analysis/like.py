"""More like these: the rule `Catalog.like` ranks sources by, on plain arrays.

A source's score is its mean Euclidean distance to its m = min(`LIKE_M`, members) nearest
members of the set (lower is more alike), exact (FAISS brute force). `best_rows` finds the
best-scored rows without scoring the rows that cannot be among them (a bound from the
members' clusters), exactly. The self-check holds out a
random fifth of the members, ranks every other source by the rest, and reports the share of
held-out members in the top 1% (chance: 1%). `benchmarks/quality.py` runs the same functions on
simulated surveys.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from latentcat.analysis.space import cluster_radii

LIKE_M = 5
"""A source's score is its mean distance to its m = min(LIKE_M, set size) nearest members."""

LIKE_HOLDOUT = 0.2
"""Share of the set the self-check holds out (at least one member)."""

LIKE_TOP_SHARE = 0.01
"""The self-check counts the held-out members ranked within this share of the candidates."""

SELF_CHECK_SAMPLE = 200_000
"""Above this many candidates the self-check ranks the held-out members against a random sample
of this many (their ranks scaled to the whole): the ranking itself stays exact, and the check,
which only estimates a recall, costs a fraction of it at millions of sources."""


def set_scores(x: np.ndarray, members: np.ndarray, m: int, chunk: int = 1 << 18):
    """Each row's mean Euclidean distance to its m nearest ``members`` (exact, FAISS brute
    force in chunks of rows), and the position of the nearest member."""
    members = np.ascontiguousarray(members, np.float32)
    score = np.empty(len(x), np.float32)
    nearest = np.empty(len(x), np.int64)
    for start in range(0, len(x), chunk):
        d2, i = faiss.knn(np.ascontiguousarray(x[start:start + chunk], np.float32), members, m)
        score[start:start + chunk] = np.sqrt(np.maximum(d2, 0)).mean(axis=1)
        nearest[start:start + chunk] = i[:, 0]
    return score, nearest


PRUNE_MIN_MEMBERS = 64
"""`best_rows` scores every row for sets up to this size (the bound would cost more than it saves)."""


def best_rows(x: np.ndarray, members: np.ndarray, m: int, top: int, eligible: np.ndarray,
              ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``top`` rows of ``x`` where ``eligible``, by (score, ``ids``), as `set_scores`
    would rank them all: their row numbers, scores and nearest members.

    Exact, without scoring every row: `lower_bounds` bounds each row's score from below (the
    mean distance to its m nearest members is at least the nearest). The rows with the
    smallest bounds are scored first; the ``top``-th best score found is then a cut, and only
    the rows whose bound is below it are scored too."""
    pos = np.flatnonzero(eligible)
    members = np.ascontiguousarray(members, np.float32)
    first = max(4 * top, 4096)
    if members.shape[0] <= PRUNE_MIN_MEMBERS or pos.size <= 2 * first:
        score, nearest = set_scores(x[pos], members, m)
        pick = _best(score, ids[pos], top)
        return pos[pick], score[pick], nearest[pick]
    bound = lower_bounds(x[pos], members)
    scored = np.argpartition(bound, first)[:first]
    score, nearest = set_scores(x[pos[scored]], members, m)
    cut = np.partition(score, top - 1)[top - 1]
    more = np.setdiff1d(np.flatnonzero(bound <= cut), scored, assume_unique=True)
    if more.size:
        more_score, more_nearest = set_scores(x[pos[more]], members, m)
        scored = np.concatenate([scored, more])
        score, nearest = np.concatenate([score, more_score]), np.concatenate([nearest, more_nearest])
    pick = _best(score, ids[pos[scored]], top)
    return pos[scored[pick]], score[pick], nearest[pick]


def lower_bounds(x: np.ndarray, members: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """For each row of ``x``, a lower bound of its distance to the nearest of ``members`` (so of
    its score): the members are grouped by k-means into about sqrt(members) clusters, and a
    row's distance to a cluster's centre less the cluster's radius is at most its distance to
    any member of that cluster. Costs a few percent of scoring the row."""
    members = np.ascontiguousarray(members, np.float32)
    k = max(1, int(math.sqrt(members.shape[0])))
    kmeans = faiss.Kmeans(members.shape[1], k, niter=10, seed=1, min_points_per_centroid=1)
    kmeans.train(members)
    centres = kmeans.centroids
    _, cluster = kmeans.index.search(members, 1)
    radius = cluster_radii(members, centres, cluster[:, 0])
    bound = np.empty(len(x), np.float32)
    for start in range(0, len(x), chunk):
        d2 = faiss.pairwise_distances(np.ascontiguousarray(x[start:start + chunk], np.float32), centres)
        bound[start:start + chunk] = (np.sqrt(np.maximum(d2, 0)) - radius).min(axis=1)
    return bound * (1 - 1e-4) - 1e-6  # room for the rounding of distances computed two ways


def _best(score: np.ndarray, ids: np.ndarray, top: int) -> np.ndarray:
    """Positions of the ``top`` rows by (score, id)."""
    pos = np.arange(score.size)
    if pos.size > top:
        cut = np.partition(score, top - 1)[top - 1]
        pos = pos[score <= cut]
    return pos[np.lexsort((ids[pos], score[pos]))][:top]


def self_check(x: np.ndarray, member_at: np.ndarray, seed: int, sample: int = SELF_CHECK_SAMPLE) -> dict | None:
    """The self-check of the rule: hold out a random fifth of the members (``seed``), rank every
    other row of ``x`` by the rest, and count the held-out members within the top
    `LIKE_TOP_SHARE`. ``member_at``: the members' row numbers in ``x``. None for fewer than two
    members. Above ``sample`` candidates a held-out member's rank is estimated from a random
    sample of that many candidates (``sampled`` in the answer)."""
    n = member_at.size
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    held = rng.choice(n, max(1, round(n * LIKE_HOLDOUT)), replace=False)
    train, out = np.delete(member_at, held), member_at[held]
    m = min(LIKE_M, train.size)
    ranked = np.ones(len(x), bool)
    ranked[train] = False
    n_ranked = int(ranked.sum())
    top = max(1, math.ceil(LIKE_TOP_SHARE * n_ranked))
    rows = np.flatnonzero(ranked)
    sampled = rows.size > sample
    if sampled:  # the candidates' scores on a random sample, the held-out members' exactly
        rows = np.sort(rng.choice(rows, sample, replace=False))
    # a candidate counts for a held-out member when its score is lower: the candidates whose
    # bound exceeds every held-out score never count, and are not scored
    held_score = set_scores(x[out], x[train], m)[0]
    scored = rows[lower_bounds(x[rows], x[train]) <= held_score.max()] if train.size > PRUNE_MIN_MEMBERS else rows
    score, _ = set_scores(x[scored], x[train], m)
    if not sampled:  # the held-out members are candidates: their scores as computed with the others
        held_score = score[np.searchsorted(scored, out)]
    ranks = np.searchsorted(np.sort(score), held_score, side="left") * (n_ranked / rows.size) + 1
    return {"held_out": int(out.size), "seed": int(seed), "m": m, "ranked": n_ranked,
            "top_1pct": top, "recall": round(float(np.mean(ranks <= top)), 4), "chance": LIKE_TOP_SHARE,
            "median_rank": float(np.median(ranks)), "sampled": int(rows.size) if sampled else None}
