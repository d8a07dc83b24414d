"""Synthetic catalogue inputs with the exact schemas of docs/schemas.md.

The sources fall in clusters, one per variability class, in each 5-D latent block; faint
sources (G > 17.65) mostly lack XP, so their z_xp is null, and a few sources have too few
epochs for dm-dt and fold codes. Plain functions without state, used by the catalogue and
query tests and the benchmarks; the catalogues several test modules share are session
fixtures in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

QUERY_ID = 5853498713190525696
"""A DR3 source_id that is always present, bright, with all three blocks."""

NO_XP_ID = 5853498713190525697
"""A source_id that is always present with dm-dt and fold codes but no XP."""

# class: (typical period d, typical G amplitude mag, share of sources)
CLASSES = {
    "RRAB": (0.55, 0.8, 0.2),
    "EW": (0.35, 0.5, 0.2),
    "SR": (80.0, 0.6, 0.15),
    "DSCT|GDOR|SXPHE": (0.08, 0.1, 0.15),
    "SOLAR_LIKE": (5.0, 0.05, 0.2),
    "YSO": (12.0, 1.0, 0.1),
}

F32 = pa.float32()
LIST_F32 = pa.list_(pa.float32())


def _list_column(rows: np.ndarray, present: np.ndarray) -> pa.Array:
    """A list<float> column of the rows of a 2-D array, null where ``present`` is false."""
    n, d = rows.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)
    values = pa.array(rows.astype(np.float32).ravel())
    return pa.ListArray.from_arrays(offsets, values, mask=pa.array(~np.asarray(present)))


def make_tables(n: int = 600, seed: int = 0, with_arrays: bool = True) -> dict[str, pa.Table]:
    """Build the sources, labels, features and embeddings tables of ``n`` sources.

    Parameters
    ----------
    n : int
        Number of sources (at least 2).
    seed : int
        Random seed; the same seed gives the same tables.
    with_arrays : bool
        Fill the feature arrays (dm-dt, folded curve, XP); without them (for large
        benchmark runs) those columns are all null.

    Returns
    -------
    dict of pyarrow.Table
        ``sources``, ``labels``, ``features``, ``embeddings``.
    """
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    share = np.array([CLASSES[c][2] for c in names])
    cls = rng.choice(len(names), size=n, p=share / share.sum())
    source_id = np.sort(rng.choice(2**62, size=n, replace=False)).astype(np.int64)
    source_id[0], source_id[1] = QUERY_ID, NO_XP_ID
    source_id = np.sort(source_id)  # QUERY_ID and NO_XP_ID stay adjacent
    i_query = int(np.searchsorted(source_id, QUERY_ID))
    i_no_xp = int(np.searchsorted(source_id, NO_XP_ID))

    g = np.clip(rng.gamma(6.0, 1.0, n) + 11.0, 8.0, 21.0).astype(np.float32)
    has_xp = (g < 17.65) | (rng.random(n) < 0.1)
    n_obs = rng.integers(8, 140, n).astype(np.int32)
    has_lc = n_obs >= 20
    g[i_query], n_obs[i_query], has_xp[i_query], has_lc[i_query] = 14.0, 60, True, True
    g[i_no_xp], n_obs[i_no_xp], has_xp[i_no_xp], has_lc[i_no_xp] = 19.2, 45, False, True

    # one cluster centre per class in each block; within-class scatter 0.4
    centres = rng.normal(0.0, 2.0, size=(len(names), 15)).astype(np.float32)
    z = centres[cls] + rng.normal(0.0, 0.4, size=(n, 15)).astype(np.float32)
    logvar = rng.normal(-3.0, 0.3, size=(n, 15)).astype(np.float32)

    period = np.array([CLASSES[names[c]][0] for c in cls]) * rng.lognormal(0, 0.2, n)
    amplitude = np.array([CLASSES[names[c]][1] for c in cls]) * rng.lognormal(0, 0.3, n)

    sources = pa.table({
        "source_id": pa.array(source_id, pa.int64()),
        "ra": pa.array(rng.uniform(0, 360, n), pa.float64()),
        "dec": pa.array(np.degrees(np.arcsin(rng.uniform(-1, 1, n))), pa.float64()),
        "parallax": pa.array(rng.lognormal(-0.5, 0.8, n), pa.float64()),
        "phot_g_mean_mag": pa.array(g, F32),
        # a colour by class; 8 % of the sources (never the two query sources) have none, as a
        # source may lack BP/RP photometry
        "bp_rp": pa.array((centres[cls, 0] / 4 + 1.0 + rng.normal(0, 0.1, n)).astype(np.float32), F32,
                          mask=(rng.random(n) < 0.08) & ~np.isin(np.arange(n), [i_query, i_no_xp])),
        "phot_variable_flag": pa.array(["VARIABLE"] * n, pa.string()),
    })

    labelled = rng.random(n) < 0.7
    labelled[i_query] = True
    labels = pa.table({
        "source_id": pa.array(source_id[labelled], pa.int64()),
        "best_class_name": pa.array([names[c] for c in cls[labelled]], pa.string()),
        "best_class_score": pa.array(rng.uniform(0.3, 1.0, labelled.sum()).astype(np.float32), F32),
    })

    lc_null = ~has_lc
    def f32(x, null=lc_null):
        return pa.array(np.asarray(x, np.float32), F32, mask=null)

    features = {
        "source_id": pa.array(source_id, pa.int64()),
        "n_obs": pa.array(n_obs, pa.int32()),
        "n_clipped": pa.array(rng.integers(0, 4, n).astype(np.int32), pa.int32()),
        "g_mean": f32(g + 0.02), "g_median": f32(g), "g_std": f32(amplitude / 3),
        "g_amplitude": f32(amplitude), "g_skew": f32(rng.normal(0, 0.5, n)),
        "time_span": f32(rng.uniform(900, 1040, n)),
    }
    if not with_arrays:
        features["dmdt"] = features["dmdt_err"] = pa.nulls(n, LIST_F32)
    else:
        dmdt = rng.dirichlet(np.ones(20), size=(n, 10)).reshape(n, 200)
        features["dmdt"] = _list_column(dmdt, has_lc)
        features["dmdt_err"] = _list_column(dmdt / 5 + 0.01, has_lc)
    features.update({
        "period": pa.array(period, pa.float64(), mask=lc_null),
        "period_fap": pa.array(rng.uniform(0, 1e-3, n), pa.float64(), mask=lc_null),
        "period_power": f32(rng.uniform(0.2, 0.9, n)),
        "period_coherence": f32(rng.uniform(0.0, 1.0, n)),
        "period_reliable": pa.array(rng.random(n) < 0.8, pa.bool_(), mask=lc_null),
        # d(BP - RP)/dG: short-period pulsator-like sources redden as they fade, the others hardly
        "colour_slope": f32(np.where(period < 1.0, 0.5, 0.1)),
        "colour_slope_err": f32(np.full(n, 0.05)),
    })
    if not with_arrays:
        for c in ("fold_phase", "fold_mag", "fold_err", "xp_flux", "xp_flux_error"):
            features[c] = pa.nulls(n, LIST_F32)
    else:
        phases = [np.sort(rng.random(m)) if ok else None for m, ok in zip(n_obs, has_lc)]
        features["fold_phase"] = pa.array([p.tolist() if p is not None else None for p in phases], LIST_F32)
        features["fold_mag"] = pa.array(
            [(0.5 + 0.5 * np.sin(2 * np.pi * p)).tolist() if p is not None else None for p in phases], LIST_F32)
        features["fold_err"] = pa.array(
            [np.full(p.size, 0.02).tolist() if p is not None else None for p in phases], LIST_F32)
        xp = rng.lognormal(0, 0.3, size=(n, 110))
        features["xp_flux"] = _list_column(xp / xp.max(1, keepdims=True), has_xp)
        features["xp_flux_error"] = _list_column(np.full((n, 110), 0.01), has_xp)
    features["xp_scale"] = pa.array(rng.lognormal(6, 1, n).astype(np.float32), F32, mask=~has_xp)
    features["lc_reason"] = pa.array([None if ok else "fewer than 20 G epochs" for ok in has_lc], pa.string())
    features["xp_reason"] = pa.array([None if ok else "no XP spectrum" for ok in has_xp], pa.string())

    emb = {"source_id": pa.array(source_id, pa.int64())}
    has = {"xp": has_xp, "dmdt": has_lc, "fold": has_lc}
    for j, b in enumerate(("xp", "dmdt", "fold")):
        emb[f"z_{b}"] = _list_column(z[:, 5 * j : 5 * j + 5], has[b])
    for j, b in enumerate(("xp", "dmdt", "fold")):
        emb[f"z_logvar_{b}"] = _list_column(logvar[:, 5 * j : 5 * j + 5], has[b])
    for b in ("xp", "dmdt", "fold"):
        emb[f"has_{b}"] = pa.array(has[b], pa.bool_())
    for b in ("xp", "dmdt", "fold"):
        emb[f"recon_loss_{b}"] = pa.array(rng.gamma(2.0, 0.5, n).astype(np.float32), F32, mask=~has[b])

    return {
        "sources": sources,
        "labels": labels,
        "features": pa.table(features),
        "embeddings": pa.table(emb),
    }


def write_inputs(root: Path, n: int = 600, seed: int = 0, n_shards: int = 2,
                 with_arrays: bool = True, shuffle: bool = False) -> dict[str, Path]:
    """Write the staging tables and the feature and embedding shards under ``root``.

    With ``shuffle`` the rows are written in random order, as real shards come.

    Returns
    -------
    dict
        ``stage_dir``, ``features_dir``, ``emb_dir``.
    """
    tables = make_tables(n, seed, with_arrays=with_arrays)
    if shuffle:
        order = np.random.default_rng(seed + 1).permutation(n)
        tables = {k: t.take(order) if t.num_rows == n else t for k, t in tables.items()}
    dirs = {k: Path(root) / k for k in ("stage", "features", "embeddings")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    pq.write_table(tables["sources"], dirs["stage"] / "sources.parquet")
    pq.write_table(tables["labels"], dirs["stage"] / "labels.parquet")
    bounds = np.linspace(0, n, n_shards + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(tables["features"].slice(a, b - a), dirs["features"] / f"features-{i:05d}.parquet")
        pq.write_table(tables["embeddings"].slice(a, b - a), dirs["embeddings"] / f"embeddings-{i:05d}.parquet")
    return {"stage_dir": dirs["stage"], "features_dir": dirs["features"], "emb_dir": dirs["embeddings"]}
