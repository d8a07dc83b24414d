"""Figures drawn from a catalogue alone: a source with its neighbours, and the map.

The feature rows (fold, XP, dm-dt) come from the catalogue's ``features/`` shards, the
metadata and labels from ``catalog.duckdb``; nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.compute as pc

from latentcat.errors import LatentcatError
from latentcat.plots.latent_map import plot_map
from latentcat.plots.rows import read_feature_rows
from latentcat.plots.similar import plot_similar

COLOR_BY = {
    # name users type -> (SQL giving source_id, value; categorical?; colour-bar label)
    "labels.best_class_name": ("SELECT source_id, best_class_name AS value FROM labels", True, ""),
    "predictions": ("SELECT source_id, arg_max(class, probability) AS value FROM predictions GROUP BY 1", True, ""),
    "outlier_score": ("SELECT source_id, score AS value FROM outlier_scores WHERE method = 'isolation_forest:space'",
                      False, "isolation-forest outlier score"),
    "period": ("SELECT source_id, log10(period) AS value FROM features WHERE period > 0", False, "log10 period (d)"),
    "bp_rp": ("SELECT source_id, bp_rp AS value FROM sources", False, "BP - RP (mag)"),
}
"""What ``latentcat map --color-by`` accepts."""


def _class_of(cat, ids: Sequence[int]) -> dict[int, str]:
    """The DR3 label of each source, else its latest prediction (marked 'pred.')."""
    rows = cat.sql(
        "SELECT i.source_id, l.best_class_name AS label, "
        "(SELECT arg_max(p.class, p.probability) FROM predictions p WHERE p.source_id = i.source_id) AS pred "
        "FROM (SELECT unnest($ids::BIGINT[]) AS source_id) i LEFT JOIN labels l USING (source_id)",
        {"ids": [int(i) for i in ids]},
    ).to_pylist()
    return {r["source_id"]: r["label"] or (f"{r['pred']} (pred.)" if r["pred"] else "unlabelled") for r in rows}


def plot_similar_from_catalog(cat, source_id: int, k: int = 8, modality: str = "space", where: str | None = None,
                              out: str | Path | None = None):
    """The query source and its ``k`` nearest neighbours, each as fold / XP / dm-dt panels."""
    neighbours = cat.similar(source_id, k=k, modality=modality, where=where)
    ids = [int(source_id)] + neighbours.column("source_id").to_pylist()
    rows = read_feature_rows(cat.path / "features", ids)
    classes = _class_of(cat, ids)
    g = dict(zip(*cat.sql("SELECT source_id, phot_g_mean_mag FROM sources WHERE list_contains($ids::BIGINT[], source_id)",
                          {"ids": ids}).to_pydict().values()))
    dist = dict(zip(ids, [0.0] + neighbours.column("distance").to_pylist()))
    meta = {i: {"class": classes.get(i), "g_mag": g.get(i), "distance": dist[i]} for i in ids}
    return plot_similar(rows.slice(0, 1), rows.slice(1), meta=meta, out=out)


def plot_catalog_map(cat, color_by: str = "labels.best_class_name", highlight: Sequence[int] = (),
                     out: str | Path | None = None, size=(1200, 900)):
    """The stored 2-D map of the whole catalogue, coloured by one of `COLOR_BY`."""
    if color_by not in COLOR_BY:
        raise LatentcatError(f"--color-by {color_by!r}: choose one of {', '.join(COLOR_BY)}")
    xy = cat.map()
    if xy.num_rows == 0:
        raise LatentcatError(f"{cat.path}: the catalogue has no 2-D map (build it with [analyse] map = true)")
    query, categorical, label = COLOR_BY[color_by]
    values = cat.sql(query)
    joined = xy.join(values, "source_id", join_type="left outer")
    x, y = joined.column("x").to_numpy(), joined.column("y").to_numpy()
    missing = [i for i in highlight if not pc.any(pc.equal(joined.column("source_id"), i)).as_py()]
    if missing:
        raise LatentcatError(f"source_id {missing[0]} is not on the map (not in the catalogue, or missing a block)")
    kwargs = {"categories": joined.column("value").to_pylist()} if categorical else {
        "color": np.asarray(joined.column("value").to_numpy(zero_copy_only=False), dtype=float),
        "color_label": label}
    return plot_map(x, y, highlight=list(highlight) or None, ids=joined.column("source_id").to_numpy(),
                    out=out, size=size, title=f"latent map ({xy.num_rows:,} sources), colour: {color_by}", **kwargs)
