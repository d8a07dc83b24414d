"""Classifiers trained on the search-space vectors or latent codes of the labelled sources.

The vectors come as a dict of *blocks*: the search space's parts (``xp``, ``dmdt``, ``fold``,
``colour``; ``modality="space"``, the default, `latentcat.analysis.space`) or the latent blocks
(``xp``, ``dmdt``, ``fold``). A source may lack a block (no XP for a faint star, too few epochs
for the light-curve blocks, no colour). Missing blocks are never filled in. Instead, with
``modality="space"`` or ``"all"``, each source is classified on exactly the blocks it has:

- one model is fitted per *block set* (``xp+dmdt+fold``, ``dmdt+fold``, ``xp``, ...), on
  every labelled source that has all the blocks of that set (a source with all three blocks
  also trains the ``dmdt+fold`` model, using those two blocks only);
- a source is predicted by the model of its own block set. Should that model be missing
  (its training sources hold fewer than two classes), the model of the largest subset of its
  blocks is used instead; the ``blocks`` column of the predictions says which.

Tree models take a missing block natively (`NATIVE_MISSING`: gradient-boosted trees, the
default, and random forests): with ``modality="space"`` or ``"all"`` they are **one** model on
every block, a missing one given as NaN, which each split sends the way that fits the training
sources lacking it. A source is then classified on the blocks it has by that one model (the
``blocks`` column of the predictions names them), and the cost is one fit instead of one per
block set.

With a single modality or a ``+``-joined set (``"xp"``, ``"dmdt+fold"``), only the sources that
have all those blocks are classified.

The reported scores are cross-validated: the labelled sources (a stratified random sample of
`CV_MAX` of them when there are more, so the cost stays bounded at millions) are split once
into ``cv`` stratified folds, and each held-out source is predicted by the models fitted on the
other folds under the rule above, so every scored source is scored by the kind of model it
would really get. The predictions table holds the models fitted once on all labelled sources
(a stratified sample of `FIT_MAX` when there are more).

Every model is a scikit-learn Pipeline (`make_model`): a StandardScaler, then the classifier;
for gradient boosting `QuantileBins`, then the classifier.

The final models are kept as a `BlockSetClassifier` (``ClassifyResult.fitted``): it predicts
sources that were not in the catalogue when it was fitted by the same rule, and it is what
`latentcat.analysis.store.save_analysis` stores in a catalogue's ``analysis/`` folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from joblib import cpu_count, delayed, Parallel
from sklearn.base import BaseEstimator, ClassifierMixin, clone, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from latentcat.blocks import block_set_name, BLOCKS, parse_block_set, SPACE
from latentcat.errors import LatentcatError

MODELS = ("logreg", "rf", "hgb")
"""Classifier names accepted by `make_model`."""

CLASSIC = ("g_std", "g_amplitude", "g_skew", "period", "log10_period", "period_power", "g_mean", "n_obs")
"""The classic light-curve numbers (features table) a classifier's score is compared with."""

NATIVE_MISSING = ("hgb", "rf")
"""Models that take a missing block as NaN: one model on every block instead of one per block set."""

CV_MAX = 20_000
"""Most labelled sources the cross-validation (and the classic-number baseline) scores: above
it, a stratified random sample of this many (seeded)."""

FIT_MAX = 200_000
"""Most labelled sources the final model is fitted on: above it, a stratified random sample."""


