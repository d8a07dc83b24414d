"""The search space laid out for SQL: one fixed-size array per source and part set, and IVF lists.

The ``space`` table holds each source's parts as separate nullable arrays (s_xp, s_dmdt,
s_fold, s_colour). A search compares a query on the parts it has, among the sources that have
them all; doing that on the separate arrays costs a concatenation per row and is several times
slower than a plain scan. ``space_search`` holds, for every part set a search can use (the sets
the catalogue's FAISS space indexes are built for, `latentcat.analysis.space.present_sets`),
one row per source that has every part of the set:

    part_set   UTINYINT    the parts, one bit each (`PART_BITS`: xp 1, dmdt 2, fold 4, colour 8)
    list_id    INTEGER     the source's IVF list within that part set
    source_id  BIGINT
    v          FLOAT[16]   the set's parts packed in order, zeros after them

so that one ``array_distance(v, q)`` is the distance on exactly those parts (the zeros add
nothing), as FAISS computes it. The table is ordered by (part_set, list_id, source_id): a
search reads only its part set's rows (DuckDB prunes the others by their zone maps), and an
indexed search only the rows of the lists it probes.

``space_lists`` holds each part set's IVF lists: ``LIST_SIZE`` sources per list on average,
the centroids of a k-means (FAISS) on the packed vectors, each source in the list of its
nearest centroid, and each list's radius (the farthest of its sources from the centroid), with
which the exact macros ``similar_to`` and ``similar_to_many`` skip the lists too far from a
query to hold one of its k nearest. ``similar_to_approx(id, k, nprobe)`` (sql/macros.sql) compares the query
with the sources of its ``nprobe`` nearest lists only. The ``nprobe`` that reaches recall@10
``TARGET_RECALL`` against the exact search (measured on up to 1,000 catalogue sources, with a
FAISS IVF index of the same centroids and lists, which searches exactly as the macro does) is
stored per part set in ``space_lists.nprobe`` and in ``build_info.sql_lists``; the macro uses
it when nprobe is NULL.
"""

from __future__ import annotations

import duckdb
import faiss
import numpy as np
import pyarrow as pa

from latentcat.analysis.space import PART_DIM, cluster_radii, present_sets, vectors_of
from latentcat.catalog.index import recall_at_k

PART_BITS = {"xp": 1, "dmdt": 2, "fold": 4, "colour": 8}
"""Bit of each part in ``part_set``."""

WIDTH = sum(PART_DIM.values())
"""Length of the packed vectors (all four parts: 16)."""

LIST_SIZE = 2048
"""Sources per IVF list on average (DuckDB reads columns in vectors of 2,048 rows). A part set
of fewer than twice this is one list: its indexed search is the exact one."""

TARGET_RECALL = 0.95
"""Recall@10 against the exact search that a part set's stored ``nprobe`` reaches."""

N_EVAL = 1000
"""Catalogue sources used as queries to measure that recall."""


def part_set_bits(parts: tuple[str, ...]) -> int:
    """The ``part_set`` number of a set of parts, e.g. ("dmdt", "fold", "colour") -> 14."""
    return sum(PART_BITS[p] for p in parts)


