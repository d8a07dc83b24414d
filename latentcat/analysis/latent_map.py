"""A parametric 2-D map of the latent codes (a small parametric UMAP in torch).

Huijse et al. (2025) draw their catalogue with a parametric UMAP. umap-learn's
ParametricUMAP needs TensorFlow, so latentcat trains the same kind of map itself:

1. The codes are standardised (per dimension) and their ``n_neighbors`` nearest neighbours
   found exactly with FAISS.
2. UMAP's fuzzy graph: for each source, ``rho`` = distance to its nearest neighbour and
   ``sigma`` such that ``sum_j exp(-(d_ij - rho) / sigma) = log2(n_neighbors)``; the edge
   weights ``w = exp(-(d_ij - rho) / sigma)`` are symmetrised as ``w + w' - w w'``.
3. An MLP (input -> 128 -> 128 -> 2, ReLU) is trained with UMAP's cross-entropy: edges are
   sampled in proportion to their weight and pulled together (``-log q``), each with
   ``negative_rate`` other sources pushed apart (``-log(1 - q)``; as in umap-learn's
   ParametricUMAP, the repulsive partners are the end points of the batch's other edges),
   where ``q = 1 / (1 + a d^(2b))`` on the map and ``a, b`` follow from ``min_dist`` as in
   umap-learn.
   Adam with a linearly decaying learning rate, a fixed number of steps.

Above ``max_fit`` sources the network is fitted on a random sample of that size and then
applied to every source: that is what makes the map parametric, and it keeps the cost at a
few minutes on a CPU however large the catalogue. New sources are placed by the same
network (`ParametricMap.transform`; the fitted object pickles).

The map is deterministic for a seed on a given machine (numpy and torch generators seeded,
one fixed sequence of batches). Training runs on one CPU thread: its batches are too small
to gain from more, and on a busy machine extra threads cost many times the work.

Sources missing a block: on the default search space (``modality="space"``) every source is
on the map: the network maps the sources with every part, and the others are placed among
their nearest neighbours on the parts they have (`LatentMap`, which records which parts
placed each source). On a latent modality (``"all"``, ``"xp"``, ...) only the sources with
every block of it are mapped. `LatentMap` keeps the network and its references, so that
sources added to the catalogue later are placed on the same map.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import torch
from scipy import sparse
from scipy.optimize import curve_fit
from sklearn.base import BaseEstimator, TransformerMixin

from latentcat.blocks import parse_block_set, SPACE
from latentcat.errors import LatentcatError


def ab_params(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """umap-learn's ``a, b`` of the map similarity ``1 / (1 + a d^(2b))`` for a ``min_dist``."""
    x = np.linspace(0, 3 * spread, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), x, y, p0=(1.6, 0.9))
    return float(a), float(b)


def knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``x`` among the others (FAISS, L2).

    Returns
    -------
    dist : float32 (n, k)
        Euclidean distances, ascending.
    idx : int64 (n, k)
        Row numbers of the neighbours; a row never lists itself.
    """
    n = x.shape[0]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d2, idx = index.search(x, k + 1)
    # drop each row's own entry (not always first when points coincide), else the last one
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    dist = np.sqrt(np.maximum(d2[keep], 0)).reshape(n, k)
    return dist.astype(np.float32), idx[keep].reshape(n, k)


def fuzzy_graph(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UMAP's symmetric fuzzy kNN graph as directed edge lists (both directions).

    Parameters
    ----------
    dist, idx : (n, k)
        Output of `knn`.

    Returns
    -------
    head, tail : int64 (m,)
        Edge end points.
    weight : float32 (m,)
        Membership strength in (0, 1].
    """
    n, k = dist.shape
    d = dist.astype(np.float64)
    rho = np.where(d > 0, d, np.inf).min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(d - rho[:, None], 0.0)
    target = np.log2(k)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    sigma = np.ones(n)
    for _ in range(64):  # bisection on sigma for all sources at once
        total = np.exp(-excess / sigma[:, None]).sum(axis=1)
        big = total > target
        hi = np.where(big, sigma, hi)
        lo = np.where(big, lo, sigma)
        sigma = np.where(np.isfinite(hi), (lo + hi) / 2, sigma * 2)
    sigma = np.maximum(sigma, 1e-3 * max(float(d.mean()), 1e-12))
    w = np.exp(-excess / sigma[:, None])
    p = sparse.coo_matrix((w.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    p = p.tocsr()
    p.sum_duplicates()
    sym = (p + p.T - p.multiply(p.T)).tocoo()
    keep = sym.data > 0
    head, tail = sym.row[keep].astype(np.int64), sym.col[keep].astype(np.int64)
    return head, tail, sym.data[keep].astype(np.float32)


class _MLP(torch.nn.Module):
    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ParametricMap(TransformerMixin, BaseEstimator):
    """A parametric UMAP-style 2-D map (see the module docstring).

    Parameters
    ----------
    n_neighbors : int
        Neighbours per source in the kNN graph.
    min_dist : float
        How tightly the map packs neighbours (umap-learn's meaning).
    hidden : int
        Width of the two hidden layers.
    n_steps : int
        Optimiser steps.
    batch_size : int
        Graph edges per step.
    negative_rate : int
        Repulsive partners per edge (end points of other edges of the batch).
    learning_rate : float
        Initial Adam learning rate (decays linearly to zero).
    max_fit : int
        Largest number of sources the network is fitted on (a random sample above it).
    seed : int
        Seed of the sample, the network's initial weights and the batches.
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, hidden: int = 128,
                 n_steps: int = 750, batch_size: int = 1024, negative_rate: int = 5,
                 learning_rate: float = 3e-3, max_fit: int = 100_000, seed: int = 0):
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.hidden = hidden
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.negative_rate = negative_rate
        self.learning_rate = learning_rate
        self.max_fit = max_fit
        self.seed = seed

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise LatentcatError(f"the map needs a 2-D array of codes, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise LatentcatError("the codes to map hold NaN or infinite values (missing blocks?)")
        if hasattr(self, "mean_") and x.shape[1] != self.mean_.size:
            raise LatentcatError(
                f"the map was fitted on {self.mean_.size}-D codes, got {x.shape[1]}-D"
            )
        return x

    def fit(self, x, y=None) -> ParametricMap:
        """Fit the map network on the codes ``x`` (float, (n, d)); returns self."""
        for name in ("mean_", "scale_", "net_"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        x = self._check(x)
        n = x.shape[0]
        if n <= self.n_neighbors + 1:
            raise LatentcatError(f"the map needs more than {self.n_neighbors + 1} sources, got {n}")
        rng = np.random.default_rng(self.seed)
        if n > self.max_fit:
            x = x[np.sort(rng.choice(n, self.max_fit, replace=False))]
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0).astype(np.float32)
        x = np.ascontiguousarray((x - self.mean_) / self.scale_, dtype=np.float32)
        self.a_, self.b_ = ab_params(self.min_dist)
        head, tail, weight = fuzzy_graph(*knn(x, self.n_neighbors))
        cdf = np.cumsum(weight, dtype=np.float64)
        cdf /= cdf[-1]

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _MLP(x.shape[1], self.hidden)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # batches this small only lose time to more threads
        try:
            self._train(net, x, head, tail, cdf, rng)
        finally:
            torch.set_num_threads(threads)
        self.net_ = net
        self.n_fit_ = x.shape[0]
        return self

    def _train(self, net, x, head, tail, cdf, rng) -> None:
        """The optimisation loop: UMAP's cross-entropy on sampled edges."""
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / self.n_steps)
        data = torch.from_numpy(x)
        a, b, eps = self.a_, self.b_, 1e-4
        m, r = self.batch_size, self.negative_rate
        self.loss_ = np.empty(self.n_steps, np.float32)
        net.train()
        for step in range(self.n_steps):
            e = np.minimum(np.searchsorted(cdf, rng.random(m)), cdf.size - 1)
            out = net(data[torch.from_numpy(np.concatenate([head[e], tail[e]]))])
            src, dst = out[:m], out[m:]
            # repulsive partners: the other edges' tails, by r random shifts of the batch
            shifts = rng.integers(1, m, r)
            far = torch.cat([torch.roll(dst, int(s_), 0) for s_ in shifts])
            d2_pos = ((src - dst) ** 2).sum(1)
            d2_neg = ((src.repeat(r, 1) - far) ** 2).sum(1)
            q_pos = 1.0 / (1.0 + a * (d2_pos + eps) ** b)
            q_neg = 1.0 / (1.0 + a * (d2_neg + eps) ** b)
            loss = -(torch.log(q_pos.clamp_min(eps)).mean()
                     + r * torch.log((1.0 - q_neg).clamp_min(eps)).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            self.loss_[step] = loss.item()
        net.eval()

    def transform(self, x) -> np.ndarray:
        """Map codes (float, (n, d)) with the fitted network; float32 (n, 2)."""
        if not hasattr(self, "net_"):
            raise LatentcatError("the map is not fitted yet: call fit first")
        x = (self._check(x) - self.mean_) / self.scale_
        out = np.empty((x.shape[0], 2), np.float32)
        with torch.no_grad():
            for start in range(0, x.shape[0], 262_144):
                chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + 262_144]))
                out[start : start + chunk.shape[0]] = self.net_(chunk).numpy()
        return out


