"""`latentcat add`: grow a catalogue with new sources, without retraining anything.

    >>> from latentcat.catalog.add import add_sources
    >>> report = add_sources("cat/", [Path("new_epoch_photometry.vot"), Path("new_xp.csv")])
    >>> report["added"], report["drift"]["fold"]["fraction_above_catalogue_p99"]

The new inputs go through the same stages as a build, with the catalogue's own settings
(`latentcat.encode.catalogue_settings`, as a query by example takes them):
ingest (`latentcat.gaia.ingest`, the catalogue's ``keep_variability_rejected``), features
(`latentcat.features.extract`, the catalogue's ``min_epochs`` and ``shard_size``) and the
catalogue's EXISTING encoders in ``models/`` (`latentcat.models.embed`). The new rows are
appended to the sources, labels, features and embeddings tables, to every FAISS index, and as
new shards of ``features/`` and ``embeddings/``.

Sources already in the catalogue are *replaced* by default: their old rows (tables, index
vectors, shard rows) are removed and the new ones added. With ``skip_existing=True`` they are
left as they are and the new data for them is not used.

Atomicity
---------
Nothing in the catalogue folder is written in place. The new catalogue is assembled in a
hidden sibling folder ``.<name>.add-<pid>-XXXX/new``: unchanged files (models, untouched shards) are
hard links, ``catalog.duckdb`` is a copy that receives the new rows, the indexes and changed
shards are new files. After a verification (row counts, index sizes, each new source found in
each index) the two folders are exchanged in one step (Linux ``renameat2(RENAME_EXCHANGE)``;
elsewhere two renames a moment apart), and the old catalogue is deleted. A reader opening the
catalogue sees the old or the new one, never a mixture; a killed ``add`` leaves the catalogue
untouched and at most a hidden ``.<name>.add-*`` folder beside it, which the next ``add``
removes (`clean_leftovers`). A process
that already holds the catalogue open keeps reading the old files; reopen it to see the new
sources.

Classifier predictions, outlier scores and the 2-D map
--------------------------------------------------------
These are not refitted. The models that made them are stored in the catalogue's
``analysis/`` folder (`latentcat.analysis.store`), and the added sources get their rows
from those very models, inside the same atomic exchange:

- predictions: the stored classifier predicts each added source on its own block set (same
  ``model_id``);
- outlier scores: the stored isolation forests (per block set) or the stored loss medians
  and MADs score the added sources on the catalogue's scale, and every row of the method is
  ranked again (ranks stay 1..N);
- map: the stored network places the added sources that have the mapped blocks.

A stored model is used only when it reproduces the stored rows of a few catalogue sources
(`SAMPLE` of them, to float32 rounding); a table whose rows no stored model reproduces (an
older catalogue without ``analysis/``, or rows written by a later ``latentcat classify`` or
``latentcat outliers``) gets no rows for the added sources, and ``build_info["stale"]`` names it
and its keys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentcat.blocks import BLOCK_DIM, BLOCK_SETS, BLOCKS, parse_block_set, SPACE
from latentcat.catalog.space_search import write_space_search
from latentcat.catalog import index as lc_index
from latentcat.atomic import swap_in
from latentcat.catalog.hats import write_embeddings_hats
from latentcat.analysis.space import PARTS, SearchSpace, present_sets, space_parts, space_rows, vectors_of
from latentcat.catalog.store import (
    load_tables, sql_script, sql_statements, table_counts, write_build_info, write_space,
)
from latentcat.errors import InputError, LatentcatError
from latentcat.layout import (
    DB_NAME, EMBEDDINGS_DIR, FEATURES_DIR, HATS_DIR, INDEX_DIR, MODELS_DIR, STAGE_DIR, STAGED_TABLES, staged,
)
from latentcat.analysis.store import AnalysisModels, load_analysis
from latentcat.encode import catalogue_settings
from latentcat.limits import checked_path
from latentcat.lock import writer_lock


DERIVED_TABLES = ("predictions", "outlier_scores", "map")
"""Tables computed from the whole catalogue's codes by the models in ``analysis/``."""

