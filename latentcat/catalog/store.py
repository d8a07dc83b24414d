"""Write the catalogue: catalog.duckdb (tables from sql/schema.sql) and the FAISS indexes.

The SQL lives in the repository's ``sql/`` folder: ``schema.sql`` (tables), ``load.sql``
(checks and inserts, one named statement each), ``macros.sql`` (views and the table macros
stored in the file) and ``query.sql`` (what the read-only Catalog runs).
"""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latentcat.catalog import index as lc_index
from latentcat.catalog.hats import write_embeddings_hats
from latentcat.analysis.space import SearchSpace, present_sets, space_parts, space_rows
from latentcat.catalog.space_search import write_space_search
from latentcat.errors import InputError, LatentcatError
from latentcat.layout import DB_NAME, HATS_DIR, INDEX_DIR, shards, staged
from latentcat.errors import one_line as _one_line

SQL_DIR = Path(str(resources.files("latentcat") / "sql"))
"""Folder of the catalogue's SQL files."""

STORAGE_VERSION = "v1.1.0"
"""DuckDB storage format catalog.duckdb is written in (build_info ``catalog_format.storage_version``).

The oldest format that holds the catalogue: its FLOAT[n] arrays, JSON values, primary keys,
views and table macros all fit the format of DuckDB 1.0/1.1 (file version 64), which every
DuckDB from 1.1 on opens, the 1.x shells (1.4 reads versions 64-67, 1.5 64-68) included;
DuckDB 2's own format (69) opens in no 1.x client. 'v1.0.0' names the same format, but
DuckDB 1.0.0 cannot load the primary keys DuckDB 2 writes in it, hence 'v1.1.0'. (The
similar_to and similar_to_available macros call list_concat on more than two lists, which
DuckDB has from 1.3 on.) A written catalogue keeps its format: DuckDB writes to an existing
file (predictions, outlier scores, map, `latentcat add`) in the format the file has.
"""


REQUIRED_COLUMNS = {
    "sources": ("source_id",),
    "labels": ("source_id", "best_class_name", "best_class_score"),
    "features": (
        "source_id", "n_obs", "n_clipped", "g_mean", "g_median", "g_std", "g_amplitude",
        "g_skew", "time_span", "period", "period_fap", "period_power", "period_coherence",
        "period_reliable", "colour_slope", "colour_slope_err", "xp_scale",
        "lc_reason", "xp_reason",
    ),
    "embeddings": (
        "source_id", "z_xp", "z_dmdt", "z_fold", "z_logvar_xp", "z_logvar_dmdt",
        "z_logvar_fold", "has_xp", "has_dmdt", "has_fold", "recon_loss_xp",
        "recon_loss_dmdt", "recon_loss_fold",
    ),
}
"""Columns each input table must have (docs/schemas.md); others are ignored, except in sources."""


def sql_script(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text()


@cache
def sql_statements(name: str) -> dict[str, str]:
    """Named statements of ``sql/<name>.sql``: each block starts with ``-- name: <key>``."""
    blocks = re.split(r"^-- name: *(\S+) *$", sql_script(name), flags=re.MULTILINE)
    return {key: body.strip() for key, body in zip(blocks[1::2], blocks[2::2])}


def _check_columns(table: str, paths: list[Path]) -> None:
    for path in paths:
        try:
            names = set(pq.read_schema(path).names)
        except Exception as err:
            raise InputError(f"{path}: not a readable Parquet file ({_one_line(err)})") from err
        missing = [c for c in REQUIRED_COLUMNS[table] if c not in names]
        if missing:
            raise InputError(f"{path}: {table} table lacks column(s) {', '.join(missing)}")


def _first_problem(con: duckdb.DuckDBPyConnection, statement: str, paths: list[Path]) -> None:
    # fetchall, not fetchone: a partly fetched result would block the connection's relations
    rows = con.execute(sql_statements("load")[statement], {"paths": [str(p) for p in paths]}).fetchall()
    if rows:
        file, line, source_id, problem = rows[0]
        raise InputError(f"{file}: row {line}, source_id {source_id}: {problem}")


def _load(con: duckdb.DuckDBPyConnection, statement: str, paths: list[Path], what: str) -> None:
    try:
        con.execute(sql_statements("load")[statement], {"paths": [str(p) for p in paths]})
    except duckdb.Error as err:
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent}/{what}"
        raise InputError(f"{where}: cannot load {what}: {_one_line(err)}") from err


