"""`latentcat build`: one configuration in, one complete catalogue folder out.

The stages run in one direction, each reading the previous one's folder:

    inputs (archive files, or a simulated survey)
      -> stage/        latentcat.gaia.ingest         canonical Parquet tables
      -> features/     latentcat.features.extract    dm-dt maps, periods, folds, XP vectors
      -> models/       latentcat.models.trainer      the three VAEs
      -> embeddings/   latentcat.models.embed        15 latents per source
      -> catalog.duckdb + index/   latentcat.catalog.store
      -> analyse       latentcat.analyse: classifier predictions, outlier scores, 2-D map

Everything is written into ``<catalog>.partial/``; ``build_state.json`` there records the
finished stages, so ``--resume`` after a crash starts at the first unfinished stage (the
feature stage also resumes shard by shard). Only a complete build is renamed to the
catalogue folder, so a reader never sees a half-built catalogue.

``[compute]`` (scheduler, address) and ``[features] workers`` say where the ingest (one job per
input file), feature and embed (one job per shard) stages run: this machine's processes or a
Dask cluster (docs/dask.md). Training, the catalogue and the analysis run in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from latentcat.atomic import swap_in, write_file
from latentcat.config import BuildConfig
from latentcat.errors import LatentcatError
from latentcat.layout import DB_NAME, EMBEDDINGS_DIR, FEATURES_DIR, HATS_DIR, INDEX_DIR, MODELS_DIR, STAGE_DIR
from latentcat.lock import writer_lock
from latentcat.provenance import input_checksums, input_fingerprint, software_versions
from latentcat.features import MIN_EPOCHS, SHARD_SIZE

STAGES = ("ingest", "features", "train", "embed", "catalog", "analyse")

console = Console(stderr=True)


class BuildState:
    """The finished stages of a build and their reports, kept in ``build_state.json``, with the
    configuration and the inputs they were made from: a resumed build refuses to go on when
    either changed."""

    def __init__(self, path: Path, config_hash: str, inputs: dict[str, list[int]]):
        self.path = path
        fresh = {"config": config_hash, "inputs": inputs, "done": {}}
        self.data: dict = json.loads(path.read_text()) if path.exists() else fresh
        if self.data.get("config") != config_hash:
            raise LatentcatError(
                f"{path.parent}: the configuration changed since this build started; "
                "rerun without --resume to start afresh"
            )
        before = self.data.get("inputs", {})
        changed = sorted(set(before) ^ set(inputs) | {f for f in set(before) & set(inputs) if before[f] != inputs[f]})
        if changed:
            raise LatentcatError(
                f"{path.parent}: input {changed[0]} changed (or appeared, or went) since this build started"
                f"{f', and {len(changed) - 1} more' if len(changed) > 1 else ''}; rerun without --resume to start afresh"
            )

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished in an earlier run."""
        return stage in self.data["done"]

    def report(self, stage: str) -> dict:
        """The report of a finished stage."""
        return self.data["done"][stage]

    def finish(self, stage: str, report: dict) -> None:
        """Record ``stage`` as finished (atomically, so a crash here loses nothing)."""
        self.data["done"][stage] = report
        write_file(self.path, lambda tmp: tmp.write_text(json.dumps(self.data, indent=2, default=str)))