SAMPLE = 16
"""Stored rows (the first by source_id) a stored model must reproduce before it is used."""

_SOURCE_TABLES = ("sources", "labels", "features", "embeddings", "space", *DERIVED_TABLES)
_SHARD = re.compile(r"^(features|embeddings)-(\d+)\.parquet$")
_PERCENTILES = (50, 90, 99)


def _percentiles(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0, **{f"p{q}": None for q in _PERCENTILES}}
    levels = np.percentile(values, _PERCENTILES)
    return {"n": int(values.size), **{f"p{q}": float(v) for q, v in zip(_PERCENTILES, levels)}}


def drift_report(catalogue: dict[str, np.ndarray], added: dict[str, np.ndarray]) -> dict:
    """Reconstruction losses of added sources against the catalogue's, per modality.

    Parameters
    ----------
    catalogue, added : dict
        Modality -> float array of ``recon_loss_<modality>`` (NaN where missing).

    Returns
    -------
    dict
        Modality -> ``catalogue`` and ``added`` (n, p50, p90, p99) and
        ``fraction_above_catalogue_p99`` (None without data).
    """
    out = {}
    for m in BLOCKS:
        ref, new = _percentiles(catalogue[m]), _percentiles(added[m])
        frac = None
        if ref["p99"] is not None and new["n"]:
            vals = added[m][np.isfinite(added[m])]
            frac = float(np.mean(vals > ref["p99"]))
        out[m] = {"catalogue": ref, "added": new, "fraction_above_catalogue_p99": frac}
    return out


def _losses(table: pa.Table) -> dict[str, np.ndarray]:
    return {
        m: pc.fill_null(table.column(f"recon_loss_{m}"), np.nan).to_numpy().astype(np.float32)
        for m in BLOCKS
    }


def _read_catalogue(db_path: Path) -> dict:
    """What an addition needs from the current catalogue (read-only)."""
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as err:
        raise LatentcatError(f"{db_path}: cannot open ({' '.join(str(err).split())})") from err
    try:
        rows = con.execute(sql_statements("query")["build_info"]).fetchall()
        emb = con.sql(sql_statements("query")["analysis_codes"]).to_arrow_table()
        keys = con.execute(sql_statements("add")["derived_keys"]).fetchall()
    finally:
        con.close()
    derived: dict[str, dict[str, int]] = {t: {} for t in DERIVED_TABLES}
    for table, key, n in keys:
        derived[table][key] = int(n)
    return {
        "build_info": {k: json.loads(v) for k, v in rows},
        "ids": emb.column("source_id").to_numpy().astype(np.int64),
        "losses": _losses(emb),
        "derived_keys": derived,
    }


def clean_leftovers(cat_dir: Path) -> list[str]:
    """Remove what killed additions to ``cat_dir`` left beside it: the ``.<name>.add-<pid>-*``
    folders whose process is gone (a running addition's folder is left alone).

    Returns the folders removed.
    """
    removed = []
    for folder in sorted(cat_dir.parent.glob(f".{cat_dir.name}.add-*")):
        match = re.match(rf"^\.{re.escape(cat_dir.name)}\.add-(\d+)-", folder.name)
        if not match or not folder.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # the process that made it still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _filter_parquet(path: Path, keep_ids: np.ndarray) -> int:
    """Keep only the rows of ``keep_ids`` in a staged table (rewritten in place); rows left."""
    table = pq.read_table(path)
    mask = np.isin(table.column("source_id").to_numpy(), keep_ids)
    pq.write_table(table.filter(pa.array(mask)), path)
    return int(mask.sum())


def _ids_of(path: Path) -> np.ndarray:
    """source_ids of a staged table (empty when the table was not written)."""
    if not path.exists():
        return np.zeros(0, np.int64)
    return pq.read_table(path, columns=["source_id"]).column("source_id").to_numpy().astype(np.int64)