def _add_source_columns(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Give the sources table the extra gaia_source columns the staging table has."""
    have = {r[0] for r in con.execute("DESCRIBE sources").fetchall()}
    columns = con.execute(sql_statements("load")["columns_of"], {"paths": [str(path)]}).fetchall()
    for name, dtype in columns:
        if name not in have:
            ident = '"' + name.replace('"', '""') + '"'
            con.execute(f"ALTER TABLE sources ADD COLUMN {ident} {dtype}")


def load_tables(con: duckdb.DuckDBPyConnection, stage_dir: Path, features_dir: Path, emb_dir: Path) -> None:
    """Check and insert the staging, feature and embedding tables into an open catalogue.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A writable connection to a catalogue whose tables exist (``sql/schema.sql``).
    stage_dir : Path
        Staging folder with ``sources.parquet`` and (optionally) ``labels.parquet``.
    features_dir, emb_dir : Path
        Folders of ``features-*.parquet`` and ``embeddings-*.parquet`` shards.

    Raises
    ------
    InputError
        An input is missing or breaks docs/schemas.md (names the file, row and source_id).
    """
    sources = staged(stage_dir, "sources")
    if not sources.exists():
        raise InputError(f"{sources}: not found")
    labels = staged(stage_dir, "labels")
    tables = {
        "sources": [sources],
        "labels": [labels] if labels.exists() else [],
        "features": shards(features_dir, "features"),
        "embeddings": shards(emb_dir, "embeddings"),
    }
    for table, paths in tables.items():
        if not paths:
            continue
        _check_columns(table, paths)
        _first_problem(con, "first_bad_id", paths)
        if table == "labels":
            _first_problem(con, "first_bad_label", paths)
        if table == "embeddings":
            _first_problem(con, "first_bad_embedding", paths)
        if table == "sources":
            _add_source_columns(con, sources)
        _load(con, f"load_{table}", paths, table)
    rows = con.execute(sql_statements("load")["first_unknown_source"]).fetchall()
    if rows:
        raise InputError(
            f"{emb_dir}: source_id {rows[0][0]} has an embedding but no row in {sources}"
        )


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of the catalogue tables.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A connection to a catalogue; no result is left open on it.

    Returns
    -------
    dict
        Table name -> rows.
    """
    cur = con.execute(sql_statements("query")["table_counts"])
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchall()[0]))


def write_build_info(con: duckdb.DuckDBPyConnection, info: dict) -> None:
    """Store each top-level key of ``info`` as one build_info row (value as JSON)."""
    for key, value in info.items():
        con.execute(
            sql_statements("load")["put_build_info"],
            {"key": str(key), "value": json.dumps(value, default=str)},
        )


def update_build_info(cat_dir: Path, info: dict) -> None:
    """Add or replace top-level keys of a written catalogue's build record.

    Opens the catalogue for writing: no reader may hold it.
    """
    con = _writer(cat_dir)
    try:
        write_build_info(con, info)
    except duckdb.Error as err:
        raise LatentcatError(f"{Path(cat_dir) / DB_NAME}: cannot write build_info: {_one_line(err)}") from err
    finally:
        con.close()


def write_catalog(
    cat_dir: Path,
    stage_dir: Path,
    features_dir: Path,
    emb_dir: Path,
    build_info: dict,
    *,
    exact_max: int = lc_index.EXACT_MAX,
    target_recall: float = 0.98,
    seed: int = 0,
) -> dict:
    """Write catalog.duckdb and the FAISS indexes of a catalogue into ``cat_dir``.

    Parameters
    ----------
    cat_dir : Path
        Catalogue folder; created if needed, must not already hold a catalogue.
    stage_dir : Path
        Staging folder with ``sources.parquet`` and (optionally) ``labels.parquet``.
    features_dir, emb_dir : Path
        Folders of ``features-*.parquet`` and ``embeddings-*.parquet`` shards.
    build_info : dict
        How the catalogue was made (versions, config, seeds, checksums); stored in the
        build_info table, one row per top-level key.
    exact_max, target_recall, seed
        Index choice, see `latentcat.catalog.index.build_index`.

    Returns
    -------
    dict
        ``build_info`` plus ``counts`` (rows per table), ``indexes`` (per block set:
        type, size, recall@10 against exact search) and ``embeddings_hats`` (the HATS copy of
        the embeddings in ``cat_dir/embeddings_hats``: path relative to ``cat_dir``, rows,
        leaves; see `latentcat.catalog.hats.write_embeddings_hats`), as stored in the catalogue.

    Raises
    ------
    InputError
        An input is missing or breaks docs/schemas.md (names the file, row and source_id).
    """
    cat_dir = Path(cat_dir)
    db_path = cat_dir / DB_NAME
    if db_path.exists():
        raise LatentcatError(f"{db_path}: a catalogue already exists here")
    cat_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path), config={"storage_compatibility_version": STORAGE_VERSION})
    try:
        con.execute(sql_script("schema"))
        con.execute(sql_script("space_search"))
        load_tables(con, Path(stage_dir), Path(features_dir), Path(emb_dir))
        con.execute(sql_script("macros"))
        codes = con.sql(sql_statements("load")["codes_for_index"]).to_arrow_table()
        indexes = lc_index.build_indexes(
            codes, cat_dir / INDEX_DIR, exact_max=exact_max, target_recall=target_recall, seed=seed
        )
        ids, latents = lc_index.codes_to_numpy(codes)
        colour = con.sql(sql_statements("load")["colour_for_space"]).to_arrow_table().column("bp_rp")
        raw = space_parts(latents, colour.to_numpy(zero_copy_only=False).astype(np.float64))
        rule = SearchSpace.fit(raw)
        vectors = rule.transform(raw)
        write_space(con, space_rows(ids, vectors), rule)
        sql_lists = write_space_search(con, seed)
        indexes.update(lc_index.build_set_indexes(
            ids, vectors, present_sets(vectors), cat_dir / INDEX_DIR, space=True, exact_max=exact_max,
            target_recall=target_recall, seed=seed,
        ))
        hats = write_embeddings_hats(con.table("embeddings"), con.table("sources"), cat_dir / HATS_DIR)
        info = {
            **build_info,
            "counts": table_counts(con),
            "indexes": indexes,
            "sql_lists": sql_lists,
            "embeddings_hats": {**hats, "path": HATS_DIR},
            "catalog_format": {"duckdb": duckdb.__version__, "faiss": faiss.__version__,
                               "storage_version": STORAGE_VERSION},
        }
        write_build_info(con, info)
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        db_path.unlink(missing_ok=True)
        shutil.rmtree(cat_dir / HATS_DIR, ignore_errors=True)  # never a HATS copy without its catalogue
        raise
    con.close()
    return info