def packed(vectors: dict[str, np.ndarray], parts: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """float32 (len(rows), WIDTH): the ``parts`` of ``rows`` side by side, zeros after them."""
    x = np.zeros((len(rows), WIDTH), np.float32)
    col = 0
    for p in parts:
        x[:, col:col + PART_DIM[p]] = vectors[p][rows]
        col += PART_DIM[p]
    return x


def ivf_lists(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """IVF lists of packed vectors for the indexed SQL search.

    Parameters
    ----------
    x : float32 (n, WIDTH)
    seed : int
        Seed of the k-means and of the recall sample.

    Returns
    -------
    list_id : int32 (n,)
        Each vector's list: that of its nearest centroid.
    centroids : float32 (nlist, WIDTH)
    radius : float32 (nlist,)
        Each list's largest distance from its centroid to one of its vectors: no vector of the
        list is nearer a query than (its distance to the centroid) - radius.
    nprobe : int
        Lists to probe for recall@10 >= ``TARGET_RECALL`` (all of them if none fewer does).
    recall : float
        That recall, measured on up to ``N_EVAL`` of the vectors as queries.
    """
    n, d = x.shape
    nlist = max(1, n // LIST_SIZE)
    if nlist == 1:
        centroids = x.mean(axis=0, keepdims=True).astype(np.float32)
        return np.zeros(n, np.int32), centroids, cluster_radii(x, centroids, np.zeros(n, np.int32)), 1, 1.0
    rng = np.random.default_rng(seed)
    kmeans = faiss.Kmeans(d, nlist, niter=10, seed=seed, max_points_per_centroid=64)
    kmeans.train(x[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))])
    # lists numbered along the centroids' main axis: the lists a query probes, all near it,
    # then mostly lie in a few neighbouring row groups of space_search
    centroids = kmeans.centroids - kmeans.centroids.mean(axis=0)
    axis = np.linalg.svd(centroids, full_matrices=False)[2][0]
    centroids = np.ascontiguousarray(kmeans.centroids[np.argsort(centroids @ axis, kind="stable")], np.float32)
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(centroids)
    _, nearest = quantizer.search(x, 1)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    ivf.is_trained = True  # the centroids above: lists as the SQL search sees them
    ivf.add(x)
    pick = np.sort(rng.choice(n, min(n, N_EVAL), replace=False))
    exact = faiss.IndexFlatL2(d)
    exact.add(x)
    k = min(11, n)  # ten neighbours besides the query itself, which counts as an empty slot
    _, truth = exact.search(x[pick], k)
    truth[truth == pick[:, None]] = -1
    nprobe = 1
    while True:
        _, found = ivf.search(x[pick], k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        found[found == pick[:, None]] = -1
        recall = recall_at_k(found, truth)
        if recall >= TARGET_RECALL or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    list_id = nearest[:, 0].astype(np.int32)
    return list_id, centroids, cluster_radii(x, centroids, list_id), nprobe, recall


def write_space_search(con: duckdb.DuckDBPyConnection, seed: int = 0) -> dict:
    """(Re)write ``space_search`` and ``space_lists`` from the catalogue's ``space`` table.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A writable catalogue connection whose ``space`` table is complete, with the tables of
        sql/space_search.sql (`latentcat.catalog.store.sql_script` ``("space_search")``
        creates them, replacing older ones).
    seed : int

    Returns
    -------
    dict
        Part-set name -> ``rows``, ``nlist``, ``nprobe`` and ``recall_at_10`` (of ``nprobe``
        lists against the exact search), for ``build_info.sql_lists``.
    """
    table = con.sql("SELECT source_id, s_xp, s_dmdt, s_fold, s_colour FROM space ORDER BY source_id").to_arrow_table()
    ids = table.column("source_id").to_numpy().astype(np.int64, copy=False)
    vectors = vectors_of(table)
    con.execute("DELETE FROM space_search")
    con.execute("DELETE FROM space_lists")
    info = {}
    for parts in sorted(present_sets(vectors) if len(ids) else [], key=part_set_bits):  # the table's order
        rows = np.flatnonzero(np.all([np.isfinite(vectors[p][:, 0]) for p in parts], axis=0))
        x = packed(vectors, parts, rows)
        list_id, centroids, radius, nprobe, recall = ivf_lists(x, seed)
        bits = part_set_bits(parts)
        order = np.lexsort((ids[rows], list_id))
        con.register("_search_rows", pa.table({
            "part_set": pa.array(np.full(len(rows), bits, np.uint8)),
            "list_id": pa.array(list_id[order]),
            "source_id": pa.array(ids[rows][order]),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(x[order].reshape(-1)), WIDTH),
        }))
        con.execute("INSERT INTO space_search SELECT part_set, list_id, source_id, v FROM _search_rows")
        con.unregister("_search_rows")
        con.register("_list_rows", pa.table({
            "part_set": pa.array(np.full(len(centroids), bits, np.uint8)),
            "list_id": pa.array(np.arange(len(centroids), dtype=np.int32)),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.reshape(-1)), WIDTH),
            "radius": pa.array(radius),
            "nprobe": pa.array(np.full(len(centroids), nprobe, np.int32)),
        }))
        con.execute("INSERT INTO space_lists SELECT part_set, list_id, centroid, radius, nprobe FROM _list_rows")
        con.unregister("_list_rows")
        info["+".join(parts)] = {"rows": int(len(rows)), "nlist": int(len(centroids)), "nprobe": int(nprobe),
                                 "recall_at_10": round(recall, 4)}
    return info


__all__ = ["LIST_SIZE", "PART_BITS", "TARGET_RECALL", "ivf_lists", "packed", "part_set_bits", "write_space_search"]
