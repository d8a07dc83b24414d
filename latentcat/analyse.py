"""Fit the analyses of a built catalogue, write their rows and store their models.

One path for `latentcat build`, the ``classify`` and ``outliers`` commands and the Python API.
Each analysis is fitted on the catalogue opened read-only; then the catalogue is closed, the
rows are written (`latentcat.catalog.store`: predictions, outlier_scores, map) and the fitted
model is stored in ``analysis/`` (`latentcat.analysis.store`), so that ``latentcat add``
gives sources added later rows made by the very same models.

    >>> with latentcat.open("cat/") as cat:        # fit only: nothing is written
    ...     result = fit_classifier(cat)           # cross-validated report + predictions
    ...     scores, model = fit_outliers(cat)      # isolation forest on the search space
    ...     xy, network = fit_map_model(cat)       # every source on the 2-D map
    >>> analyse("cat/", classifier={"model": "rf"}, outliers=[("recon_loss", "all")])  # fit, write, store
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from latentcat.analysis.space import vectors_of
from latentcat.blocks import BLOCKS, SPACE
from latentcat.catalog import index as lc_index
from latentcat.catalog import store
from latentcat.errors import LatentcatError


def analysis_inputs(cat, modality: str = SPACE) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """source_ids, the vectors analysed and the reconstruction losses of every catalogue source.

    Parameters
    ----------
    cat : latentcat.query.Catalog
        An open catalogue.
    modality : str
        ``"space"``: the search-space parts (`latentcat.analysis.space`); anything else: the
        latent blocks.

    Returns
    -------
    ids : int64 (n,)
        In source_id order.
    blocks : dict of float32 (n, d)
        The parts ``xp``, ``dmdt``, ``fold``, ``colour`` (or the blocks ``xp``, ``dmdt``,
        ``fold``); rows of a missing part are NaN.
    losses : dict of float32 (n,)
        ``recon_loss_<block>``; NaN where missing.
    """
    queries = store.sql_statements("query")
    if modality == SPACE:
        table = cat.sql(queries["analysis_space"])
        ids, blocks = table.column("source_id").to_numpy().astype(np.int64), vectors_of(table)
    else:
        table = cat.sql(queries["analysis_codes"])
        ids, blocks = lc_index.codes_to_numpy(table)
    losses = {b: table.column(f"recon_loss_{b}").to_numpy(zero_copy_only=False).astype(np.float32) for b in BLOCKS}
    return ids, blocks, losses


def labels_of(cat, labels: str, n: int) -> pa.Array:
    """The values of a ``"table.column"`` for every embedded source, in source_id order.

    Raises
    ------
    LatentcatError
        ``labels`` names no catalogue column, its table has no source_id or more than one row
        per source.
    """
    queries = store.sql_statements("query")
    parts = labels.split(".") if isinstance(labels, str) else []
    known = {(r["table_name"], r["column_name"]) for r in cat.sql(queries["table_columns"]).to_pylist()}
    if len(parts) != 2 or tuple(parts) not in known:
        raise LatentcatError(
            f"labels {labels!r}: give 'table.column' naming a catalogue column, e.g. 'labels.best_class_name'"
        )
    table, column = parts
    if (table, "source_id") not in known:
        raise LatentcatError(f"labels {labels!r}: table {table} has no source_id column")

    def quote(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    try:
        got = cat.sql(queries["labels_of"].format(table=quote(table), column=quote(column)))
    except LatentcatError as err:
        raise LatentcatError(f"labels {labels!r}: {err}") from err
    if got.num_rows != n:
        raise LatentcatError(f"labels {labels!r}: {table} has more than one row per source_id")
    return got.column("label")


def fit_classifier(cat, labels: str = "labels.best_class_name", model: str = "hgb", modality: str = SPACE,
                   min_per_class: int = 10, cv: int = 3, seed: int = 0):
    """Cross-validate a classifier on the labelled sources and predict every source.

    Parameters
    ----------
    cat : latentcat.query.Catalog
        An open catalogue.
    labels : str
        ``"table.column"`` holding the class of each source (NULL = unlabelled).
    model : {"hgb", "rf", "logreg"}
        Histogram gradient boosting (default), random forest or logistic regression.
    modality : str
        ``"space"`` (default): each source on the search-space parts it has; ``"all"``: on the
        latent blocks it has; or named latent blocks.
    min_per_class : int
        Classes with fewer labelled sources are left out.
    cv : int
        Cross-validation folds.
    seed : int
        Seed of the folds and the models.

    Returns
    -------
    latentcat.analysis.classify.ClassifyResult
        Per-class precision/recall/F1, macro F1, confusion matrix, left-out classes,
        ``baseline`` (the same classifier on the classic light-curve numbers alone, on the
        same sources and folds), ``predictions`` (source_id, class, probability, model_id,
        blocks) and ``fitted``, the model `analyse` stores.

    Raises
    ------
    LatentcatError
        A bad labels column, model or modality, or fewer than two usable classes.
    """
    from latentcat.analysis.classify import CLASSIC, classify

    ids, blocks, _ = analysis_inputs(cat, modality)
    values = labels_of(cat, labels, ids.size)
    classic = cat.sql(store.sql_statements("query")["classic_numbers"])
    baseline = np.column_stack([classic.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in CLASSIC])
    return classify(ids, blocks, values, model=model, modality=modality, min_per_class=min_per_class, cv=cv,
                    seed=seed, labels_name=labels, build_id=cat.build_id(), baseline=baseline)


def fit_outliers(cat, method: str = "isolation_forest", modality: str = SPACE, seed: int = 0):
    """Fit an outlier model on a catalogue and rank its sources.

    Parameters
    ----------
    cat : latentcat.query.Catalog
        An open catalogue.
    method : {"isolation_forest", "recon_loss"}
        Isolation forests on the vectors, or the VAEs' reconstruction losses
        (`latentcat.analysis.outliers`).
    modality : str
        ``"space"`` (default), ``"all"`` or a block set; for ``recon_loss`` the modalities
        whose losses count (``"space"`` = ``"all"``).
    seed : int
        Seed of the isolation forests.

    Returns
    -------
    scores : pyarrow.Table
        ``source_id, score, rank, method, blocks``, most unusual first (rank 1); ``method`` is
        the model's key ``"<method>:<modality>"``.
    model : latentcat.analysis.outliers.OutlierModel
    """
    from latentcat.analysis.outliers import OutlierModel

    ids, blocks, losses = analysis_inputs(cat, modality)
    model = OutlierModel(method, modality, seed).fit(blocks, losses)
    return model.rank(ids, blocks, losses), model


def fit_map_model(cat, modality: str = SPACE, seed: int = 0, **params):
    """Fit the parametric 2-D map on a catalogue and place its sources.

    Parameters
    ----------
    cat : latentcat.query.Catalog
        An open catalogue.
    modality : str
        ``"space"`` (default): every source is on the map, the network mapping those with every
        search-space part and the others placed among their nearest mapped neighbours on the
        parts they have (`latentcat.analysis.latent_map.LatentMap`). Otherwise only the sources
        that have every named latent block (``"all"``: all three).
    seed : int
        Seed of the map.
    **params
        Further `latentcat.analysis.latent_map.ParametricMap` parameters.

    Returns
    -------
    xy : pyarrow.Table
        ``source_id, x, y, blocks`` (the parts that placed each source).
    model : latentcat.analysis.latent_map.LatentMap
    """
    from latentcat.analysis.latent_map import map_blocks

    ids, blocks, _ = analysis_inputs(cat, modality)
    return map_blocks(ids, blocks, modality, seed, **params)


@dataclass
class Analyses:
    """What `analyse` fitted and wrote.

    Attributes
    ----------
    classifier : ClassifyResult or None
    outliers : list of (scores table, OutlierModel)
    map : (xy table, LatentMap) or None
    rows : dict
        Rows written per table and key (``predictions``, ``outliers_<key>``, ``map``).
    manifest : dict
        ``analysis/manifest.json`` as written.
    """

    classifier: object | None = None
    outliers: list = field(default_factory=list)
    map: tuple | None = None
    rows: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


def analyse(cat_dir: Path, classifier: dict | None = None, outliers=(), map_model: dict | None = None,
            seed: int = 0, keep: bool = True, lock: bool = True) -> Analyses:
    """Fit analyses on a catalogue, write their rows into it and store their models.

    Parameters
    ----------
    cat_dir : Path
        The catalogue folder; opened read-only to fit, then written.
    classifier : dict, optional
        Fit a classifier: keyword arguments of `fit_classifier` (``{}`` for the defaults).
    outliers : iterable of (method, modality)
        Fit these outlier models (`fit_outliers`).
    map_model : dict, optional
        Fit the 2-D map: keyword arguments of `fit_map_model` (``{}`` for the defaults).
    seed : int
        Seed of every fit (unless given in ``classifier`` or ``map_model``).
    keep : bool
        Keep the models stored before (those of the same key are replaced); False: the stored
        models become exactly these (a build).
    lock : bool
        Hold the catalogue's writer lock (`latentcat.lock`) from the fit to the last write, so
        that an addition cannot slip in between (default); False only for a caller that holds
        it already (the build, on the catalogue it is assembling).

    Returns
    -------
    Analyses
    """
    from latentcat.analysis.store import save_analysis
    from latentcat.lock import writer_lock
    from latentcat.query import open as open_catalog

    if lock:
        with writer_lock(cat_dir, "latentcat analyse"):
            return analyse(cat_dir, classifier, outliers, map_model, seed, keep, lock=False)
    done = Analyses()
    with open_catalog(cat_dir) as cat:
        if classifier is not None:
            done.classifier = fit_classifier(cat, **{"seed": seed, **classifier})
        done.outliers = [fit_outliers(cat, method, modality, seed=seed) for method, modality in outliers]
        if map_model is not None:
            done.map = fit_map_model(cat, **{"seed": seed, **map_model})
    # the catalogue is closed: now write
    if done.classifier is not None:
        result = done.classifier
        done.rows["predictions"] = store.write_predictions(cat_dir, result.predictions, result.model_id)
    for scores, model in done.outliers:
        done.rows[f"outliers_{model.key}"] = store.write_outlier_scores(cat_dir, scores, model.key)
    if done.map is not None:
        done.rows["map"] = store.write_map(cat_dir, done.map[0])
    done.manifest = save_analysis(cat_dir, classifier=done.classifier, outliers=[m for _, m in done.outliers],
                                  map_model=done.map[1] if done.map else None, keep=keep)
    return done


__all__ = ["Analyses", "analyse", "analysis_inputs", "fit_classifier", "fit_map_model", "fit_outliers", "labels_of"]