def write_space(con: duckdb.DuckDBPyConnection, rows: pa.Table, rule: SearchSpace | None = None) -> None:
    """Insert search-space rows (`latentcat.analysis.space.space_rows`) and, when given, the rule
    that made them into an open catalogue."""
    con.register("_space_rows", rows)
    con.execute(sql_statements("load")["load_space"])
    con.unregister("_space_rows")
    if rule is not None:
        con.register("_space_rule", rule.to_table())
        con.execute(sql_statements("load")["load_space_rule"])
        con.unregister("_space_rule")


def _writer(cat_dir: Path) -> duckdb.DuckDBPyConnection:
    db_path = Path(cat_dir) / DB_NAME
    if not db_path.exists():
        raise LatentcatError(f"{db_path}: no catalogue here")
    try:  # an existing file keeps its storage format (STORAGE_VERSION): DuckDB does not upgrade it
        return duckdb.connect(str(db_path))
    except duckdb.Error as err:
        raise LatentcatError(f"{db_path}: cannot open for writing ({_one_line(err)})") from err


def _replace_rows(cat_dir: Path, table: pa.Table, name: str, key: str | None) -> int:
    """Replace the rows of one model/method (``key``; None: all rows) in table ``name``
    within one transaction."""
    con = _writer(cat_dir)
    statements = sql_statements("write")
    params = None if key is None else {"key": key}
    try:
        con.register("_new_rows", table)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(statements[f"delete_{name}"], params)
            con.execute(statements[f"insert_{name}"], params)
            if name == "outlier_scores":
                con.execute(statements["rank_outlier_scores"], params)
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    except duckdb.Error as err:
        raise LatentcatError(
            f"{Path(cat_dir) / DB_NAME}: cannot write {name}: {_one_line(err)}"
        ) from err
    finally:
        con.close()
    return table.num_rows


def write_predictions(cat_dir: Path, predictions: pa.Table, model_id: str) -> int:
    """Replace the predictions of ``model_id`` with ``predictions`` (source_id, class, probability).

    Returns the number of rows written. Opens the catalogue for writing: no reader may hold it.
    """
    return _replace_rows(cat_dir, predictions, "predictions", model_id)


def write_outlier_scores(cat_dir: Path, scores: pa.Table, method: str) -> int:
    """Replace the outlier scores of ``method`` with ``scores`` (source_id, score).

    Ranks are given by score, 1 = highest.

    Returns the number of rows written. Opens the catalogue for writing: no reader may hold it.
    """
    return _replace_rows(cat_dir, scores, "outlier_scores", method)


def write_map(cat_dir: Path, xy: pa.Table) -> int:
    """Replace the catalogue's 2-D map with ``xy`` (source_id, x, y, blocks: what placed each source).

    Returns the number of rows written. Opens the catalogue for writing: no reader may hold it.
    """
    return _replace_rows(cat_dir, xy, "map", None)
