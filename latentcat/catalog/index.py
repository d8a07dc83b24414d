"""FAISS indexes of the latent codes and of the search space, one per block set.

A *block set* is a non-empty combination of the three 5-D latent blocks, always in the
order xp, dm-dt, fold. The index of a block set holds every source that has all of its
blocks, the blocks concatenated; its ids are Gaia DR3 source_ids (int64). A query that
lacks XP is therefore answered by the ``dmdt+fold`` index, and nothing is ever zero-filled.
The search space (`latentcat.analysis.space`) is indexed the same way over its parts (xp,
dmdt, fold, colour), in files named ``space_<parts>.faiss``.

Below ``exact_max`` vectors an index is exact (``IndexFlatL2``); above it, IVF-Flat with
``nlist = 4 sqrt(N)`` lists and ``nprobe`` raised until recall@10 against exact search on
a sample of the catalogue's own vectors reaches ``target_recall``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from latentcat.atomic import write_file
from latentcat.blocks import BLOCK_DIM, BLOCK_SETS, BLOCKS, SPACE, block_set_name

EXACT_MAX = 1_000_000
"""Largest index built exact; above it the index is IVF-Flat."""

BLAS_THRESHOLD = 256
"""FAISS's ``distance_compute_blas_threshold``, set on import: an exact search of a batch of
(queries x dimensions) >= 256 values (16 queries of the 16-D search space, 52 of one 5-D block)
computes its distances as one matrix product (BLAS), which FAISS's own default (128,000) keeps
for batches of 8,000 16-D queries. Measured on one thread, 574,513 16-D vectors: a batch of 64
queries costs 0.71 ms per query with BLAS against 1.97 ms one by one, 256 queries 0.63 ms; a
single query stays on FAISS's direct scan (2.1 ms; 7.5 ms through BLAS). BLAS distances are
rounded (1 query in 700 at 256 queries had two neighbours swapped), so `search_many` asks for
`BLAS_MARGIN` more neighbours and ranks them by distances recomputed from the stored vectors."""

faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


def index_key(blocks: tuple[str, ...], space: bool = False) -> str:
    """Key of an index in ``build_info.indexes``: ``"dmdt+fold"``, or ``"space:dmdt+fold+colour"``."""
    return f"{SPACE}:{block_set_name(blocks)}" if space else block_set_name(blocks)


def index_path(index_dir: Path, blocks: tuple[str, ...], space: bool = False) -> Path:
    """File of the index of a block set (of the search space with ``space``) in an index folder."""
    return Path(index_dir) / f"{SPACE + '_' if space else ''}{'_'.join(blocks)}.faiss"


def codes_to_numpy(codes: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Split a (source_id, z_xp, z_dmdt, z_fold) Arrow table into numpy arrays.

    Returns
    -------
    ids : int64 (n,)
    blocks : dict of float32 (n, 5) arrays; rows of a missing block are NaN.
    """
    ids = codes.column("source_id").to_numpy().astype(np.int64, copy=False)
    out = {}
    for b in BLOCKS:
        col = codes.column(f"z_{b}").combine_chunks()
        values = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        start = col.offset * BLOCK_DIM
        arr = values[start : start + len(col) * BLOCK_DIM].reshape(len(col), BLOCK_DIM).copy()
        arr[col.is_null().to_numpy(zero_copy_only=False)] = np.nan
        out[b] = arr
    return ids, out