def fit_map(codes, seed: int = 0, **params) -> tuple[np.ndarray, np.ndarray]:
    """Fit a `ParametricMap` on ``codes`` and map them.

    Parameters
    ----------
    codes : float (n, d)
        Complete latent codes (no NaN), e.g. the joint 15-D codes.
    seed : int
        Seed of the map.
    **params
        Other `ParametricMap` parameters (``n_steps``, ``max_fit``, ...).

    Returns
    -------
    x, y : float32 (n,)
        Map coordinates.
    """
    xy = ParametricMap(seed=seed, **params).fit(codes).transform(codes)
    return xy[:, 0].copy(), xy[:, 1].copy()


#: Above this many sources with the fitted parts, ``LatentMap`` keeps a random sample of them
#: (with their map positions) as the references that place the other sources.
MAX_REFERENCES = 200_000
#: A source without every fitted part is placed at the mean position of this many references.
N_PLACE = 10
#: Up to this many references they are searched exactly; above it through an IVF index of
#: 4 sqrt(m) lists, ``PLACE_NPROBE`` of them probed, built once per set of shared parts.
#: Measured on one core, 200,000 clustered 11-D references: 400 us per source exactly, 31 us
#: through the index, whose recall@10 against the exact search was 0.988.
PLACE_EXACT_MAX = 50_000
PLACE_NPROBE = 16
#: Fewest sources the map network is fitted on; with fewer that have every part, the largest
#: set of parts this many sources have is fitted instead.
MIN_FIT = 200