def staged_ids(stage: Path) -> np.ndarray:
    """Sources with a light curve or an XP spectrum in the staging area (those that get codes)."""
    ids = [pq.read_table(p, columns=["source_id"]).column("source_id").to_numpy()
           for p in (staged(stage, "light_curves"), staged(stage, "xp")) if p.exists()]
    return np.unique(np.concatenate(ids)).astype(np.int64) if ids else np.zeros(0, np.int64)


def complete_sources(stage: Path, ids: np.ndarray) -> int:
    """Give every added source a sources row: bare source_id rows where no gaia_source row came.

    Returns the number of bare rows written (their gaia_source columns are NULL: unknown).
    """
    path = staged(stage, "sources")
    have = pq.read_table(path) if path.exists() else pa.table({"source_id": pa.array([], pa.int64())})
    lacking = np.setdiff1d(ids, have.column("source_id").to_numpy())
    if lacking.size or not path.exists():
        bare = pa.table({"source_id": pa.array(lacking, pa.int64())})
        have = pa.concat_tables([have, bare], promote_options="default")
        pq.write_table(have.sort_by("source_id"), path)
    return int(lacking.size)


def _shard_number(folder: Path) -> int:
    """Next free shard number in a features/ or embeddings/ folder."""
    numbers = [int(m.group(2)) for p in folder.glob("*.parquet") if (m := _SHARD.match(p.name))]
    return max(numbers, default=-1) + 1


def _mirror(cat_dir: Path, new: Path, replaced: np.ndarray) -> list[str]:
    """Assemble ``new`` from ``cat_dir``: hard links to unchanged files, copies of the database,
    shards rewritten without the ``replaced`` sources. The FAISS indexes (``index/``, left to
    `_append_indexes`) and the HATS copy of the embeddings (``embeddings_hats/``, written anew by
    `add_sources`) are not mirrored.

    Returns the shard files rewritten.
    """
    rewritten = []
    for src in sorted(cat_dir.rglob("*")):
        rel = src.relative_to(cat_dir)
        if rel.parts[0] in (INDEX_DIR, HATS_DIR):  # rewritten by add_sources
            continue
        dst = new / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.name.startswith(DB_NAME):  # catalog.duckdb and its .wal: written to, so copied
            shutil.copy2(src, dst)
            continue
        if replaced.size and rel.parts[0] in (FEATURES_DIR, EMBEDDINGS_DIR) and _SHARD.match(rel.name):
            table = pq.read_table(src)
            hit = np.isin(table.column("source_id").to_numpy(), replaced)
            if hit.any():  # a shard left with no rows is dropped
                if not hit.all():
                    pq.write_table(table.filter(pa.array(~hit)), dst)
                rewritten.append(str(rel))
                continue
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return rewritten


def _append_indexes(old_dir: Path, new_dir: Path, ids: np.ndarray, vectors: dict[str, np.ndarray],
                    sets, space: bool, replaced: np.ndarray, old_info: dict, seed: int) -> dict:
    """Write every index of one family (latent block sets, or search-space part sets with
    ``space``) of the new catalogue: the old index minus the replaced sources plus the added
    vectors; an index the catalogue lacked is built."""
    infos = {}
    for block_set in sets:
        name = lc_index.index_key(block_set, space)
        old_path = lc_index.index_path(old_dir, block_set, space)
        new_path = lc_index.index_path(new_dir, block_set, space)
        add_ids, x = lc_index.vectors_for(ids, vectors, block_set)
        if not old_path.exists():
            if add_ids.size:
                index, info = lc_index.build_index(x, add_ids, seed=seed)
                lc_index.write_index(index, new_path)
                infos[name] = {**info, "file": f"{INDEX_DIR}/{new_path.name}"}
            continue
        info = dict(old_info.get(name, {"file": f"{INDEX_DIR}/{old_path.name}"}))
        if add_ids.size == 0 and replaced.size == 0:
            new_path.parent.mkdir(parents=True, exist_ok=True)
            os.link(old_path, new_path)
            infos[name] = info
            continue
        index = faiss.read_index(str(old_path))
        if replaced.size:
            index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(replaced, np.int64)))
        if add_ids.size:
            index.add_with_ids(x, add_ids)
        lc_index.write_index(index, new_path)
        infos[name] = {**info, "n": int(index.ntotal)}
    return infos


