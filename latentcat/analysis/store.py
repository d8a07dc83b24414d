"""The fitted analysis models of a catalogue, kept in its ``analysis/`` folder.

A catalogue's predictions, outlier scores and 2-D map come from models fitted on the whole
catalogue (`latentcat.analyse`). They are stored beside the tables they produced, so that
``latentcat add`` can give sources added later rows made by the very same models:

    analysis/manifest.json          what is stored: model ids, methods, classes, versions
    analysis/classifier-<model_id>.joblib
                                    `latentcat.analysis.classify.BlockSetClassifier`
    analysis/outliers-<method>-<modality>.joblib
                                    `latentcat.analysis.outliers.OutlierModel` (isolation forests
                                    per block set, or the median and MAD of each loss)
    analysis/map.joblib             `latentcat.analysis.latent_map.LatentMap` (the torch network
                                    with its standardisation and parameters)

The files are written with joblib, scikit-learn's recommended persistence: they are pickles,
so load only catalogues you trust, with the scikit-learn and torch versions the manifest
names.

    >>> save_analysis("cat/", classifier=result, outliers=[forests], map_model=network)
    >>> load_analysis("cat/").classifiers[result.model_id].predict_table(ids, blocks)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import joblib

from latentcat.atomic import write_file
from latentcat.errors import LatentcatError
from latentcat.layout import ANALYSIS_DIR
from latentcat.provenance import software_versions

MANIFEST = "manifest.json"
MAP_FILE = "map.joblib"


@dataclass
class AnalysisModels:
    """The models stored with a catalogue (`load_analysis`).

    Attributes
    ----------
    classifiers : dict
        model_id (the predictions model_id column) -> BlockSetClassifier.
    outliers : dict
        ``"<method>:<modality>"`` (the outlier_scores method column) -> OutlierModel.
    map : LatentMap or None
    manifest : dict
        The contents of ``analysis/manifest.json``.
    """

    classifiers: dict = field(default_factory=dict)
    outliers: dict = field(default_factory=dict)
    map: object | None = None
    manifest: dict = field(default_factory=dict)


def _outlier_file(key: str) -> str:
    method, _, modality = key.partition(":")
    return f"outliers-{method}-{modality}.joblib"


def _dump(obj, path: Path) -> None:
    """Write a joblib file under a temporary name, then rename it: never rewrite a file in
    place (an `add` in progress may hold a hard link to it)."""
    write_file(path, lambda tmp: joblib.dump(obj, tmp))


def save_analysis(cat_dir: Path, classifier=None, outliers=(), map_model=None, keep: bool = False) -> dict:
    """Store fitted analysis models in ``<cat_dir>/analysis/``.

    The build stores all of its models at once (``keep=False``: whatever was stored before
    is removed). A later ``classify``/``outliers``/``map`` that writes its rows stores its
    model with ``keep=True``: the other stored models stay, one per model_id, outlier key
    and map.

    Parameters
    ----------
    cat_dir : Path
        The catalogue folder.
    classifier : ClassifyResult or BlockSetClassifier, optional
        The classifier whose predictions were written to the catalogue.
    outliers : iterable of OutlierModel
        The fitted models whose scores were written (one per method key).
    map_model : LatentMap, optional
        The map network whose coordinates were written.
    keep : bool
        Keep the models already stored (those of the same key are replaced).

    Returns
    -------
    dict
        The manifest written to ``analysis/manifest.json``.
    """
    folder = Path(cat_dir) / ANALYSIS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    before = _read_manifest(folder / MANIFEST) if keep and (folder / MANIFEST).is_file() else {}
    manifest: dict = {"format": 1, "versions": software_versions(),
                      "classifiers": dict(before.get("classifiers", {})),
                      "outliers": dict(before.get("outliers", {}))}
    if "map" in before:
        manifest["map"] = before["map"]
    fitted = getattr(classifier, "fitted", classifier)
    if fitted is not None:
        name = f"classifier-{fitted.model_id_}.joblib"
        _dump(fitted, folder / name)
        manifest["classifiers"][fitted.model_id_] = {
            "file": name, "model": fitted.model,
            "modality": fitted.modality, "labels": fitted.labels, "classes": list(fitted.classes_),
            "training": dict(fitted.training_),
        }
    for model in outliers:
        name = _outlier_file(model.key)
        _dump(model, folder / name)
        manifest["outliers"][model.key] = {
            "file": name, "seed": model.seed,
            "forests": {k: int(f.max_samples_) for k, f in getattr(model, "forests_", {}).items()},
            "median_mad": {k: list(v) for k, v in getattr(model, "robust_", {}).items()},
        }
    if map_model is not None:
        _dump(map_model, folder / MAP_FILE)
        manifest["map"] = {"file": MAP_FILE, "modality": map_model.modality,
                           "params": map_model.network_.get_params()}
    write_file(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str)))
    kept = {r["file"] for k in ("classifiers", "outliers") for r in manifest[k].values()}
    kept |= {manifest["map"]["file"]} if "map" in manifest else set()
    for old in folder.glob("*.joblib"):  # models of an earlier analysis must not linger
        if old.name not in kept:
            old.unlink()
    return manifest


def _load(path: Path):
    try:
        return joblib.load(path)
    except Exception as err:
        raise LatentcatError(
            f"{path}: cannot load the stored model ({' '.join(str(err).split())}); delete "
            f"{path.parent} to go on without the stored analysis models"
        ) from err


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LatentcatError(f"{path}: cannot read ({' '.join(str(err).split())})") from err


def load_analysis(cat_dir: Path) -> AnalysisModels | None:
    """The models stored with a catalogue; None when it has no ``analysis/`` manifest.

    Raises
    ------
    LatentcatError
        A manifest or model file that cannot be read.
    """
    folder = Path(cat_dir) / ANALYSIS_DIR
    path = folder / MANIFEST
    if not path.is_file():
        return None
    manifest = _read_manifest(path)
    models = AnalysisModels(manifest=manifest)
    for key, record in manifest.get("classifiers", {}).items():
        models.classifiers[key] = _load(folder / record["file"])
    for key, record in manifest.get("outliers", {}).items():
        models.outliers[key] = _load(folder / record["file"])
    if "map" in manifest:
        models.map = _load(folder / manifest["map"]["file"])
    return models


__all__ = ["AnalysisModels", "load_analysis", "save_analysis"]
