"""Outlier scores of the catalogue sources: higher = more unusual.

Two methods:

``isolation_forest``
    scikit-learn's IsolationForest on the search-space vectors (``modality="space"``, the
    default: latent blocks and colour, `latentcat.analysis.space`) or on the latent codes: 200 trees, each grown on 256
    sources drawn at random (``max_samples=256``, the size of the original paper by Liu et
    al. 2008; fewer when fewer sources exist). The score is ``-score_samples``, i.e.
    ``2 ** (-E[h] / c(256))`` in (0, 1]: about 0.5 for ordinary sources, near 1 for sources
    that are isolated in few cuts. With ``modality="space"`` or ``"all"`` the missing-block rule of
    `latentcat.analysis.classify` applies: one forest per block set, fitted on every source that
    has those blocks, scores the sources whose blocks are exactly that set. As every forest
    draws the same number of sources per tree, the scores share one scale.

``recon_loss``
    The VAEs' reconstruction losses (``recon_loss_xp/dmdt/fold``): each modality's loss is
    turned into a robust z-score over the sources that have it, ``(loss - median) / (1.4826
    MAD)``, and a source's score is the sum of its z-scores over the modalities it has,
    divided by the square root of their number (so one, two or three modalities give scores
    of the same spread). A source with none of the requested losses gets no score. For this
    method ``"space"`` means ``"all"``: every modality's loss.

Ranks run from 1 (highest score); ties are ordered by source_id, as in the catalogue's
outlier_scores table.

Both methods are fitted objects (`OutlierModel`): the forests, or the medians and MADs of
the losses, are kept, so that a source added to the catalogue later gets a score on the same
scale as the others (an isolation-forest score depends only on the forest; a robust z-score
only on the stored median and MAD).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest

from latentcat.blocks import block_set_name, BLOCKS, parse_block_set, SPACE
from latentcat.errors import LatentcatError
from latentcat.analysis.classify import assign_block_sets, block_presence, every, features, has_blocks

METHODS = ("isolation_forest", "recon_loss")
"""Outlier methods accepted by `outlier_scores`."""

N_ESTIMATORS = 200
MAX_SAMPLES = 256


def forest_for(x: np.ndarray, seed: int) -> IsolationForest:
    """The isolation forest latentcat fits on rows ``x`` (`N_ESTIMATORS` trees of at most
    `MAX_SAMPLES` rows; ``-forest.score_samples(x)`` is the outlier score)."""
    return IsolationForest(
        n_estimators=N_ESTIMATORS, max_samples=min(MAX_SAMPLES, x.shape[0]),
        random_state=seed, n_jobs=-1,
    ).fit(x)


def _robust_scale(x: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 MAD of the finite values (the standard deviation, else 1, for MAD 0)."""
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    if mad == 0:
        mad = float(np.std(x)) or 1.0
    return med, mad