def _verify(con: duckdb.DuckDBPyConnection, new_dir: Path, ids: np.ndarray, vectors: dict[str, np.ndarray],
            infos: dict, space: bool) -> None:
    """Check one family of indexes of the assembled catalogue before it replaces the old one."""
    names = PARTS if space else BLOCKS
    for name in infos:
        if name.startswith(f"{SPACE}:") != space:
            continue
        block_set = parse_block_set(name.removeprefix(f"{SPACE}:"), names)
        statement = "count_with_parts" if space else "count_with_blocks"
        n_db = con.execute(sql_statements("add")[statement], {b: b in block_set for b in names}).fetchall()[0][0]
        index = lc_index.read_index(lc_index.index_path(new_dir / INDEX_DIR, block_set, space))
        if index.ntotal != n_db:
            raise LatentcatError(f"{name} index holds {index.ntotal} vectors, the catalogue {n_db} sources with them")
        set_ids, x = lc_index.vectors_for(ids, vectors, block_set)
        if set_ids.size:  # the first added source must be its own nearest neighbour
            dist, found = lc_index.search(index, x[0], 1)
            if found.size == 0 or found[0] != set_ids[0] or dist[0] > 1e-4:
                raise LatentcatError(f"{name} index does not return added source_id {set_ids[0]}")


def _delete_rows(con: duckdb.DuckDBPyConnection, table: str, ids: np.ndarray) -> None:
    """Delete the rows of ``ids`` from a catalogue table (``table`` is one of `_SOURCE_TABLES`)."""
    con.register("_gone", pa.table({"source_id": pa.array(ids, pa.int64())}))
    con.execute(sql_statements("add")["delete_rows"].format(table=table))
    con.unregister("_gone")


def _place_shards(work: Path, new: Path) -> list[str]:
    """Move the added feature and embedding shards into ``new``, numbered after its last shard."""
    first = max(_shard_number(new / FEATURES_DIR), _shard_number(new / EMBEDDINGS_DIR))
    placed = []
    for kind in (FEATURES_DIR, EMBEDDINGS_DIR):
        (new / kind).mkdir(exist_ok=True)
        for k, path in enumerate(sorted((work / kind).glob(f"{kind}-*.parquet"))):
            target = new / kind / f"{kind}-{first + k:05d}.parquet"
            os.replace(path, target)
            placed.append(f"{kind}/{target.name}")
    return placed