class QuantileBins(TransformerMixin, BaseEstimator):
    """Each column replaced by the number of its quantile bin (a float; NaN stays NaN), with at
    most ``n_bins`` bins cut at the unweighted quantiles of the training rows (one bin per
    value where a column has no more distinct values than that).

    Gradient boosting bins its inputs into 255 bins anyway; given at most that many distinct
    values it keeps them as they are, so boosting on the bin numbers splits where it would
    on the values. It spares scikit-learn's class-weighted bin search (one sort of the column
    per bin edge), which took 40% of the demo's analyse stage.
    """

    def __init__(self, n_bins: int = 255):
        self.n_bins = n_bins

    def fit(self, x: np.ndarray, y=None) -> "QuantileBins":
        levels = np.linspace(0.0, 1.0, self.n_bins + 1)[1:-1]
        self.edges_ = []
        for col in np.asarray(x, np.float64).T:
            col = col[np.isfinite(col)]
            distinct = np.unique(col)
            few = distinct.size <= self.n_bins  # a bin per value, as boosting itself does
            self.edges_.append(distinct[:-1] if few else np.unique(np.quantile(col, levels)))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        out = np.column_stack([np.searchsorted(e, col, side="left") for e, col in zip(self.edges_, x.T)])
        return np.where(np.isnan(x), np.nan, out).astype(np.float32)


def make_model(model: str, seed: int = 0) -> Pipeline:
    """A preprocessing + classifier Pipeline.

    Parameters
    ----------
    model : {"logreg", "rf", "hgb"}
        Multinomial logistic regression (the paper's linear classifier), a random forest
        of 200 trees, or histogram gradient boosting (up to 500 trees at rate 0.05, always
        stopped early: 10 rounds without progress on a 10 % validation split; on `QuantileBins`
        of the inputs, the other models on standardised inputs). Every class
        is weighted by the inverse of its share (``class_weight="balanced"``), so rare
        classes are not ignored.
    seed : int
        ``random_state`` of the classifier.

    Raises
    ------
    LatentcatError
        Unknown model name.
    """
    if model == "logreg":
        clf = LogisticRegression(max_iter=2000, class_weight="balanced")
    elif model == "rf":
        clf = RandomForestClassifier(
            n_estimators=200, min_samples_leaf=2, class_weight="balanced", n_jobs=-1,
            random_state=seed,
        )
    elif model == "hgb":
        clf = HistGradientBoostingClassifier(max_iter=500, learning_rate=0.05, early_stopping=True,
                                             n_iter_no_change=10, validation_fraction=0.1,
                                             class_weight="balanced", random_state=seed)
        return Pipeline([("bins", QuantileBins()), ("clf", clf)])
    else:
        raise LatentcatError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


# ---------------------------------------------------------------------------------------
# block sets per source


def block_presence(blocks: dict[str, np.ndarray]) -> np.ndarray:
    """Bool (n, len(blocks)): which of the blocks (in dict order) each source has (NaN rows = missing)."""
    return np.stack([~np.isnan(blocks[b][:, 0]) for b in blocks], axis=1)


def every(modality: str) -> str:
    """``"space"`` analyses the blocks of the search space a source has, as ``"all"`` does the latent ones."""
    return "all" if modality == SPACE else modality