def _run_stage(state: BuildState, stage: str, number: int, func: Callable[[], dict]) -> dict:
    label = f"[{number}/{len(STAGES)}] {stage}"
    if state.done(stage):
        console.print(f"{label}: already done, skipped (resume)")
        return state.report(stage)
    console.print(f"{label} ...")
    t0 = time.perf_counter()
    report = func()
    report = {**report, "stage_seconds": round(time.perf_counter() - t0, 2)}
    state.finish(stage, report)
    console.print(f"{label}: done in {report['stage_seconds']:.1f} s")
    return report


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished build ``new`` to ``target``, atomically replacing an older catalogue there."""
    if not target.exists():
        os.replace(new, target)
        return
    swap_in(new, target)  # the old catalogue is now at ``new``
    shutil.rmtree(new)


def _input_paths(config: BuildConfig, work: Path) -> list[Path]:
    """The archive files and folders a build reads: ``[inputs] paths``, or a survey it simulates
    into ``work/simulated`` (kept there, so a resumed build does not simulate it again)."""
    from latentcat.gaia.simulate import simulate_survey

    simulate_n = int(config.inputs.get("simulate_n", 0))
    if simulate_n > 0:
        sim_dir = work / "simulated"
        if not (sim_dir / "truth.parquet").exists():
            console.print(f"simulating a survey of {simulate_n} sources (seed {config.seed})")
            simulate_survey(n=simulate_n, seed=config.seed, out=sim_dir)
        return [sim_dir / "archive"]
    input_paths = config.input_paths()
    if not input_paths:
        raise LatentcatError(f"{config.path}: [inputs] gives neither paths nor simulate_n")
    return input_paths


def _write_catalogue(work: Path, config: BuildConfig, input_paths: list[Path], reports: dict) -> dict:
    """The catalogue stage: catalog.duckdb, the indexes and the HATS copy in ``work``, with the
    build record (configuration, input checksums, versions, stage reports) in build_info."""
    from latentcat.catalog.add import complete_sources, staged_ids
    from latentcat.catalog.store import write_catalog

    stage_dir = work / STAGE_DIR
    db = work / DB_NAME
    if db.exists():  # a crash inside this stage: start it again
        db.unlink()
    shutil.rmtree(work / INDEX_DIR, ignore_errors=True)
    shutil.rmtree(work / HATS_DIR, ignore_errors=True)
    inputs = input_checksums(input_paths)
    info = {
        "build_id": hashlib.sha256(json.dumps([config.raw, inputs, config.seed], sort_keys=True,
                                              default=str).encode()).hexdigest()[:12],
        "config": config.raw,
        "config_file": str(config.path),
        "seed": config.seed,
        "versions": software_versions(),
        "inputs": inputs,
        "stages": dict(reports),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # a source with a light curve or XP spectrum but no gaia_source row in the inputs gets a
    # bare sources row (its gaia_source columns NULL: unknown), as `latentcat add` gives it
    bare = complete_sources(stage_dir, staged_ids(stage_dir))
    written = write_catalog(work, stage_dir, work / FEATURES_DIR, work / EMBEDDINGS_DIR, info, seed=config.seed)
    return {**written, "bare_source_rows": bare}


def _finish(work: Path, target: Path) -> None:
    """Drop what the finished catalogue no longer needs and swap it in as ``target``."""
    shutil.rmtree(work / STAGE_DIR, ignore_errors=True)  # its tables now live in catalog.duckdb
    if (work / "simulated" / "truth.parquet").exists():  # keep the simulation's truth for evaluation
        os.replace(work / "simulated" / "truth.parquet", work / "truth.parquet")
    shutil.rmtree(work / "simulated", ignore_errors=True)
    (work / "build_state.json").unlink()
    _replace_dir(work, target)
    console.print(f"catalogue written to {target}")


def build(config: BuildConfig, out: Path | None = None, resume: bool = False) -> dict:
    """Run every stage of ``config`` and write the catalogue folder; returns the build report.

    Parameters
    ----------
    config : the parsed build configuration (`latentcat.config.load_build_config`).
    out : the catalogue folder; default ``[output] catalog`` of the configuration, else ./catalog.
    resume : continue an interrupted build in ``<out>.partial`` instead of starting afresh.

    The build holds the catalogue's writer lock (`latentcat.lock`) from start to finish: a second
    build, ``add``, ``classify`` or ``outliers`` of the same catalogue waits for it.
    """

    target = Path(out or config.output.get("catalog", "catalog"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(target, "latentcat build"):
        return _build_locked(config, target, resume)


def _build_locked(config: BuildConfig, target: Path, resume: bool) -> dict:
    """`build` once it holds the writer lock of ``target``."""
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.models.embed import embed
    from latentcat.models.trainer import train

    work = target.with_name(target.name + ".partial")
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    config_hash = hashlib.sha256(json.dumps(config.raw, sort_keys=True, default=str).encode()).hexdigest()
    stage_dir, features_dir = work / STAGE_DIR, work / FEATURES_DIR
    models_dir, emb_dir = work / MODELS_DIR, work / EMBEDDINGS_DIR

    input_paths = _input_paths(config, work)
    state = BuildState(work / "build_state.json", config_hash, input_fingerprint(input_paths))

    compute = {"scheduler": str(config.compute.get("scheduler", "processes")),
               "address": str(config.compute.get("address", "")) or None,
               "n_workers": int(config.features.get("workers", 1))}
    reports = {}
    reports["ingest"] = _run_stage(
        state, "ingest", 1,
        lambda: ingest(input_paths, stage_dir,
                       keep_variability_rejected=bool(config.inputs.get("keep_variability_rejected", False)),
                       **compute),
    )
    reports["features"] = _run_stage(
        state, "features", 2,
        lambda: extract_features(
            stage_dir, features_dir,
            shard_size=int(config.features.get("shard_size", SHARD_SIZE)),
            min_epochs=int(config.features.get("min_epochs", MIN_EPOCHS)),
            resume=True,
            **compute,
        ),
    )
    reports["train"] = _run_stage(
        state, "train", 3, lambda: train(features_dir, models_dir, config=config.train, device=config.device, resume=True)
    )
    reports["embed"] = _run_stage(state, "embed", 4, lambda: embed(features_dir, models_dir, emb_dir, device=config.device,
                                                                    threads=config.train.threads, **compute))

    reports["catalog"] = _run_stage(state, "catalog", 5, lambda: _write_catalogue(work, config, input_paths, reports))
    reports["analyse"] = _run_stage(state, "analyse", 6, lambda: analyse(work, config))

    _finish(work, target)
    return {"path": str(target), "stages": reports}


def analyse(cat_dir: Path, config: BuildConfig) -> dict:
    """Classifier predictions, outlier scores and the 2-D map, written into the catalogue.

    ``[analyse]`` keys: ``labels`` (the ``table.column`` to learn from,
    "labels.best_class_name"), ``classifier`` ("hgb", the default, "rf" or "logreg"), ``outliers``
    (true: isolation forest and reconstruction-loss rankings), ``map`` (true: the parametric
    2-D map). The confusion matrix and the map are also drawn into ``figures/``.
    """
    from latentcat.analyse import analyse as run_analyses
    from latentcat.catalog import store
    from latentcat.plots import plot_confusion, plot_map
    from latentcat.query import open as open_catalog

    opts = config.analyse
    with open_catalog(cat_dir) as cat:
        labels = cat.sql("SELECT source_id, best_class_name FROM labels")
    model = opts.get("classifier", "hgb")
    done = run_analyses(
        cat_dir,
        classifier={"labels": opts.get("labels", "labels.best_class_name"), "model": model}
        if labels.num_rows and model else None,
        outliers=[("isolation_forest", "space"), ("recon_loss", "all")] if opts.get("outliers", True) else (),
        map_model={} if opts.get("map", True) else None,
        seed=config.seed, keep=False, lock=False,  # the build holds the lock of its catalogue
    )
    report: dict = dict(done.rows)
    figures = cat_dir / "figures"
    figures.mkdir(exist_ok=True)
    result = done.classifier
    if result is not None:
        report["classifier"] = {
            "model_id": result.model_id, "macro_f1": result.macro_f1, "left_out": result.left_out,
            "classic_numbers": result.baseline, "per_class": result.report.to_pylist(),
        }
        plot_confusion(result.confusion, result.classes, out=figures / "confusion.png",
                       title=f"{result.model_id}: cross-validated, macro F1 {result.macro_f1:.2f}")
    if done.map is not None and done.map[0].num_rows:
        coloured = done.map[0].join(labels, "source_id", join_type="left outer")
        plot_map(coloured.column("x").to_numpy(), coloured.column("y").to_numpy(),
                 categories=coloured.column("best_class_name").to_pylist(),
                 out=figures / "map.png", title="latent map, coloured by DR3 class")
    manifest = done.manifest
    report["stored_models"] = {k: list(manifest.get(k, [])) for k in ("classifiers", "outliers")} | {"map": "map" in manifest}
    store.update_build_info(cat_dir, {"analyse": report})
    return report