class OutlierModel(BaseEstimator):
    """A fitted outlier score: isolation forests per block set, or robust loss statistics.

    A scikit-learn estimator (``get_params``, ``clone``): ``fit(blocks, losses)``, then
    ``score_samples(blocks, losses)``, ``score`` or ``rank``.

    Parameters
    ----------
    method : {"isolation_forest", "recon_loss"}
    modality : str
        ``"space"`` (the search-space parts a source has), ``"all"`` (its latent blocks) or a
        block set such as ``"xp"`` or ``"dmdt+fold"``.
    seed : int
        ``random_state`` of the forests.

    Attributes
    ----------
    forests_ : dict
        Block-set name -> IsolationForest (``isolation_forest``).
    robust_ : dict
        Modality -> (median, 1.4826 MAD) of its loss (``recon_loss``).
    """

    def __init__(self, method: str = "isolation_forest", modality: str = SPACE, seed: int = 0):
        self.method = method
        self.modality = modality
        self.seed = seed

    @property
    def wanted(self) -> tuple[str, ...]:
        """The latent blocks (modalities) whose losses ``recon_loss`` combines, in canonical order."""
        try:
            return parse_block_set(every(self.modality))
        except ValueError as err:
            raise LatentcatError(str(err)) from None

    @property
    def key(self) -> str:
        """``"<method>:<modality>"``: the method column of the catalogue's outlier_scores (for
        ``recon_loss``, whose losses are the latent modalities', ``"space"`` is ``"all"``)."""
        modality = every(self.modality) if self.method == "recon_loss" else self.modality
        return f"{self.method}:{modality}"

    def fit(self, blocks: dict[str, np.ndarray], losses: dict[str, np.ndarray]) -> OutlierModel:
        """Fit on the catalogue's latent blocks and losses (NaN where missing); returns self."""
        if self.method not in METHODS:
            raise LatentcatError(f"unknown outlier method {self.method!r}: use one of {', '.join(METHODS)}")
        self.forests_, self.robust_ = {}, {}
        if self.method == "isolation_forest":
            has = block_presence(blocks)
            _, sets = assign_block_sets(has, self.modality, tuple(blocks))
            for s in sets:
                x = features(blocks, s, has_blocks(has, s, tuple(blocks)))
                self.forests_[block_set_name(s)] = forest_for(x, self.seed)
        else:
            for b in self.wanted:
                x = np.asarray(losses[b], np.float64)
                if np.isfinite(x).any():
                    self.robust_[b] = _robust_scale(x[np.isfinite(x)])
        return self

    def score_samples(self, blocks: dict[str, np.ndarray], losses: dict[str, np.ndarray]) -> np.ndarray:
        """Outlier score of each source (higher = more unusual; NaN: not scored), as `score`."""
        return self.score(blocks, losses)[0]

    def score(self, blocks: dict[str, np.ndarray], losses: dict[str, np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of any sources with the fitted model.

        Parameters
        ----------
        blocks, losses : dict
            As for `fit` (only the one the method uses is read).

        Returns
        -------
        score : float32 (n,)
            Higher = more unusual; NaN where the source has nothing the model can score
            (no requested block or loss, or a block set the model was not fitted on).
        blocks : object (n,)
            The block set (or modalities) each score used; None where not scored.
        """
        if not hasattr(self, "forests_"):
            raise LatentcatError("the outlier model is not fitted yet: call fit first")
        if self.method == "isolation_forest":
            return self._forest_scores(blocks)
        return self._loss_scores(losses)

    def _forest_scores(self, blocks):
        set_of, sets = assign_block_sets(block_presence(blocks), self.modality, tuple(blocks))
        score = np.full(set_of.size, np.nan, np.float32)
        names = np.full(set_of.size, None, dtype=object)
        for i, s in enumerate(sets):
            name, sel = block_set_name(s), set_of == i
            if name in self.forests_ and sel.any():
                score[sel] = -self.forests_[name].score_samples(features(blocks, s, sel))
                names[sel] = name
        return score, names

    def _loss_scores(self, losses):
        n = len(losses[BLOCKS[0]])
        total = np.zeros(n, np.float64)
        count = np.zeros(n, np.int64)
        bits = np.zeros(n, np.int64)
        wanted = self.wanted
        for i, b in enumerate(wanted):
            if b not in self.robust_:
                continue
            x = np.asarray(losses[b], np.float64)
            ok = np.isfinite(x)
            med, mad = self.robust_[b]
            total[ok] += (x[ok] - med) / mad
            count[ok] += 1
            bits[ok] |= 1 << i
        # name of the modalities that entered each score, via a lookup on the presence bits
        lookup = np.asarray(
            ["+".join(b for i, b in enumerate(wanted) if c >> i & 1) or None
             for c in range(1 << len(wanted))], dtype=object,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(count > 0, total / np.sqrt(count), np.nan).astype(np.float32)
        return score, lookup[bits]

    def rank(self, ids: np.ndarray, blocks: dict[str, np.ndarray], losses: dict[str, np.ndarray],
             top: int | None = None) -> pa.Table:
        """Score the sources and rank them, most unusual first (see `ranked`)."""
        score, names = self.score(blocks, losses)
        return ranked(np.asarray(ids, np.int64), score, self.key, names, top)


def isolation_forest_scores(
    blocks: dict[str, np.ndarray], modality: str = SPACE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, ...]]]:
    """Isolation-forest scores, one forest per block set.

    Parameters
    ----------
    blocks : dict of float32 (n, d)
        The search-space parts (``modality="space"``) or the latent blocks; rows of a
        missing block are NaN.
    modality : str
        ``"space"``, ``"all"`` or a block set such as ``"xp"`` or ``"dmdt+fold"``.
    seed : int
        ``random_state`` of the forests.

    Returns
    -------
    score : float32 (n,)
        Higher = more anomalous; NaN for sources without the requested blocks.
    set_of : int (n,)
        Index of each source's block set in ``sets`` (-1: none), and
    sets : list of tuple
        the block sets.
    """
    model = OutlierModel("isolation_forest", modality, seed).fit(blocks, {})
    score, _ = model.score(blocks, {})
    set_of, sets = assign_block_sets(block_presence(blocks), modality, tuple(blocks))
    return score, set_of, sets


def recon_loss_scores(losses: dict[str, np.ndarray], modality: str = "all") -> np.ndarray:
    """Combined robust z-score of the reconstruction losses of the requested modalities.

    Parameters
    ----------
    losses : dict of float (n,)
        ``xp``, ``dmdt``, ``fold`` reconstruction losses; NaN where missing.
    modality : str
        ``"all"`` or a block set; only its modalities enter the score.

    Returns
    -------
    float32 (n,)
        Higher = worse reconstructed than usual; NaN where no requested loss exists.
    """
    return OutlierModel("recon_loss", modality).fit({}, losses).score_samples({}, losses)


def ranked(ids: np.ndarray, score: np.ndarray, method: str, blocks: np.ndarray | None = None,
           top: int | None = None) -> pa.Table:
    """The scored sources as a table, most anomalous first.

    Parameters
    ----------
    ids : int64 (n,)
    score : float (n,)
        NaN = not scored (left out of the table).
    method : str
        Value of the ``method`` column.
    blocks : array of str (n,), optional
        Block set each source was scored on, as a ``blocks`` column.
    top : int, optional
        Keep only the ``top`` highest scores.

    Returns
    -------
    pyarrow.Table
        ``source_id, score, rank, method`` (and ``blocks``), rank 1 = highest score, ties
        in source_id order.
    """
    ok = np.flatnonzero(np.isfinite(score))
    order = ok[np.lexsort((ids[ok], -score[ok].astype(np.float64)))]
    if top is not None:
        if int(top) < 1:
            raise LatentcatError(f"top must be at least 1, got {top}")
        order = order[: int(top)]
    columns = {
        "source_id": pa.array(ids[order], pa.int64()),
        "score": pa.array(score[order], pa.float32()),
        "rank": pa.array(np.arange(1, order.size + 1, dtype=np.int64)),
        "method": pa.array([method] * order.size, pa.string()),
    }
    if blocks is not None:
        columns["blocks"] = pa.array(np.asarray(blocks, dtype=object)[order], pa.string())
    return pa.table(columns)


def outlier_scores(
    ids: np.ndarray,
    blocks: dict[str, np.ndarray],
    losses: dict[str, np.ndarray],
    *,
    method: str = "isolation_forest",
    modality: str = SPACE,
    top: int | None = None,
    seed: int = 0,
) -> pa.Table:
    """Rank the sources by an outlier score.

    Parameters
    ----------
    ids : int64 (n,)
        Gaia source_ids.
    blocks : dict of float32 (n, d)
        The search-space parts (``modality="space"``) or the latent blocks, NaN rows where missing.
    losses : dict of float (n,)
        Reconstruction losses per modality, NaN where missing.
    method : {"isolation_forest", "recon_loss"}
    modality : str
        ``"space"``, ``"all"`` or a block set.
    top : int, optional
        Keep only the most anomalous ``top`` sources.
    seed : int
        Seed of the isolation forests.

    Returns
    -------
    pyarrow.Table
        ``source_id, score, rank, method, blocks``; ``method`` is ``"<method>:<modality>"``,
        the key under which `latentcat.catalog.store.write_outlier_scores` stores it.
    """
    return OutlierModel(method, modality, seed).fit(blocks, losses).rank(ids, blocks, losses, top)


__all__ = [
    "METHODS", "OutlierModel", "isolation_forest_scores", "outlier_scores", "ranked", "recon_loss_scores",
]
