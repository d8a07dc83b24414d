"""The search space: the vector a catalogue searches, classifies, ranks and maps by default.

The three VAE blocks describe a source's shape (the fold code also holds its fold period and
amplitude, `latentcat.models.fold_vae`, and the dm-dt code its mean G magnitude,
`latentcat.models.dmdt_vae`); the colour, which none of them sees for the 76 % of
DR3 variables without an XP spectrum, comes from gaia_source. The search space puts them side
by side in *parts*:

    part     values                         present when
    xp       z_xp (5)                       the source has an XP code
    dmdt     z_dmdt (5)                     it has a dm-dt code
    fold     z_fold (5)                     it has a fold code
    colour   bp_rp (1)                      gaia_source gives its BP - RP colour, and
                                            the source has at least one latent block

Each value is standardised by the catalogue's own median and spread (1.4826 x the median
absolute deviation, over the sources that have the part) and multiplied by its part's weight
(`WEIGHTS`: 1, and 0.5 for dm-dt), so that no part dominates the distance by its units:

    s = weight[part] * (value - center) / scale

The rule (every center, scale and weight) is fitted once, when a catalogue is written, and
stored in its ``space_rule`` table; the vectors themselves are stored in its ``space`` table.
FAISS (``index/space_*.faiss``), the SQL macro ``similar_to``, ``latentcat add`` (which applies
the stored rule to the sources it adds, never a refitted one) and the default classifier,
outlier ranking and map all read those same vectors. A missing part is never filled in: a
source is searched on the parts it has, among the sources that have them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from latentcat.errors import LatentcatError

PARTS = ("xp", "dmdt", "fold", "colour")
"""The parts of the search space, in the order they are concatenated."""

PART_DIM = {"xp": 5, "dmdt": 5, "fold": 5, "colour": 1}
"""Values per part."""

WEIGHTS = {"xp": 1.0, "dmdt": 0.5, "fold": 1.0, "colour": 1.0}
"""Weight of each part after standardisation. The dm-dt map and the fold describe the same G
light curve, so the dm-dt part counts half: chosen on one simulated survey (trained on seed 11,
evaluated on seed 12: kNN-15 macro-F1 0.718 with every weight 1, 0.731 with dm-dt 0.5) and
checked on two others (README, "Latents against classic numbers")."""

SETS_FOR_QUERIES = (("xp",), ("dmdt", "fold"), ("xp", "dmdt", "fold"))
"""Part sets a query made from data needs an index of even when no catalogue source has exactly
them: an XP spectrum alone, a light curve alone (neither carries a gaia_source colour), both."""


@dataclass(frozen=True)
class SearchSpace:
    """A fitted search-space rule: per part, the center, scale and weight of each value.

    Create it with `SearchSpace.fit` (a new catalogue) or `SearchSpace.from_table` (the
    rule a catalogue stored).
    """

    center: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    weight: dict[str, float]

    @classmethod
    def fit(cls, parts: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> "SearchSpace":
        """The rule standardising ``parts`` by their medians and MAD spreads.

        Parameters
        ----------
        parts : dict
            Part name -> float array (n, PART_DIM[part]); NaN rows where a source lacks it.
        weights : dict, optional
            Part name -> weight (default `WEIGHTS`).

        Raises
        ------
        LatentcatError
            No source has any part.
        """
        weights = {**WEIGHTS, **(weights or {})}
        center, scale = {}, {}
        for name in PARTS:
            x = _as_part(parts, name)
            rows = x[np.isfinite(x).all(axis=1)]
            if len(rows) == 0:
                center[name], scale[name] = np.zeros(PART_DIM[name]), np.ones(PART_DIM[name])
                continue
            med = np.median(rows, axis=0)
            mad = 1.4826 * np.median(np.abs(rows - med), axis=0)
            center[name], scale[name] = med, np.where(mad > 0, mad, 1.0)
        if not any(np.isfinite(_as_part(parts, name)).all(axis=1).any() for name in PARTS):
            raise LatentcatError("the search space needs at least one source with a latent code or a colour")
        return cls(center, scale, {name: float(weights[name]) for name in PARTS})

    def transform(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The search-space vectors of ``parts``: float32 (n, PART_DIM[part]) per part, NaN rows
        where a source lacks the part (or any of its values is not finite)."""
        out = {}
        for name in PARTS:
            x = _as_part(parts, name)
            s = (self.weight[name] * (x - self.center[name]) / self.scale[name]).astype(np.float32)
            s[~np.isfinite(s).all(axis=1)] = np.nan
            out[name] = s
        return out

    def to_table(self) -> pa.Table:
        """The rule as rows ``part, dim, center, scale, weight`` (the ``space_rule`` table)."""
        rows = [(p, d, float(self.center[p][d]), float(self.scale[p][d]), self.weight[p])
                for p in PARTS for d in range(PART_DIM[p])]
        part, dim, center, scale, weight = zip(*rows)
        return pa.table({"part": pa.array(part, pa.string()), "dim": pa.array(dim, pa.int32()),
                         "center": pa.array(center, pa.float64()), "scale": pa.array(scale, pa.float64()),
                         "weight": pa.array(weight, pa.float64())})

    @classmethod
    def from_table(cls, table: pa.Table) -> "SearchSpace":
        """The rule stored by `to_table`.

        Raises
        ------
        LatentcatError
            The table does not hold every value of every part.
        """
        rows = table.to_pylist()
        got = {(r["part"], r["dim"]): r for r in rows}
        want = {(p, d) for p in PARTS for d in range(PART_DIM[p])}
        if set(got) != want:
            raise LatentcatError(f"the stored search-space rule has {len(got)} values, not the {len(want)} of "
                                 f"parts {', '.join(PARTS)}")
        center = {p: np.array([got[p, d]["center"] for d in range(PART_DIM[p])]) for p in PARTS}
        scale = {p: np.array([got[p, d]["scale"] for d in range(PART_DIM[p])]) for p in PARTS}
        return cls(center, scale, {p: float(got[p, 0]["weight"]) for p in PARTS})