def vectors_for(
    ids: np.ndarray, blocks: dict[str, np.ndarray], block_set: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The ids and concatenated vectors of the sources that have every block of a set."""
    keep = np.ones(len(ids), dtype=bool)
    for b in block_set:
        keep &= ~np.isnan(blocks[b][:, 0])
    x = np.hstack([blocks[b][keep] for b in block_set]).astype(np.float32)
    return ids[keep], np.ascontiguousarray(x)


def _flat(x: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(x.shape[1]))
    index.add_with_ids(x, ids)
    return index


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(n, size), replace=False))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true neighbours (rows of ``truth``) found in the rows of ``found``.

    Both are (n_queries, k) id arrays; -1 marks an empty slot and never counts as a hit.
    """
    hits = [np.intersect1d(t[t >= 0], f[f >= 0]).size for t, f in zip(truth, found)]
    return float(np.sum(hits) / max(1, np.sum(truth >= 0)))


def build_index(
    x: np.ndarray,
    ids: np.ndarray,
    *,
    exact_max: int = EXACT_MAX,
    target_recall: float = 0.98,
    n_eval: int = 1000,
    seed: int = 0,
) -> tuple[faiss.Index, dict]:
    """Build the index of one block set.

    Parameters
    ----------
    x : float32 (n, d)
        Concatenated latent blocks.
    ids : int64 (n,)
        Gaia source_ids, the ids the index returns.
    exact_max : int
        Largest n indexed exactly; above it IVF-Flat is used.
    target_recall : float
        Recall@10 against exact search that ``nprobe`` is raised to reach (IVF only).
    n_eval : int
        Number of catalogue vectors used as queries to measure recall.
    seed : int
        Seed of the training and evaluation samples.

    Returns
    -------
    index : faiss.Index
    info : dict
        ``type``, ``n``, ``dim``, ``recall_at_10``, ``n_eval``, ``build_seconds`` (training,
        adding and the recall measurement) and, for IVF, ``nlist``, ``nprobe``.
    """
    t0 = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, d = x.shape
    if n <= exact_max:
        index = _flat(x, ids)
        return index, {"type": "flat", "n": n, "dim": d, "recall_at_10": 1.0, "n_eval": 0,
                       "build_seconds": round(time.perf_counter() - t0, 3)}

    rng = np.random.default_rng(seed)
    nlist = max(1, int(4 * np.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # the training sample is already chosen below
    index.train(x[_sample(n, 64 * nlist, rng)])
    index.add_with_ids(x, ids)

    queries = x[_sample(n, n_eval, rng)]
    exact = faiss.IndexFlatL2(d)
    exact.add(x)
    k = min(10, n)
    _, truth = exact.search(queries, k)
    truth = ids[truth]
    nprobe, recall = 1, 0.0
    while True:
        _, found = index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        recall = recall_at_k(found, truth)
        if recall >= target_recall or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    index.nprobe = nprobe
    info = {
        "type": "ivf_flat", "n": n, "dim": d, "nlist": nlist, "nprobe": nprobe,
        "recall_at_10": round(recall, 4), "n_eval": len(queries),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    return index, info


def write_index(index: faiss.Index, path: Path) -> None:
    """Write an index atomically: to a temporary file beside it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: faiss.write_index(index, str(tmp)))


def read_index(path: Path) -> faiss.Index:
    """Open an index memory-mapped and read-only, so that many processes share it.

    FAISS opens the inverted lists of a memory-mapped IVF index as ``OnDiskInvertedLists``,
    which by default start 32 threads to prefetch the probed lists on every search: 1.6-3 ms
    per query against 0.03 ms for the search itself (57,000 vectors, nprobe 32). The lists are
    in the page cache after the first touches, so prefetching is turned off.
    """
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if hasattr(lists, "prefetch_nthread"):
            lists.prefetch_nthread = 0
    return index


SELECTOR_MAX = 50_000
"""Largest allowed-id set searched with a FAISS IDSelector; larger sets are post-filtered (more
neighbours than k are asked for and the allowed ones kept)."""


FLAT_POSTFILTER = 0.1
"""On a flat index, an allowed set of at least this share of the index is post-filtered: a flat
scan that checks an IDSelector for every vector costs 2.5 times the plain search when a fifth
pass (57,000 vectors), asking for 126 neighbours 1.1 times; below a twentieth the selector is
the faster (it also skips the distances of the vectors it refuses)."""


class Allowed:
    """An allowed-id set prepared once for many searches (`search_many`): its ids sorted and
    unique, and, for a set of at most `SELECTOR_MAX` ids, a FAISS IDSelector built on first use
    and kept. A Catalog keeps one per ``where`` filter, so a filter costs its evaluation and its
    selector once, not once per query."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))
        self._selector = None

    def __len__(self) -> int:
        return int(self.ids.size)

    def selector(self):
        """The FAISS IDSelectorBatch of the set, or None for a set larger than `SELECTOR_MAX`."""
        if self._selector is None and 0 < self.ids.size <= SELECTOR_MAX:
            self._selector = faiss.IDSelectorBatch(np.ascontiguousarray(self.ids))
        return self._selector

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of ``ids`` (any shape) that are in the set."""
        if self.ids.size == 0:
            return np.zeros(np.shape(ids), bool)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, self.ids.size - 1)
        return self.ids[pos] == ids


def _ivf(index: faiss.Index):
    """The IVF part of an index, None for a flat one."""
    return index if isinstance(index, faiss.IndexIVF) else faiss.try_extract_index_ivf(index)


@functools.lru_cache(maxsize=64)
def _ivf_params(nprobe: int) -> faiss.SearchParametersIVF:
    """The IVF search parameters of an nprobe without a selector, made once (FAISS only reads them)."""
    return faiss.SearchParametersIVF(nprobe=nprobe)


def _raw_search(index: faiss.Index, q: np.ndarray, k: int, selector, nprobe: int | None):
    """One FAISS call: squared distances and ids (n, k), -1 where fewer were found. A single
    query runs on one OpenMP thread (threads only cost time for one vector); a batch uses them."""
    if nprobe is not None:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe) if selector is not None else _ivf_params(nprobe)
    else:
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
    if len(q) > 1:
        return index.search(q, k, params=params)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k, params=params)
    finally:
        faiss.omp_set_num_threads(threads)


BLAS_MARGIN = 4
"""Neighbours asked for beyond k when an exact search runs through BLAS, so that a neighbour
that rounding pushed just past the k-th place is still among those refined."""


def _exact_distances(index: faiss.Index, q: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances of each query to its found ids on a flat index, recomputed from the
    stored vectors, and each row re-sorted by them (stable); -1 slots stay last with distance inf.

    Distances through BLAS lose about 5 digits to cancellation (|x|^2 + |y|^2 - 2 x.y); every
    search of a flat index, one query or many, ends here, so a source's neighbours and their
    distances are the same to the last bit whatever batch it was searched in."""
    valid = found >= 0
    d2 = np.full(found.shape, np.inf, np.float32)
    if valid.any():
        diff = index.reconstruct_batch(found[valid]) - q[np.nonzero(valid)[0]]
        d2[valid] = (diff * diff).sum(axis=1)
    order = np.argsort(d2, axis=1, kind="stable")
    return np.take_along_axis(d2, order, axis=1), np.take_along_axis(found, order, axis=1)


def _plan(index: faiss.Index, k: int, allowed, exclude: bool):
    """How a search of ``index`` runs: (its IVF part or None, nprobe, FAISS selector, the allowed
    set, post-filter?, neighbours asked for), or None when nothing can be found."""
    ntotal = int(index.ntotal)
    if ntotal == 0:
        return None
    if allowed is not None and not isinstance(allowed, Allowed):
        allowed = Allowed(allowed)
    if allowed is not None and len(allowed) == 0:
        return None
    ivf = _ivf(index)
    nprobe = ivf.nprobe if ivf is not None else None
    selector = None
    if allowed is not None and (ivf is not None or len(allowed) < FLAT_POSTFILTER * ntotal):
        selector = allowed.selector()
    post = allowed is not None and selector is None
    kk = k + int(exclude)
    want = kk if not post else int(min(ntotal, 2 * kk * ntotal / len(allowed) + 16))
    return ivf, nprobe, selector, allowed, post, max(1, min(want, ntotal))


def search_one(index: faiss.Index, query: np.ndarray, k: int, allowed: Allowed | np.ndarray | None = None,
               exclude: int = -1) -> tuple[list[int], list[float]]:
    """`search_many` for one query vector (float32 (1, d), contiguous), on plain lists: the ids
    of its k nearest (fewer where fewer exist) and their Euclidean distances, ascending."""
    plan = _plan(index, k, allowed, exclude >= 0)
    if plan is None:
        return [], []
    ivf, nprobe, selector, allowed, post, want = plan
    if post:
        dist, found = search_many(index, query, k, allowed, np.array([exclude]))
        keep = found[0] >= 0
        return found[0, keep].tolist(), dist[0, keep].tolist()
    while True:
        dist, found = _raw_search(index, query, want, selector, nprobe)
        if ivf is None:
            dist, found = _exact_distances(index, query, found)
        ids = found[0].tolist()
        hits = [(i, d) for i, d in zip(ids, dist[0].tolist()) if i >= 0 and i != exclude][:k]
        if len(hits) >= k or ivf is None or nprobe >= ivf.nlist or -1 not in ids:
            break
        nprobe = min(ivf.nlist, nprobe * 4)
    return [i for i, _ in hits], [math.sqrt(max(d, 0.0)) for _, d in hits]


def search_many(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed: Allowed | np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest ids of each query vector, in one FAISS call per widening round.

    Parameters
    ----------
    index : faiss.Index
    queries : float32 (n, d)
    k : int
    allowed : Allowed or int64 array, optional
        Only these ids may be returned. A set of at most `SELECTOR_MAX` ids is searched through a
        FAISS IDSelector (on a flat index, only a set under `FLAT_POSTFILTER` of it); a larger
        one by asking for more neighbours than k (about k times the index size over the set
        size) and keeping the allowed ones.
    exclude : int64 (n,), optional
        An id each query must not return (its own source_id), -1 for none.

    Each query whose answer holds fewer than k ids is searched again with more lists probed
    (IVF: ``nprobe`` x 4) or more neighbours asked for (post-filter: x 4), until k come back or
    the whole index has been searched: k rows come back whenever k allowed vectors exist.

    Returns
    -------
    distance : float32 (n, k)
        Euclidean distances, ascending along each row; inf where fewer than k were found.
    ids : int64 (n, k)
        -1 where fewer than k were found.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"queries must be (n, d), got shape {q.shape}")
    n = len(q)
    out_d = np.full((n, k), np.inf, np.float32)
    out_i = np.full((n, k), -1, np.int64)
    exclude = np.full(n, -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    plan = _plan(index, k, allowed, bool((exclude >= 0).any())) if n else None
    if plan is None:
        return out_d, out_i
    ivf, nprobe, selector, allowed, post, want = plan
    if n == 1 and not post:
        found, dist = search_one(index, q, k, allowed, int(exclude[0]))
        out_i[0, :len(found)] = found
        out_d[0, :len(found)] = dist
        return out_d, out_i
    ntotal = int(index.ntotal)
    if ivf is None and n * q.shape[1] >= BLAS_THRESHOLD:  # distances through BLAS: refined below
        want = min(ntotal, want + BLAS_MARGIN)
    todo = np.arange(n)
    while todo.size:
        dist, found = _raw_search(index, q[todo], want, selector, nprobe)
        if ivf is None:
            dist, found = _exact_distances(index, q[todo], found)
        ok = (found >= 0) & (found != exclude[todo, None])
        if post:
            ok &= allowed.contains(found)
        short = ok.sum(axis=1) < k
        if short.any():
            more_lists = ivf is not None and nprobe < ivf.nlist and bool((found[short] < 0).any())
            more_ids = post and want < ntotal and bool((found[short] >= 0).all(axis=1).any())
            final = ~short if (more_lists or more_ids) else np.ones(len(todo), bool)
        else:
            more_lists = more_ids = False
            final = np.ones(len(todo), bool)
        # the first k allowed hits of each finished row, in rank order
        okf = ok[final]
        slot = np.cumsum(okf, axis=1) - 1
        r, c = np.nonzero(okf & (slot < k))
        rows = todo[final][r]
        out_i[rows, slot[r, c]] = found[final][r, c]
        out_d[rows, slot[r, c]] = np.sqrt(np.maximum(dist[final][r, c], 0))
        todo = todo[~final]
        if more_lists:
            nprobe = min(ivf.nlist, nprobe * 4)
        if more_ids:
            want = min(ntotal, want * 4)
    return out_d, out_i


def search(
    index: faiss.Index, query: np.ndarray, k: int, allowed_ids: np.ndarray | Allowed | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest ids of one query vector, optionally restricted to ``allowed_ids``
    (`search_many` with one query): k rows come back whenever k allowed vectors exist.

    Returns
    -------
    distance : float32 (m,)
        Euclidean distances, ascending (m <= k).
    ids : int64 (m,)
    """
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    dist, found = search_many(index, q, k, allowed_ids)
    ok = found[0] >= 0
    return dist[0][ok], found[0][ok]


def build_indexes(
    codes: pa.Table,
    index_dir: Path,
    *,
    exact_max: int = EXACT_MAX,
    target_recall: float = 0.98,
    seed: int = 0,
) -> dict[str, dict]:
    """Build and write the index of every latent block set that has at least one source.

    Parameters
    ----------
    codes : pyarrow.Table
        ``source_id, z_xp, z_dmdt, z_fold`` of every catalogue source.
    index_dir : Path
        Folder the ``*.faiss`` files are written to.

    Returns
    -------
    dict
        Block-set name -> index info (see `build_index`) plus its ``file``.
    """
    ids, blocks = codes_to_numpy(codes)
    return build_set_indexes(ids, blocks, BLOCK_SETS, index_dir, exact_max=exact_max,
                             target_recall=target_recall, seed=seed)


def build_set_indexes(
    ids: np.ndarray,
    vectors: dict[str, np.ndarray],
    sets,
    index_dir: Path,
    *,
    space: bool = False,
    exact_max: int = EXACT_MAX,
    target_recall: float = 0.98,
    seed: int = 0,
) -> dict[str, dict]:
    """Build and write the index of each set of ``sets`` that at least one source has in full.

    Parameters
    ----------
    ids : int64 (n,)
    vectors : dict
        Block (or search-space part) -> float32 (n, d) array, NaN rows where missing.
    sets : iterable of tuple
        The block sets to index.
    index_dir : Path
        Folder the ``*.faiss`` files are written to.
    space : bool
        The vectors are the search space's (`index_key`, `index_path`).

    Returns
    -------
    dict
        `index_key` -> index info (see `build_index`) plus its ``file``.
    """
    infos = {}
    for block_set in sets:
        set_ids, x = vectors_for(ids, vectors, block_set)
        if len(set_ids) == 0:
            continue
        index, info = build_index(
            x, set_ids, exact_max=exact_max, target_recall=target_recall, seed=seed
        )
        path = index_path(index_dir, block_set, space)
        write_index(index, path)
        infos[index_key(block_set, space)] = {**info, "file": f"{Path(index_dir).name}/{path.name}"}
    return infos