def _arrays(table: pa.Table, space: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """ids, vectors (the search-space parts s_* with ``space``, else the latent blocks z_*; NaN
    rows where missing) and losses (NaN where missing) of a table with source_id, those columns
    and, optionally, recon_loss_* columns."""
    losses = _losses(table) if "recon_loss_xp" in table.column_names else {}
    if space:
        return table.column("source_id").to_numpy().astype(np.int64), vectors_of(table), losses
    fixed = pa.list_(pa.float32(), BLOCK_DIM)  # the layout codes_to_numpy reads
    codes = pa.table({"source_id": table.column("source_id"),
                      **{f"z_{b}": table.column(f"z_{b}").cast(fixed) for b in BLOCKS}})
    ids, blocks = lc_index.codes_to_numpy(codes)
    return ids, blocks, losses


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal to float32 rounding of batched arithmetic (both NaN counts as equal)."""
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True))


def _sample(con: duckdb.DuckDBPyConnection, statement: str, key: str | None = None) -> pa.Table:
    params = {"n": SAMPLE} if key is None else {"key": key, "n": SAMPLE}
    return con.sql(sql_statements("add")[statement], params=params).to_arrow_table()


def _reproduces(con: duckdb.DuckDBPyConnection, table: str, key: str, model) -> bool:
    """Whether a stored model gives the stored rows of the first `SAMPLE` catalogue sources."""
    space = getattr(model, "modality", None) == SPACE
    if table == "predictions":
        sample = _sample(con, "prediction_sample", key)
        got = model.predict_table(*_arrays(sample, space)[:2])
        return (got.column("source_id").equals(sample.column("source_id"))
                and got.column("class").equals(sample.column("class"))
                and _close(got.column("probability").to_numpy(), sample.column("probability").to_numpy()))
    if table == "outlier_scores":
        sample = _sample(con, "outlier_sample", key)
        _, blocks, losses = _arrays(sample, space)
        return _close(model.score(blocks, losses)[0], sample.column("score").to_numpy().astype(np.float32))
    sample = _sample(con, "map_sample")
    got = model.place(*_arrays(sample, space)[:2])
    return (got.column("source_id").equals(sample.column("source_id"))
            and got.column("blocks").equals(sample.column("blocks"))
            and all(_close(got.column(c).to_numpy(), sample.column(c).to_numpy()) for c in ("x", "y")))


def _insert(con: duckdb.DuckDBPyConnection, statement: str, rows: pa.Table, key: str | None = None) -> None:
    con.register("_new_rows", rows)
    con.execute(sql_statements("write")[statement], None if key is None else {"key": key})
    con.unregister("_new_rows")


def refresh_derived(con: duckdb.DuckDBPyConnection, models: AnalysisModels | None,
                    keys: dict[str, dict[str, int]], added: pa.Table) -> tuple[dict, dict]:
    """Give the added sources their predictions, outlier scores and map rows.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The catalogue being assembled: the added sources' embeddings are in, the replaced
        sources' derived rows are gone.
    models : AnalysisModels or None
        The catalogue's stored models (`latentcat.analysis.store.load_analysis`).
    keys : dict
        Derived table -> {model_id / method / '' (map): rows} before the addition.
    added : pyarrow.Table
        The added embeddings (source_id, z_*, recon_loss_*) with their search-space parts (s_*).

    Returns
    -------
    refreshed : dict
        Table -> {key: rows written} (outlier_scores: ``{"scored", "unscored"}``).
    stale : dict
        Table -> keys whose rows could not be extended: no stored model reproduces them.
    """
    models = models or AnalysisModels()
    refreshed: dict = {t: {} for t in DERIVED_TABLES}
    stale: dict = {}
    for table in DERIVED_TABLES:
        for key in keys.get(table, {}):
            if table == "predictions":
                model = models.classifiers.get(key)
            elif table == "outlier_scores":
                model = models.outliers.get(key)
            else:
                model = models.map
            if model is None or not _reproduces(con, table, key, model):
                stale.setdefault(table, []).append(key)
                continue
            ids, blocks, losses = _arrays(added, getattr(model, "modality", None) == SPACE)
            if table == "predictions":
                rows = model.predict_table(ids, blocks)
                _insert(con, "insert_predictions", rows, key)
                refreshed[table][key] = rows.num_rows
            elif table == "outlier_scores":
                score, _ = model.score(blocks, losses)
                ok = np.isfinite(score)
                _insert(con, "insert_outlier_scores",
                        pa.table({"source_id": pa.array(ids[ok], pa.int64()),
                                  "score": pa.array(score[ok], pa.float32())}), key)
                con.execute(sql_statements("write")["rank_outlier_scores"], {"key": key})
                refreshed[table][key] = {"scored": int(ok.sum()), "unscored": int((~ok).sum())}
            else:
                rows = model.place(ids, blocks)
                _insert(con, "insert_map", rows)
                refreshed[table][key] = rows.num_rows
    return {t: r for t, r in refreshed.items() if r}, stale


def _stale_record(old: dict, stale_now: dict, n_added: int) -> dict | None:
    """``build_info["stale"]`` after an addition: derived tables that lack the added sources."""
    stale = old["build_info"].get("stale")
    if not stale_now:
        return stale
    before = stale or {}
    keys = {t: sorted(set(before.get("keys", {}).get(t, [])) | set(k)) for t, k in stale_now.items()}
    return {
        "tables": sorted(set(stale_now) | set(before.get("tables", []))),
        "keys": {**before.get("keys", {}), **keys},
        "sources_without_rows": int(before.get("sources_without_rows", 0) + n_added),
        "why": "sources were added after these rows were computed and no model stored in analysis/ "
               "reproduces them; run classify / outliers / map again",
    }


def _sources_to_add(stage: Path, catalogue_ids: np.ndarray, skip_existing: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """(source_ids to encode and add, those of them that replace catalogue sources, the
    report's counts) of a staged addition. A source with no G epoch left (after ingest's epoch
    rules) and no XP is counted as ``without_data``, never added."""
    ids = [np.zeros(0, np.int64)]
    lc_path, xp_path = staged(stage, "light_curves"), staged(stage, "xp")
    if lc_path.exists():
        lc = pq.read_table(lc_path, columns=["source_id", "n_g"])
        ids.append(lc.column("source_id").to_numpy()[pc.fill_null(lc.column("n_g"), 0).to_numpy() > 0])
    if xp_path.exists():
        ids.append(pq.read_table(xp_path, columns=["source_id"]).column("source_id").to_numpy())
    with_data = np.unique(np.concatenate(ids)).astype(np.int64)
    listed = np.unique(np.concatenate([
        pq.read_table(p, columns=["source_id"]).column("source_id").to_numpy()
        for p in (staged(stage, t) for t in ("sources", "labels", "light_curves", "xp")) if p.exists()
    ] or [np.zeros(0, np.int64)]))
    existing = np.intersect1d(with_data, catalogue_ids)
    new_ids = np.setdiff1d(with_data, existing) if skip_existing else with_data
    replaced = np.zeros(0, np.int64) if skip_existing else existing
    counts = {"added": int(new_ids.size - replaced.size), "replaced": int(replaced.size),
              "skipped_existing": int(existing.size) if skip_existing else 0,
              "without_data": int(np.setdiff1d(listed, with_data).size)}
    return new_ids, replaced, counts


def _dropped_epochs(ingested: dict) -> dict[str, int]:
    """Epochs ingest dropped from every input, per reason (`latentcat.gaia.ingest.clean_points`)."""
    total: dict[str, int] = {}
    for entry in ingested.get("inputs", []):
        for why, n in entry.get("dropped", {}).items():
            total[why] = total.get(why, 0) + int(n)
    return total


def _add_space_rows(con: duckdb.DuckDBPyConnection, ids: np.ndarray, latents: dict) -> tuple[dict, pa.Table]:
    """The added sources' search-space vectors, by the rule the catalogue stored, written to
    its space table; returns (vectors per part, the rows written)."""
    rule = SearchSpace.from_table(con.sql(sql_statements("query")["space_rule"]).to_arrow_table())
    con.register("_new_rows", pa.table({"source_id": pa.array(ids, pa.int64())}))
    colour = con.sql(sql_statements("add")["colour_of"]).to_arrow_table()
    con.unregister("_new_rows")
    bp_rp = np.full(ids.size, np.nan)
    order = np.argsort(ids)
    bp_rp[order[np.searchsorted(ids[order], colour.column("source_id").to_numpy())]] = (
        colour.column("bp_rp").to_numpy(zero_copy_only=False).astype(np.float64))
    vectors = rule.transform(space_parts(latents, bp_rp))
    rows = space_rows(ids, vectors)
    write_space(con, rows)
    return vectors, rows


def _extend_indexes(cat_dir: Path, new: Path, con: duckdb.DuckDBPyConnection, ids: np.ndarray, latents: dict,
                    vectors: dict, replaced: np.ndarray, build_info: dict) -> dict:
    """Append the added sources to every latent and search-space index (a set the catalogue
    had no index for gets one) and check each finds them; returns build_info's indexes record."""
    old_info, seed = build_info.get("indexes", {}), int(build_info.get("seed", 0))
    space_sets = {parse_block_set(k.removeprefix(f"{SPACE}:"), PARTS) for k in old_info if k.startswith(f"{SPACE}:")}
    space_sets = sorted(space_sets | set(present_sets(vectors)), key=lambda s: (-len(s), [PARTS.index(p) for p in s]))
    indexes = _append_indexes(cat_dir / INDEX_DIR, new / INDEX_DIR, ids, latents, BLOCK_SETS,
                              False, replaced, old_info, seed)
    indexes.update(_append_indexes(cat_dir / INDEX_DIR, new / INDEX_DIR, ids, vectors, space_sets,
                                   True, replaced, old_info, seed))
    _verify(con, new, ids, latents, indexes, space=False)
    _verify(con, new, ids, vectors, indexes, space=True)
    return indexes


def add_sources(cat_dir: Path, inputs: list[Path], skip_existing: bool = False, device: str = "cpu") -> dict:
    """Add the sources of ``inputs`` to a catalogue, atomically, with its existing models.

    Parameters
    ----------
    cat_dir : Path
        The catalogue folder (it must hold ``models/``). The addition holds the catalogue's
        writer lock (`latentcat.lock`): a second writer waits for it to finish.
    inputs : list of Path
        Gaia DR3 products in any layout `latentcat.gaia.ingest.ingest` reads.
    skip_existing : bool
        Leave sources already in the catalogue untouched (default: replace them with the
        new data).
    device : {"cpu", "cuda", "auto"}
        Where the encoders run.

    Returns
    -------
    dict
        ``added`` (new sources), ``replaced``, ``skipped_existing``, ``without_data`` (staged
        ids with neither a G epoch nor XP, not added), ``dropped_epochs`` (epochs ingest dropped,
        per reason), ``repeated_epochs`` (ingest's duplicate counts), ``bare_source_rows`` (added sources
        without gaia_source columns), ``counts`` (rows per table after), ``indexes``,
        ``shards`` (files written), ``analysis`` (rows given to the added sources by the
        stored models, see `refresh_derived`), ``drift`` (see `drift_report`), ``stale``
        and ``seconds``.
        The same record, less ``drift``, is appended to ``build_info["additions"]``.

    Raises
    ------
    InputError
        An unreadable or malformed input, an input that is not a file or folder, or inputs of
        which no source has data left to encode (the catalogue is unchanged).
    LatentcatError
        No catalogue or no models at ``cat_dir``, an unreadable ``analysis/`` model, or the
        assembled catalogue fails its checks.
    """
    t0 = time.perf_counter()
    cat_dir = Path(cat_dir).resolve()
    if not (cat_dir / DB_NAME).is_file():
        raise LatentcatError(f"{cat_dir}: not a latentcat catalogue ({DB_NAME} not found)")
    if not (cat_dir / MODELS_DIR).is_dir():
        raise LatentcatError(f"{cat_dir / MODELS_DIR}: the catalogue has no trained models to encode new sources")
    inputs = [checked_path(p).resolve() for p in inputs]  # files or folders: no device, FIFO or link loop
    if not inputs:
        raise InputError("add: no inputs given")
    with writer_lock(cat_dir, "latentcat add"):
        return _add_locked(cat_dir, inputs, skip_existing, device, t0)


def _add_locked(cat_dir: Path, inputs: list[Path], skip_existing: bool, device: str, t0: float) -> dict:
    """`add_sources` once it holds the catalogue's writer lock: read, assemble, verify, swap in."""
    from latentcat.provenance import input_checksums
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.models.embed import embed

    old = _read_catalogue(cat_dir / DB_NAME)
    models = load_analysis(cat_dir)
    settings = catalogue_settings(cat_dir, old["build_info"])
    checksums = input_checksums(inputs)

    report_cleaned = clean_leftovers(cat_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{cat_dir.name}.add-{os.getpid()}-", dir=cat_dir.parent))
    try:
        stage = work / STAGE_DIR
        ingested = ingest(inputs, stage, keep_variability_rejected=settings["keep_variability_rejected"])
        new_ids, replaced, counts = _sources_to_add(stage, old["ids"], skip_existing)
        report = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "inputs": checksums,
                  "skip_existing": bool(skip_existing), **counts, "leftovers_removed": report_cleaned,
                  "dropped_epochs": _dropped_epochs(ingested), "repeated_epochs": ingested["duplicates"]}
        if new_ids.size == 0 and counts["without_data"]:
            dropped = ", ".join(f"{n} {why}" for why, n in report["dropped_epochs"].items() if n) or "none"
            raise InputError(f"{', '.join(str(p) for p in inputs)}: none of its {counts['without_data']} sources has a "
                             f"G epoch or an XP spectrum left to encode (epochs dropped by ingest's rules: {dropped}); "
                             "nothing added")
        if new_ids.size == 0:
            return {**report, "added": 0, "counts": old["build_info"].get("counts"), "shards": [],
                    "drift": None, "stale": old["build_info"].get("stale"),
                    "seconds": round(time.perf_counter() - t0, 2)}

        for table in STAGED_TABLES:
            if staged(stage, table).exists():
                _filter_parquet(staged(stage, table), new_ids)
        # a replaced source keeps its gaia_source and label rows unless the inputs bring new ones
        replaced_rows = {t: np.intersect1d(replaced, _ids_of(staged(stage, t))) for t in ("sources", "labels")}
        report["bare_source_rows"] = complete_sources(stage, np.setdiff1d(new_ids, replaced))
        extract_features(stage, work / FEATURES_DIR, shard_size=settings["shard_size"],
                         min_epochs=settings["min_epochs"], resume=False)
        embed(work / FEATURES_DIR, cat_dir / MODELS_DIR, work / EMBEDDINGS_DIR, device=device)

        added_emb = pq.read_table(work / EMBEDDINGS_DIR)
        drift = drift_report(old["losses"], _losses(added_emb))
        report["fraction_above_catalogue_p99"] = {m: d["fraction_above_catalogue_p99"] for m, d in drift.items()}

        new = work / "new"
        _mirror(cat_dir, new, replaced)
        con = duckdb.connect(str(new / DB_NAME))
        try:
            for table in _SOURCE_TABLES:  # fixed table names, not user input
                _delete_rows(con, table, replaced_rows.get(table, replaced))
            for column in ("colour_slope", "colour_slope_err"):  # a catalogue written before these existed
                con.execute(f"ALTER TABLE features ADD COLUMN IF NOT EXISTS {column} FLOAT")
            load_tables(con, stage, work / FEATURES_DIR, work / EMBEDDINGS_DIR)

            ids, latents = _arrays(added_emb)[:2]
            vectors, added_space = _add_space_rows(con, ids, latents)
            indexes = _extend_indexes(cat_dir, new, con, ids, latents, vectors, replaced, old["build_info"])
            con.execute(sql_script("space_search"))  # (re)created: also in a catalogue older than them
            sql_lists = write_space_search(con, int(old["build_info"].get("seed", 0)))
            # views pick up any new gaia_source columns; a catalogue older than space_search gets its macros
            con.execute(sql_script("macros"))

            added = added_emb
            for p in PARTS:
                added = added.append_column(f"s_{p}", added_space.column(f"s_{p}"))
            report["analysis"], stale_now = refresh_derived(con, models, old["derived_keys"], added)
            stale = _stale_record(old, stale_now, int(new_ids.size))
            report.update(counts=table_counts(con), shards=_place_shards(work, new))
            info = {"counts": report["counts"], "indexes": indexes, "sql_lists": sql_lists,
                    "additions": list(old["build_info"].get("additions", [])) + [report]}
            if stale is not None:
                info["stale"] = stale
            hats = write_embeddings_hats(con.table("embeddings"), con.table("sources"), new / HATS_DIR)
            info["embeddings_hats"] = {**hats, "path": HATS_DIR}
            write_build_info(con, info)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        swap_in(new, cat_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**report, "indexes": indexes, "drift": drift, "stale": stale,
            "seconds": round(time.perf_counter() - t0, 2)}