def space_parts(latents: dict[str, np.ndarray], bp_rp: np.ndarray | None) -> dict[str, np.ndarray]:
    """The raw parts of the search space: the latent blocks and the BP - RP colour.

    Parameters
    ----------
    latents : dict
        ``xp``, ``dmdt``, ``fold`` -> float (n, 5), NaN rows where missing.
    bp_rp : float (n,) or None
        gaia_source's BP - RP (NaN where unknown); None: no source has one.
    """
    n = len(next(iter(latents.values())))
    colour = np.full((n, 1), np.nan) if bp_rp is None else np.asarray(bp_rp, np.float64).reshape(n, 1).copy()
    # the colour goes beside a code: a source without any latent block has no search vector
    coded = np.any([np.isfinite(latents[b][:, 0]) for b in ("xp", "dmdt", "fold")], axis=0)
    colour[~coded] = np.nan
    return {"xp": latents["xp"], "dmdt": latents["dmdt"], "fold": latents["fold"], "colour": colour}


def present_sets(vectors: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """The part sets to index: each set of parts some source has exactly, and `SETS_FOR_QUERIES`,
    in canonical order; only sets that at least one source has in full."""
    has = np.stack([np.isfinite(vectors[p][:, 0]) for p in PARTS], axis=1)
    sets = {tuple(p for p, h in zip(PARTS, row) if h) for row in np.unique(has, axis=0)}
    sets |= set(SETS_FOR_QUERIES)
    out = []
    for s in sorted(sets, key=lambda s: (-len(s), [PARTS.index(p) for p in s])):
        if s and has[:, [PARTS.index(p) for p in s]].all(axis=1).any():
            out.append(s)
    return out


def space_rows(ids: np.ndarray, vectors: dict[str, np.ndarray]) -> pa.Table:
    """The ``space`` table rows of ``vectors`` (`SearchSpace.transform`): ``source_id``, one
    nullable list column ``s_<part>`` per part, and ``parts``, the parts each source has."""
    has = {p: np.isfinite(vectors[p][:, 0]) for p in PARTS}
    columns = {"source_id": pa.array(np.asarray(ids, np.int64))}
    for p in PARTS:
        offsets = np.concatenate([[0], np.cumsum(has[p] * PART_DIM[p])]).astype(np.int32)
        values = pa.array(vectors[p][has[p]].reshape(-1), pa.float32())
        columns[f"s_{p}"] = pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~has[p]))
    names = np.array(["+".join(p for p in PARTS if has[p][i]) for i in range(len(ids))], dtype=object)
    columns["parts"] = pa.array(names.tolist(), pa.string())
    return pa.table(columns)


def vectors_of(table: pa.Table) -> dict[str, np.ndarray]:
    """Per part, the float32 (n, dim) vectors of ``space`` rows (NaN rows where missing)."""
    out = {}
    for p in PARTS:
        col = table.column(f"s_{p}").combine_chunks()
        x = np.full((len(col), PART_DIM[p]), np.nan, np.float32)
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        if valid.any():
            x[valid] = np.asarray(col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False),
                                  np.float32).reshape(-1, PART_DIM[p])
        out[p] = x
    return out


def cluster_radii(x: np.ndarray, centroids: np.ndarray, label: np.ndarray) -> np.ndarray:
    """float32 (n clusters,): the largest distance of a cluster's vectors from its centroid,
    rounded up a little (1e-5 relative) so that float32 distances computed elsewhere stay
    inside it: with the triangle inequality, a vector is at least (its distance to the
    centroid) - radius from every member of the cluster."""
    radius = np.zeros(len(centroids))
    np.maximum.at(radius, label, np.linalg.norm(x.astype(np.float64) - centroids[label], axis=1))
    return (radius * (1 + 1e-5) + 1e-6).astype(np.float32)


def _as_part(parts: dict[str, np.ndarray], name: str) -> np.ndarray:
    x = np.asarray(parts[name], np.float64)
    return x.reshape(len(x), PART_DIM[name])