class LatentMap(BaseEstimator):
    """The catalogue's 2-D map: a `ParametricMap`, the parts it maps, and the references that
    place the rest. A scikit-learn estimator: ``fit(blocks)``, then ``transform(blocks)`` or
    ``place(ids, blocks)``; ``get_params`` and ``clone`` work.

    With ``modality="space"`` every source is on the map: the network maps the sources that
    have every part in ``parts_`` (``fit_parts``: all the catalogue's parts, unless fewer than
    ``MIN_FIT`` sources have them all); a source that lacks one of them (no XP, say) is placed
    at the mean map position of its ``N_PLACE`` nearest references, nearest on the parts it
    shares with them (searched exactly up to ``PLACE_EXACT_MAX`` references, through an IVF
    index above). With a latent modality (``"all"``, ``"xp"``, ...) only the sources with
    every block of it are on the map, as the network places them.

    Parameters
    ----------
    modality : str
        ``"space"``, ``"all"`` or a block set.
    seed : int
        Seed of the network and of the reference sample.
    map_params : dict, optional
        Other `ParametricMap` parameters (``n_steps``, ``max_fit``, ...).

    Attributes
    ----------
    network_ : ParametricMap
        The fitted map.
    parts_ : tuple of str
        The blocks (parts) the network takes.
    ref_vectors_ : dict
        Part -> float32 (m, d): the references' vectors (``"space"`` only; empty otherwise).
    ref_xy_ : float32 (m, 2)
        The references' map positions.
    """

    def __init__(self, modality: str = SPACE, seed: int = 0, map_params: dict | None = None):
        self.modality = modality
        self.seed = seed
        self.map_params = map_params

    def fit(self, blocks: dict[str, np.ndarray], y=None) -> LatentMap:
        """Fit the network on the sources with every fitted part and keep the references.

        Parameters
        ----------
        blocks : dict of float32 (n, d)
            The search-space parts (``modality="space"``) or the latent blocks, NaN rows where missing.
        """
        try:
            parts = fit_parts(blocks) if self.modality == SPACE else parse_block_set(self.modality)
        except ValueError as err:
            raise LatentcatError(str(err)) from None
        rows = np.all([~np.isnan(blocks[b][:, 0]) for b in parts], axis=0)
        self.parts_ = parts
        self.network_ = ParametricMap(seed=self.seed, **(self.map_params or {})).fit(
            np.hstack([blocks[b][rows] for b in parts]))
        self.ref_vectors_, self.ref_xy_ = {}, np.zeros((0, 2), np.float32)
        if self.modality == SPACE:
            refs = np.flatnonzero(rows)
            if len(refs) > MAX_REFERENCES:
                refs = np.sort(np.random.default_rng(self.seed).choice(refs, MAX_REFERENCES, replace=False))
            self.ref_vectors_ = {b: np.ascontiguousarray(blocks[b][refs], np.float32) for b in parts}
            self.ref_xy_ = self.network_.transform(np.hstack([blocks[b][refs] for b in parts])).astype(np.float32)
        return self

    def transform(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """Map positions, float32 (n, 2); NaN for a source that is not placed."""
        return self._positions(blocks)[0]

    def place(self, ids: np.ndarray, blocks: dict[str, np.ndarray]) -> pa.Table:
        """Map positions of ``ids`` (see the class docstring for who is placed and how).

        Parameters
        ----------
        ids : int64 (n,)
            Gaia source_ids.
        blocks : dict of float32 (n, d)
            The search-space parts (``"space"``) or latent blocks; NaN rows where missing.

        Returns
        -------
        pyarrow.Table
            ``source_id, x, y`` (float32) and ``blocks`` (the parts that placed the source,
            e.g. "xp+dmdt+fold+colour" by the network, "dmdt+fold+colour" by its neighbours),
            in the order of ``ids``.
        """
        ids = np.asarray(ids, np.int64)
        xy, used = self._positions(blocks)
        placed = np.isfinite(xy[:, 0])
        return pa.table({
            "source_id": pa.array(ids[placed], pa.int64()),
            "x": pa.array(xy[placed, 0], pa.float32()),
            "y": pa.array(xy[placed, 1], pa.float32()),
            "blocks": pa.array(used[placed].tolist(), pa.string()),
        })

    def _positions(self, blocks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(xy float32 (n, 2), NaN where not placed; the parts that placed each source)."""
        parts = self.parts_
        n = len(next(iter(blocks.values())))
        has = {b: ~np.isnan(blocks[b][:, 0]) for b in blocks}
        full = np.all([has[b] for b in parts], axis=0)
        xy = np.full((n, 2), np.nan, np.float32)
        used = np.full(n, None, dtype=object)
        if full.any():
            xy[full] = self.network_.transform(np.hstack([blocks[b][full] for b in parts]))
            used[full] = "+".join(parts)
        if self.ref_vectors_:
            rest = ~full
            pattern = np.stack([has[b][rest] for b in parts], axis=1)
            for row in np.unique(pattern, axis=0):
                shared = tuple(b for b, h in zip(parts, row) if h)
                if not shared:
                    continue
                sel = np.flatnonzero(rest)[(pattern == row).all(axis=1)]
                xy[sel] = self._from_neighbours(shared, np.hstack([blocks[b][sel] for b in shared]))
                used[sel] = "+".join(shared)
        return xy, used

    def _from_neighbours(self, shared: tuple[str, ...], x: np.ndarray) -> np.ndarray:
        """Mean map position of the N_PLACE references nearest to ``x`` on the ``shared`` parts."""
        index = self._reference_index(shared)
        _, nn = index.search(np.ascontiguousarray(x, np.float32), min(N_PLACE, len(self.ref_xy_)))
        found = nn >= 0  # an IVF probe may hold fewer references than asked
        with np.errstate(invalid="ignore"):
            return (self.ref_xy_[np.where(found, nn, 0)] * found[..., None]).sum(axis=1) / found.sum(axis=1)[:, None]

    def _reference_index(self, shared: tuple[str, ...]):
        """The FAISS index of the references on the ``shared`` parts (exact up to
        ``PLACE_EXACT_MAX`` references, IVF above), built on first use and kept (not pickled).
        Its answer for a source does not depend on the other sources placed with it."""
        cache = self.__dict__.setdefault("_reference_indexes", {})
        if shared not in cache:
            refs = np.ascontiguousarray(np.hstack([self.ref_vectors_[b] for b in shared]), np.float32)
            m, d = refs.shape
            if m <= PLACE_EXACT_MAX:
                index = faiss.IndexFlatL2(d)
            else:
                nlist = int(4 * np.sqrt(m))
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
                index.cp.seed = self.seed
                index.train(refs[np.random.default_rng(self.seed).choice(m, min(m, 64 * nlist), replace=False)])
                index.nprobe = PLACE_NPROBE
            index.add(refs)
            cache[shared] = index
        return cache[shared]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_reference_indexes", None)  # rebuilt on first use
        return state


def fit_parts(blocks: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The parts the map network is fitted on: every part some source has, when at least
    ``MIN_FIT`` sources have them all; else the largest set of parts that many sources have
    (ties: the most sources)."""
    names = tuple(blocks)
    has = np.stack([~np.isnan(blocks[b][:, 0]) for b in names], axis=1)
    present = tuple(b for b, any_ in zip(names, has.any(axis=0)) if any_)
    candidates = [tuple(b for b, h in zip(names, row) if h) for row in np.unique(has, axis=0)]
    candidates = [c for c in candidates if c]
    if present not in candidates:
        candidates.append(present)
    count = {c: int(has[:, [names.index(b) for b in c]].all(axis=1).sum()) for c in candidates}
    enough = [c for c in candidates if count[c] >= MIN_FIT] or [max(candidates, key=lambda c: count[c])]
    return max(enough, key=lambda c: (len(c), count[c]))


def map_blocks(ids: np.ndarray, blocks: dict[str, np.ndarray], modality: str = SPACE,
               seed: int = 0, **params) -> tuple[pa.Table, LatentMap]:
    """Fit the map and place the sources (see `LatentMap` for which).

    Parameters
    ----------
    ids : int64 (n,)
        Gaia source_ids.
    blocks : dict of float32 (n, d)
        The search-space parts (``modality="space"``) or the latent blocks, NaN rows where missing.
    modality : str
        ``"space"``, ``"all"`` or a block set.
    seed : int
        Seed of the map and of the reference sample.
    **params
        Other `ParametricMap` parameters.

    Returns
    -------
    xy : pyarrow.Table
        ``source_id, x, y, blocks``, ready for `latentcat.catalog.store.write_map`.
    fitted : LatentMap
        The network and references, to place later sources or store with the catalogue.
    """
    fitted = LatentMap(modality, seed, params or None).fit(blocks)
    return fitted.place(ids, blocks), fitted


__all__ = ["LatentMap", "ParametricMap", "ab_params", "fit_map", "fit_parts", "fuzzy_graph", "knn", "map_blocks"]
