"""Names of the files and folders of a catalogue and of a build's work area.

A catalogue folder::

    catalog.duckdb        the tables, views and macros (sql/)
    index/                FAISS indexes, one per block set and search-space part set
    embeddings_hats/      the embeddings as a HATS catalogue (lsdb, nested-pandas)
    analysis/             the fitted classifier, outlier and map models (`latentcat.analysis.store`)
    models/               the trained VAEs
    features/             features-<first source_id>.parquet shards

A build's work area (``[output] work``) holds ``stage/`` (the staged archive tables),
``features/``, ``models/`` and ``embeddings/`` (embeddings-*.parquet shards); a crashed build
resumes from it.
"""

from __future__ import annotations

from pathlib import Path

from latentcat.errors import InputError

DB_NAME = "catalog.duckdb"
INDEX_DIR = "index"
HATS_DIR = "embeddings_hats"
ANALYSIS_DIR = "analysis"
MODELS_DIR = "models"
FEATURES_DIR = "features"
EMBEDDINGS_DIR = "embeddings"
STAGE_DIR = "stage"

STAGED_TABLES = ("light_curves", "xp", "sources", "labels")
"""The staging tables `latentcat ingest` writes (each only when some input had that data)."""

INGEST_REPORT = "ingest_report.json"


def staged(stage_dir: Path, table: str) -> Path:
    """The file of a staging table: ``<stage_dir>/<table>.parquet``."""
    return Path(stage_dir) / f"{table}.parquet"


def shards(folder: Path, prefix: str) -> list[Path]:
    """The ``<prefix>-*.parquet`` shards of a folder, in order.

    Raises
    ------
    InputError
        The folder holds none.
    """
    paths = sorted(Path(folder).glob(f"{prefix}-*.parquet"))
    if not paths:
        raise InputError(f"{folder}: no {prefix}-*.parquet shards")
    return paths