def assign_block_sets(
    has: np.ndarray, modality: str, blocks: tuple[str, ...] = BLOCKS
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """The block set each source is analysed on.

    Parameters
    ----------
    has : bool (n, len(blocks))
        Block presence, see `block_presence`.
    modality : str
        ``"space"`` or ``"all"`` (each source on the blocks it has) or a block set such as
        ``"xp"`` or ``"dmdt+fold"`` (only the sources that have all of it).
    blocks : tuple of str
        The block names, in the column order of ``has``.

    Returns
    -------
    set_of : int (n,)
        Index into ``sets`` per source; -1 for a source with none of the requested blocks.
    sets : list of tuple
        The block sets in use, in canonical order.

    Raises
    ------
    LatentcatError
        Unknown modality.
    """
    try:
        wanted = parse_block_set(every(modality), blocks)
    except ValueError as err:
        raise LatentcatError(str(err)) from None
    bits = np.array([1 << i if b in wanted else 0 for i, b in enumerate(blocks)])
    code = (has * bits).sum(axis=1)
    if every(modality) != "all":
        full = int(bits.sum())
        code = np.where(code == full, full, 0)
    present = np.unique(code[code > 0])
    sets = [tuple(b for i, b in enumerate(blocks) if c >> i & 1) for c in present]
    lookup = np.full(1 << len(blocks), -1)
    lookup[present] = np.arange(len(present))
    return lookup[code], sets


def has_blocks(has: np.ndarray, block_set: tuple[str, ...], blocks: tuple[str, ...] = BLOCKS) -> np.ndarray:
    """Bool (n,): sources that have every block of ``block_set`` (and maybe more); ``blocks``
    names the columns of ``has``."""
    cols = [blocks.index(b) for b in block_set]
    return has[:, cols].all(axis=1)


def features(blocks: dict[str, np.ndarray], block_set: tuple[str, ...], rows) -> np.ndarray:
    """The concatenated blocks of ``block_set`` for the selected rows, float32 (m, 5 k)."""
    return np.hstack([blocks[b][rows] for b in block_set]).astype(np.float32, copy=False)


def _fallback(block_set: tuple[str, ...], fitted: dict) -> tuple[str, ...] | None:
    """The fitted block set to use for sources of ``block_set``: itself, else its largest subset."""
    if block_set in fitted:
        return block_set
    subsets = [s for s in fitted if set(s) < set(block_set)]
    if not subsets:
        return None
    return max(subsets, key=lambda s: (len(s), fitted[s][1]))


# ---------------------------------------------------------------------------------------
# fitting and predicting per block set


ROUNDS_WITHOUT_STOP = 100
"""Boosting rounds where early stopping cannot hold out every class (`fit_model`)."""


def fit_model(template: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """A clone of ``template`` fitted on ``x, y``. Gradient boosting stops early on a stratified
    tenth of the sources held out; where that tenth cannot hold every class (a class of one
    source, or fewer sources than a tenth per class needs), it runs `ROUNDS_WITHOUT_STOP`
    rounds instead: with no held-out check, more rounds of class-weighted boosting can drift
    far from the best fit."""
    model = clone(template)
    clf = model.named_steps["clf"]
    if isinstance(clf, HistGradientBoostingClassifier) and clf.early_stopping is True:
        counts = np.unique(y, return_counts=True)[1]
        if counts.size == 0 or counts.min() < 2 or int(np.floor(clf.validation_fraction * y.size)) < counts.size:
            model.set_params(clf__early_stopping=False, clf__max_iter=min(clf.max_iter, ROUNDS_WITHOUT_STOP))
    return model.fit(x, y)


def _fit_per_set(template, blocks, has, y, train, sets) -> dict:
    """Fit one clone of ``template`` per block set; {set: (pipeline, n_train)}."""
    fitted = {}
    for s in sets:
        rows = train & has_blocks(has, s, tuple(blocks))
        if np.unique(y[rows]).size < 2:
            continue
        fitted[s] = (fit_model(template, features(blocks, s, rows), y[rows]), int(rows.sum()))
    return fitted


def _predict_per_set(fitted, blocks, set_of, sets, rows):
    """Predicted class code, probability and model used (index into the returned names) for
    ``rows``; -1 where no model applies."""
    n = rows.size
    pred = np.full(n, -1, np.int64)
    prob = np.full(n, np.nan, np.float32)
    used = np.full(n, -1, np.int64)
    order = list(fitted)
    for i, s in enumerate(sets):
        sel = rows & (set_of == i)
        model_set = _fallback(s, fitted)
        if model_set is None or not sel.any():
            continue
        model = fitted[model_set][0]
        p = model.predict_proba(features(blocks, model_set, sel))
        best = p.argmax(axis=1)
        pred[sel] = model.classes_[best]
        prob[sel] = p[np.arange(best.size), best]
        used[sel] = order.index(model_set)
    return pred, prob, used, [block_set_name(s) for s in order]


def _predict_native(pipe, blocks, set_of, sets):
    """`_predict_per_set` for one model on every block (NaN where missing): each source with
    a code is predicted, and its own block set names what the model saw."""
    rows = set_of >= 0
    n = rows.size
    pred = np.full(n, -1, np.int64)
    prob = np.full(n, np.nan, np.float32)
    if rows.any():
        p = pipe.predict_proba(features(blocks, tuple(blocks), rows))
        best = p.argmax(axis=1)
        pred[rows] = pipe.classes_[best]
        prob[rows] = p[np.arange(best.size), best]
    return pred, prob, set_of.astype(np.int64), [block_set_name(s) for s in sets]


def model_id(model: str, params: dict, labels: str, classes: list[str], seed: int,
             modality: str, build_id: str) -> str:
    """``<model>-<12 hex>``: a hash of everything that decides the fitted models."""
    record = json.dumps(
        {"model": model, "params": params, "labels": labels, "classes": classes,
         "seed": seed, "modality": modality, "build": build_id},
        sort_keys=True, default=repr,
    )
    return f"{model}-{hashlib.sha256(record.encode()).hexdigest()[:12]}"


class BlockSetClassifier(ClassifierMixin, BaseEstimator):
    """One scikit-learn classifier per block set: each source is classified on exactly the
    blocks it has (the rule of the module docstring). A scikit-learn estimator: ``fit(blocks,
    y)``, ``predict(blocks)``; ``get_params`` and ``clone`` work. ``predict_table`` gives the
    rows of the catalogue's predictions table.

    Parameters
    ----------
    model : {"hgb", "rf", "logreg"}
        See `make_model`.
    modality : str
        ``"space"`` (the blocks are the search-space parts), ``"all"`` or a block set.
    seed : int
        ``random_state`` of the classifiers.
    labels : str
        Where the labels came from (``table.column``), recorded in the model id.
    build_id : str
        Identifier of the catalogue build, recorded in the model id.

    Attributes
    ----------
    classes_ : list of str
        Class names, sorted.
    models_ : dict
        Block-set name (``"xp+dmdt+fold"``, ``"dmdt+fold"``, ...) -> fitted Pipeline; it
        predicts indices into ``classes_``. A ``native_`` classifier has one, named by every
        block.
    native_ : bool
        One model on every block, a missing block as NaN (`NATIVE_MISSING`), rather than one
        per block set.
    training_ : dict
        Block-set name -> number of labelled sources that model was fitted on (it breaks
        ties between fallback models of equal size).
    model_id_ : str
        Key of its rows in the catalogue's predictions table (`model_id`).
    """

    def __init__(self, model: str = "hgb", modality: str = SPACE, seed: int = 0, labels: str = "labels",
                 build_id: str = ""):
        self.model = model
        self.modality = modality
        self.seed = seed
        self.labels = labels
        self.build_id = build_id

    def fit(self, blocks: dict[str, np.ndarray], y, sets: list[tuple[str, ...]] | None = None) -> BlockSetClassifier:
        """Fit one model per block set.

        Parameters
        ----------
        blocks : dict of float32 (n, d)
            Rows of a missing block are NaN.
        y : array_like (n,)
            Class name per source; None where the source is not trained on.
        sets : list of tuple, optional
            The block sets to fit a model for (default: the sets the sources have).
        """
        y = np.asarray(y, dtype=object)
        known = np.array([v is not None for v in y], bool)
        self.classes_ = sorted({str(v) for v in y[known]})
        code = np.full(y.size, -1, np.int64)
        code[known] = np.searchsorted(self.classes_, y[known].astype(str))
        has = block_presence(blocks)
        if sets is None:
            _, sets = assign_block_sets(has, self.modality, tuple(blocks))
        template = make_model(self.model, self.seed)
        self.native_ = self.model in NATIVE_MISSING and every(self.modality) == "all"
        if self.native_:  # one model on every block, a missing block as NaN
            sets = [tuple(blocks)]
            rows = known & has.any(axis=1)
            fitted = {}
            if np.unique(code[rows]).size >= 2:
                fitted[sets[0]] = (fit_model(template, features(blocks, sets[0], rows), code[rows]), int(rows.sum()))
        else:
            fitted = _fit_per_set(template, blocks, has, code, known, sets)
        self.models_ = {block_set_name(s): pipe for s, (pipe, _) in fitted.items()}
        self.training_ = {block_set_name(s): n for s, (_, n) in fitted.items()}
        params = {**template.get_params(deep=True)["clf"].get_params(), "native": self.native_}
        self.model_id_ = model_id(self.model, params, self.labels, self.classes_, self.seed, self.modality, self.build_id)
        return self

    def _predict(self, blocks: dict[str, np.ndarray]):
        names = tuple(blocks)
        set_of, sets = assign_block_sets(block_presence(blocks), self.modality, names)
        if getattr(self, "native_", False):  # a model stored before native models is per block set
            pipe = self.models_.get(block_set_name(names))
            if pipe is None:  # fewer than two classes were labelled
                return np.full(set_of.size, -1), np.full(set_of.size, np.nan, np.float32), set_of, []
            return _predict_native(pipe, blocks, set_of, sets)
        fitted = {parse_block_set(name, names): (pipe, self.training_[name]) for name, pipe in self.models_.items()}
        return _predict_per_set(fitted, blocks, set_of, sets, set_of >= 0)

    def predict(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """Class name per source (object array); None where no model applies."""
        pred = self._predict(blocks)[0]
        out = np.full(pred.size, None, dtype=object)
        out[pred >= 0] = np.asarray(self.classes_, dtype=object)[pred[pred >= 0]]
        return out

    def predict_table(self, ids: np.ndarray, blocks: dict[str, np.ndarray]) -> pa.Table:
        """Predict sources by the block-set rule of the module docstring.

        Parameters
        ----------
        ids : int64 (n,)
            Gaia source_ids.
        blocks : dict of float32 (n, d)
            Rows of a missing block are NaN.

        Returns
        -------
        pyarrow.Table
            ``source_id, class, probability, model_id, blocks`` for the sources that have a
            code of the fitted modality and a model for it, in the order of ``ids``.
        """
        ids = np.asarray(ids, np.int64)
        pred, prob, used, used_names = self._predict(blocks)
        done = pred >= 0
        return pa.table({
            "source_id": pa.array(ids[done], pa.int64()),
            "class": pa.array(np.asarray(self.classes_, dtype=object)[pred[done]], pa.string()),
            "probability": pa.array(prob[done], pa.float32()),
            "model_id": pa.array([self.model_id_] * int(done.sum()), pa.string()),
            "blocks": pa.DictionaryArray.from_arrays(
                pa.array(used[done], pa.int32()), pa.array(used_names, pa.string())
            ).cast(pa.string()),
        })


@dataclass(frozen=True)
class ClassifyResult:
    """What `classify` returns.

    Attributes
    ----------
    model_id : str
        Key of the predictions in the catalogue's predictions table.
    model, modality, labels : str
        The arguments used.
    classes : list of str
        Classes trained on, in the order of ``confusion``'s rows and columns.
    report : pyarrow.Table
        Cross-validated ``class, precision, recall, f1, support`` per class.
    macro_f1 : float
        Unweighted mean of the per-class F1.
    confusion : int64 (k, k)
        Cross-validated confusion matrix, rows = true class, columns = predicted.
    left_out : dict
        Classes with too few labelled sources (name -> count); not trained on.
    predictions : pyarrow.Table
        ``source_id, class, probability, model_id, blocks`` for every source that has at
        least one of the requested blocks and a model for them (``blocks``: the block set
        its model used).
    n_without_code : int
        Catalogue sources with none of the requested blocks (not predicted).
    n_without_model : int
        Sources with a code but no model for any of their block sets (their labelled
        neighbours in that block set hold fewer than two classes); not predicted.
    n_unscored : int
        Sources of the cross-validation sample that got no cross-validated prediction.
    n_cross_validated : int
        Labelled sources of the kept classes that the cross-validation scores: all of them,
        or a stratified sample of `CV_MAX`.
    training : dict
        Block-set name -> number of labelled sources its final model was fitted on.
    baseline : dict or None
        When `classify` was given ``baseline`` numbers (the classic light-curve numbers of
        `CLASSIC`): the same classifier, cross-validated on the same folds, on those numbers
        alone. ``n`` (labelled sources of the kept classes that have them), ``macro_f1`` (this
        classifier's out-of-fold macro F1 on exactly those sources) and ``baseline_macro_f1``
        (the classifier on the baseline numbers): what the latents add.
    fitted : BlockSetClassifier
        The final models, to predict new sources or store with the catalogue.
    """

    model_id: str
    model: str
    modality: str
    labels: str
    classes: list[str]
    report: pa.Table
    macro_f1: float
    confusion: np.ndarray
    left_out: dict[str, int]
    predictions: pa.Table
    n_without_code: int
    n_without_model: int
    n_unscored: int
    n_cross_validated: int = 0
    training: dict[str, int] = field(default_factory=dict)
    baseline: dict | None = None
    fitted: BlockSetClassifier | None = field(default=None, repr=False, compare=False)


def classify(
    ids: np.ndarray,
    blocks: dict[str, np.ndarray],
    labels: np.ndarray,
    *,
    model: str = "hgb",
    modality: str = SPACE,
    min_per_class: int = 10,
    cv: int = 3,
    seed: int = 0,
    labels_name: str = "labels",
    build_id: str = "",
    baseline: np.ndarray | None = None,
) -> ClassifyResult:
    """Cross-validate a classifier on the labelled sources and predict every source.

    Parameters
    ----------
    ids : int64 (n,)
        Gaia source_ids.
    blocks : dict of float32 (n, d)
        The search-space parts ``xp``, ``dmdt``, ``fold``, ``colour`` (modality ``"space"``)
        or the latent blocks ``xp``, ``dmdt``, ``fold``; rows of a missing block are NaN.
    labels : array_like (n,)
        Class name per source (a pyarrow or numpy array or a list), null where unlabelled.
    model : {"hgb", "rf", "logreg"}
        See `make_model` (default hgb).
    modality : str
        ``"space"`` (``blocks`` are the search-space parts), ``"all"`` or a block set of
        latent blocks; see the module docstring for the missing-block rule.
    min_per_class : int
        Classes with fewer usable labelled sources (or fewer than ``cv``) are left out.
    cv : int
        Number of stratified cross-validation folds (at least 2; 3 by default: each model is
        fitted on two thirds of the labelled sources).
    seed : int
        Seed of the fold split and of the classifiers.
    labels_name : str
        Where the labels came from (``table.column``), recorded in the model id.
    build_id : str
        Identifier of the catalogue build, recorded in the model id.
    baseline : float (n, k), optional
        Other numbers per source to score the same classifier on, for comparison (NaN rows:
        the source has none); see ``ClassifyResult.baseline``.

    Returns
    -------
    ClassifyResult

    Raises
    ------
    LatentcatError
        Bad arguments, or fewer than two classes with enough labelled sources.
    """
    if int(cv) < 2:
        raise LatentcatError(f"cv must be at least 2, got {cv}")
    template = make_model(model, seed)  # an unknown model name fails here, before any work
    estimator = BlockSetClassifier(model, modality, seed, labels_name, build_id)
    set_of, sets = assign_block_sets(block_presence(blocks), modality, tuple(blocks))
    usable = set_of >= 0
    y, classes, left_out = _class_codes(labels, usable, max(int(min_per_class), int(cv)), labels_name, modality)
    known = y >= 0
    y_names = np.full(ids.size, None, dtype=object)
    y_names[known] = np.asarray(classes, dtype=object)[y[known]]

    in_cv = stratified_sample(y, CV_MAX, seed, least=max(2, int(cv)))
    in_fit = stratified_sample(y, FIT_MAX, seed, least=2)
    fold_tasks, fold_tests, base_tests = _fold_tasks(estimator, template, blocks, np.where(in_cv, y, -1), y_names, sets,
                                                     baseline, cv, seed)
    final_task = delayed(_fitted)(estimator, {b: v[in_fit] for b, v in blocks.items()}, y_names[in_fit], sets)
    *fold_models, final = _run_parallel([*fold_tasks, final_task])
    oof, oof_base = _out_of_fold(fold_models, blocks, baseline, fold_tests, base_tests, classes)
    scored = in_cv & (oof >= 0)
    report, confusion, f1 = _scores(y[scored], oof[scored], classes)

    # predictions for every source with a code, by the final model (fitted once on the labelled sources)
    predictions = final.predict_table(ids, blocks)
    return ClassifyResult(
        model_id=final.model_id_,
        model=model,
        modality=modality,
        labels=labels_name,
        classes=classes,
        report=report,
        macro_f1=float(np.mean(f1)),
        confusion=confusion.astype(np.int64),
        left_out=left_out,
        predictions=predictions,
        n_without_code=int((~usable).sum()),
        n_without_model=int(usable.sum()) - predictions.num_rows,
        n_unscored=int((in_cv & ~scored).sum()),
        n_cross_validated=int(in_cv.sum()),
        training=dict(final.training_),
        baseline=_against_baseline(y, oof, oof_base, scored),
        fitted=final,
    )


def stratified_sample(y: np.ndarray, cap: int, seed: int, least: int = 1) -> np.ndarray:
    """Bool mask of the labelled rows (``y >= 0``, class codes) to use: all of them up to
    ``cap``, else a seeded random sample of about ``cap`` that keeps each class's share (and
    at least ``least`` of each class, so stratified folds still hold every class)."""
    labelled = np.flatnonzero(y >= 0)
    keep = np.zeros(y.size, bool)
    if labelled.size <= cap:
        keep[labelled] = True
        return keep
    rng = np.random.default_rng(seed)
    for k in np.unique(y[labelled]):
        rows = labelled[y[labelled] == k]
        take = min(rows.size, max(least, int(round(cap * rows.size / labelled.size))))
        keep[rng.choice(rows, take, replace=False)] = True
    return keep


def _class_codes(labels, usable: np.ndarray, need: int, labels_name: str, modality: str):
    """(class code per source, -1 where unlabelled, unusable or of a left-out class; the kept
    classes, sorted; the left-out classes with their counts)."""
    encoded = pc.cast(pa.array(labels), pa.string()).dictionary_encode()
    code = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    labelled = (code >= 0) & usable
    counts = np.bincount(code[labelled], minlength=names.size)
    keep = counts >= need
    classes = sorted(names[keep].tolist())
    left_out = {str(c): int(m) for c, m in sorted(zip(names, counts)) if 0 < m < need}
    if len(classes) < 2:
        seen = {str(c): int(m) for c, m in zip(names, counts) if m > 0}
        raise LatentcatError(
            f"{labels_name}: fewer than two classes with at least {need} labelled sources "
            f"that have a {modality} code (counts: {seen})"
        )
    # class code of each dictionary entry in the sorted class list; -1 for left-out classes
    to_class = np.full(names.size + 1, -1, np.int64)
    to_class[np.flatnonzero(keep)] = np.searchsorted(classes, names[keep].astype(str))
    return np.where(labelled, to_class[code], -1), classes, left_out


def _fold_tasks(estimator, template, blocks, y, y_names, sets, baseline, cv: int, seed: int):
    """The cross-validation fits of the labelled sources (``y >= 0``, class codes) as joblib
    tasks: per fold, the block-set classifier and the same classifier on ``baseline``, each
    given only the rows it fits. Returns (tasks; per fold, the rows the classifier predicts;
    per fold, the rows the baseline predicts or None)."""
    n = y.size
    has_base = np.isfinite(baseline).all(axis=1) if baseline is not None else np.zeros(n, bool)
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=seed)
    known_rows = np.flatnonzero(y >= 0)
    tasks, tests, base_tests = [], [], []
    for train_idx, test_idx in folds.split(known_rows, y[known_rows]):
        train, test = np.sort(known_rows[train_idx]), np.sort(known_rows[test_idx])
        tasks.append(delayed(_fitted)(estimator, {b: v[train] for b, v in blocks.items()}, y_names[train], sets))
        tests.append(test)
        fit_rows, test_rows = train[has_base[train]], test[has_base[test]]
        if test_rows.size and np.unique(y[fit_rows]).size >= 2:
            tasks.append(delayed(fit_model)(template, baseline[fit_rows], y[fit_rows]))
            base_tests.append(test_rows)
        else:
            base_tests.append(None)
    return tasks, tests, base_tests


def _fitted(estimator, blocks, names, sets) -> BlockSetClassifier:
    """A clone of ``estimator`` fitted on every row given (a fold's training rows, or the final
    model's)."""
    return clone(estimator).fit(blocks, names, sets=sets)


def _run_parallel(tasks: list) -> list:
    """Run joblib tasks, one process per core (at most one per task), and return their results
    in order. The cross-validation fits are small (at most `CV_MAX` sources), and a small
    gradient-boosting fit runs best on one thread: OpenMP threads of one fit spend their time
    waiting for each other, several times longer when another process holds a core. So the fits
    (the final one, on up to `FIT_MAX` sources, among them) run side by side, each process given
    its share of the cores' threads (joblib's loky backend), rather than one after the other on
    every thread."""
    n_jobs = max(1, min(len(tasks), cpu_count()))
    return Parallel(n_jobs=n_jobs)(tasks)


def _out_of_fold(fold_models: list, blocks, baseline, tests: list, base_tests: list, classes: list[str]):
    """Cross-validated class codes of every labelled source of the kept classes (-1: none):
    each fold's held-out rows predicted by the models its `_fold_tasks` fitted (in their order),
    the block-set classifier and the same classifier on the baseline numbers."""
    n = len(next(iter(blocks.values())))
    oof = np.full(n, -1, np.int64)
    oof_base = np.full(n, -1, np.int64)
    models = iter(fold_models)
    for test, base_test in zip(tests, base_tests):
        got = next(models).predict({b: v[test] for b, v in blocks.items()})
        ok = np.array([g is not None for g in got], bool)
        oof[test[ok]] = np.searchsorted(classes, got[ok].astype(str))
        if base_test is not None:
            oof_base[base_test] = next(models).predict(baseline[base_test])
    return oof, oof_base


def _scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]):
    """(per-class report table, confusion matrix, per-class F1) of cross-validated predictions."""
    k = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=k, zero_division=0)
    report = pa.table({
        "class": pa.array(classes, pa.string()),
        "precision": pa.array(precision, pa.float32()),
        "recall": pa.array(recall, pa.float32()),
        "f1": pa.array(f1, pa.float32()),
        "support": pa.array(support, pa.int64()),
    })
    return report, confusion_matrix(y_true, y_pred, labels=k), f1


def _against_baseline(y, oof, oof_base, scored) -> dict | None:
    """``ClassifyResult.baseline``: both classifiers' macro F1 on the sources both scored."""
    both = scored & (oof_base >= 0)
    if not both.any():
        return None
    k_both = np.unique(y[both])

    def macro_f1(pred):
        return float(np.mean(precision_recall_fscore_support(y[both], pred[both], labels=k_both, zero_division=0)[2]))

    return {"n": int(both.sum()), "macro_f1": macro_f1(oof), "baseline_macro_f1": macro_f1(oof_base)}


__all__ = [
    "CV_MAX", "FIT_MAX", "MODELS", "NATIVE_MISSING", "BlockSetClassifier", "ClassifyResult", "assign_block_sets", "block_presence",
    "classify", "features", "fit_model", "has_blocks", "make_model", "model_id", "stratified_sample",
]
