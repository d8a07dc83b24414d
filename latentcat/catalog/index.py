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

import os
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from latentcat.blocks import BLOCK_DIM, BLOCK_SETS, BLOCKS, SPACE, block_set_name

EXACT_MAX = 1_000_000
"""Largest index built exact; above it the index is IVF-Flat."""


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_index(path: Path) -> faiss.Index:
    """Open an index memory-mapped and read-only, so that many processes share it."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)


SELECTOR_MAX = 50_000
"""Largest allowed-id set searched with a FAISS IDSelector; larger sets are post-filtered."""


def _search_one(index: faiss.Index, q: np.ndarray, k: int, selector=None):
    """One query, on one OpenMP thread (threads only cost time for a single vector)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            return index.search(q, k, params=params)
        nprobe = ivf.nprobe
        while True:  # widen until k ids come back or every list has been probed
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            dist, found = index.search(q, k, params=params)
            if (found >= 0).sum() >= k or nprobe >= ivf.nlist:
                return dist, found
            nprobe = min(ivf.nlist, nprobe * 4)
    finally:
        faiss.omp_set_num_threads(threads)


def search(
    index: faiss.Index, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest ids of one query vector, optionally restricted to ``allowed_ids``.

    A small allowed set (<= `SELECTOR_MAX`) is searched through a FAISS IDSelector; a large
    one by asking for more neighbours than k and keeping the allowed ones, asking again for
    more until k pass. An IVF index widens ``nprobe`` until k ids are found. Either way k
    rows come back whenever k allowed vectors exist.

    Returns
    -------
    distance : float32 (m,)
        Euclidean distances, ascending (m <= k).
    ids : int64 (m,)
    """
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    if allowed_ids is None:
        dist, found = _search_one(index, q, k)
        dist, found = dist[0], found[0]
    elif len(allowed_ids) <= SELECTOR_MAX:
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        dist, found = _search_one(index, q, k, selector)
        dist, found = dist[0], found[0]
    else:
        allowed = np.sort(np.asarray(allowed_ids, dtype=np.int64))
        # expected number of candidates to see k allowed ones, with a margin
        wanted = int(min(index.ntotal, 2 * k * index.ntotal / len(allowed) + 16))
        while True:
            dist, found = _search_one(index, q, wanted)
            dist, found = dist[0], found[0]
            pos = np.clip(np.searchsorted(allowed, found), 0, len(allowed) - 1)
            ok = allowed[pos] == found
            if ok.sum() >= k or wanted >= index.ntotal:
                dist, found = dist[ok][:k], found[ok][:k]
                break
            wanted = min(index.ntotal, wanted * 4)
    ok = found >= 0
    return np.sqrt(np.maximum(dist[ok], 0)).astype(np.float32), found[ok]


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
