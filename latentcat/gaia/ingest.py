"""The ingest stage: Gaia DR3 products in any supported layout -> the staging area.

``ingest(inputs, out)`` reads every table found in ``inputs`` (files, zip bundles, folders),
recognises its layout from its columns (:mod:`latentcat.gaia.readers`) and writes the
staging tables of ``docs/schemas.md``: ``light_curves.parquet``, ``xp.parquet``,
``sources.parquet``, ``labels.parquet`` (each only when some input had that kind of data)
and ``ingest_report.json``.

Rules
-----
* Epochs: a point flagged ``rejected_by_photometry`` is dropped; one flagged
  ``rejected_by_variability`` is dropped unless ``keep_variability_rejected``; one whose
  time, magnitude or magnitude error is NaN/null is dropped. Each dropped point is counted
  once, under the first of these reasons that applies. Wide-layout slots with no time,
  magnitude and flux at all (a band not observed in that transit) are not points; they are
  counted as ``empty_slot``. Magnitude errors are ``1.0857 * flux_error / flux``.
* The same source in several inputs: its epochs are merged and de-duplicated on
  (band, time); a repeated epoch keeps the values of the first input that has it.
  A band is null for a source when no input has an epoch of that band with a time,
  and an empty list when all its epochs were dropped.
* ``sources``, ``labels`` and ``xp`` rows for the same source_id in several inputs (or twice
  in one) are merged when they agree (a column missing from one input is taken from the
  other); when two inputs give different values for the same column the ingest stops with
  an :class:`~latentcat.errors.InputError` naming the source_id, the column and both files.
* XP_SAMPLED spectra cannot be put on the pseudo-wavelength grid: they are skipped when their
  bundle (zip or folder) also holds XP_CONTINUOUS, and are an error otherwise. MCMC samples
  and RVS spectra are skipped. Every skipped file is listed in the report.

Memory follows ``chunk_rows``: inputs are read in batches, each batch is written as a part
file in a temporary folder inside ``out``, and DuckDB merges the parts out of core. The
tables appear in ``out`` only when everything succeeded; on any error ``out`` is left as it
was (an earlier staging area is kept whole). A successful ingest replaces all staging tables
of an earlier one, so ``out`` never mixes two ingests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentcat.errors import InputError
from latentcat.gaia import readers

#: Staging tables, in the order they are written.
TABLES = ("light_curves", "xp", "sources", "labels")
REPORT = "ingest_report.json"

#: One bulk-array or XP row counts as this many rows against ``chunk_rows``.
WIDE_ROW_WEIGHT = 100


def ingest(inputs: list[Path], out: Path, keep_variability_rejected: bool = False,
           chunk_rows: int = 200_000) -> dict:
    """Read Gaia DR3 products into the staging area.

    Parameters
    ----------
    inputs : list of Path
        Files, zip bundles and folders (walked recursively), in any mix of formats and layouts.
    out : Path
        The staging folder; created if needed.
    keep_variability_rejected : bool
        Keep epochs flagged ``rejected_by_variability`` (dropped by default).
    chunk_rows : int
        Rows read per batch; memory follows it, not the input size.

    Returns
    -------
    dict
        The report, also saved as ``out/ingest_report.json``.

    Raises
    ------
    InputError
        For an unreadable, truncated, empty or unknown-layout input, a badly typed column,
        or conflicting rows for one source_id. Nothing is written to ``out`` then.
    """
    if not inputs:
        raise InputError("no inputs given")
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out))
    try:
        report = _run(list(inputs), work, keep_variability_rejected, max(1, int(chunk_rows)))
        _commit(work / "final", out, report)
        return report
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(inputs: list[Path], work: Path, keep_var: bool, chunk_rows: int) -> dict:
    """Read every input into part files, then merge them into ``work/final``."""
    files, ignored = readers.find_inputs(inputs, work / "inputs")
    plan = []
    for f in files:
        columns = readers.read_columns(f)
        layout = readers.detect_layout(columns)
        if not layout:
            raise InputError(f"{f.name}: {readers.unknown_layout_message(columns)}")
        plan.append((f, layout, columns))

    xp_bundles = {f.bundle for f, layout, _ in plan if "xp_continuous" in layout}
    parts = work / "parts"
    entries, skipped = [], []
    for index, (f, layout, columns) in enumerate(plan):
        if layout == {"datalink_other"}:
            skipped.append({"file": f.name, "product": "MCMC samples", "reason": "not used by latentcat"})
            continue
        if layout == {"xp_sampled"}:
            kind = readers.sampled_spectrum_kind(f)
            if kind == "RVS":
                skipped.append({"file": f.name, "product": "RVS", "reason": "not used by latentcat"})
                continue
            if f.bundle not in xp_bundles:
                raise InputError(
                    f"{f.name}: XP_SAMPLED spectra (calibrated 343-sample) cannot be put on the XP "
                    f"pseudo-wavelength grid; fetch the XP_CONTINUOUS product for these sources instead")
            skipped.append({"file": f.name, "product": "XP_SAMPLED",
                            "reason": "XP_CONTINUOUS of the same bundle is used instead"})
            continue
        entry = _read_one(f, index, layout, columns, parts, keep_var, chunk_rows)
        entries.append(entry)

    final = work / "final"
    final.mkdir()
    con = duckdb.connect(config={"temp_directory": str(work / "duckdb"), "memory_limit": "1GB",
                                 "threads": 2, "preserve_insertion_order": False})
    try:
        written, duplicates, per_file = {}, {}, {}
        if _has_parts(parts, "points") or _has_parts(parts, "seen"):
            written["light_curves"], duplicates["light_curve_epochs"], duplicates["light_curve_sources"] = \
                _merge_light_curves(con, parts, final)
            _count_sources(con, parts / "seen", per_file)
        for table in ("xp", "sources", "labels"):
            if _has_parts(parts, table):
                written[table], duplicates[table] = _merge_rows(con, parts / table, final, table, plan)
                _count_sources(con, parts / table, per_file)
    finally:
        con.close()

    for entry in entries:
        entry["sources"] = per_file.get(entry.pop("_index"), 0)
    missing = {t: "no input had this kind of data" for t in TABLES if t not in written}
    return {
        "inputs": entries,
        "skipped": skipped,
        "ignored_files": ignored,
        "tables": {t: {"file": f"{t}.parquet", "rows": n} for t, n in written.items()},
        "tables_not_written": missing,
        "duplicates": duplicates,
        "keep_variability_rejected": keep_var,
    }


def _read_one(f: readers.InputFile, index: int, layout: set[str], columns: list[str], parts: Path,
              keep_var: bool, chunk_rows: int) -> dict:
    """Read one input in batches and write its part files; return its report entry."""
    entry = {"file": f.name, "format": f.fmt + (".gz" if f.gzipped else ""), "layout": sorted(layout),
             "rows": 0, "_index": index}
    if "epoch_long" in layout or "epoch_wide" in layout:
        entry["dropped"] = {"rejected_by_photometry": 0, "rejected_by_variability": 0, "nan": 0}
        entry["empty_slot"] = 0
    used = _used_columns(layout, columns)
    ignored = [c for c in columns if c not in used]
    if ignored and ("sources" in layout or "labels" in layout):
        entry["ignored_columns"] = ignored
    heavy = "xp_continuous" in layout or ("epoch_wide" in layout and _looks_bulk(f))
    batch_rows = max(1, chunk_rows // WIDE_ROW_WEIGHT) if heavy else chunk_rows
    row0 = 0
    for batch_no, batch in enumerate(readers.iter_batches(f, batch_rows, used)):
        stem = f"{index:05d}-{batch_no:06d}.parquet"
        if "epoch_long" in layout or "epoch_wide" in layout:
            kind = "epoch_long" if "epoch_long" in layout else "epoch_wide"
            points = readers.epoch_points(batch, kind, f.name, row0)
            kept, seen, counts = clean_points(points, keep_var)
            for reason, n in counts.items():
                if reason == "empty_slot":
                    entry["empty_slot"] += n
                else:
                    entry["dropped"][reason] += n
            _write(parts / "points", stem, kept.append_column("ord", pa.array(np.full(kept.num_rows, index, np.int32))))
            _write(parts / "seen", stem, seen.append_column("_file", pa.array(np.full(seen.num_rows, index, np.int32))))
        if "xp_continuous" in layout:
            from latentcat.gaia.xp import convert_xp

            xp = convert_xp(readers.xp_coefficients(batch, f.name, row0))
            _write(parts / "xp", stem, _tag(xp, index))
        if "sources" in layout:
            _write(parts / "sources", stem, _tag(readers.source_columns(batch, f.name, row0), index))
        if "labels" in layout:
            _write(parts / "labels", stem, _tag(readers.label_columns(batch, f.name, row0), index))
        entry["rows"] += batch.num_rows
        row0 += batch.num_rows
    if entry["rows"] == 0:
        raise InputError(f"{f.name}: the table has no rows")
    return entry


def _used_columns(layout: set[str], columns: list[str]) -> list[str]:
    """Columns a layout reads (others are not loaded)."""
    used = {"source_id"}
    if "epoch_long" in layout:
        used |= {"band", "time", "mag", "mag_err", "flux", "flux_error", "rejected_by_photometry",
                 "rejected_by_variability"}
    if "epoch_wide" in layout:
        used |= {c for cols in readers.WIDE_BANDS.values() for c in cols} | {"rejected_by_photometry"}
    if "xp_continuous" in layout:
        used |= set(readers.XP_COLUMNS)
    if "sources" in layout:
        used |= set(readers.GAIA_SOURCE_COLUMNS)
    if "labels" in layout:
        used |= set(readers.CLASS_COLUMNS) | set(readers.SCORE_COLUMNS)
    return [c for c in columns if c in used]


def _looks_bulk(f: readers.InputFile) -> bool:
    """Whether a wide epoch table holds one row per source (array columns)."""
    for batch in readers.iter_batches(f, 16, ["g_transit_time"]):
        return readers.is_array_column(batch.column("g_transit_time"))
    return False


def clean_points(points: pa.Table, keep_variability_rejected: bool = False) -> tuple[pa.Table, pa.Table, dict]:
    """Apply the epoch rules to a point table.

    Parameters
    ----------
    points : pyarrow.Table
        :data:`latentcat.gaia.readers.POINT_SCHEMA` rows.
    keep_variability_rejected : bool
        Keep points flagged ``rejected_by_variability``.

    Returns
    -------
    kept : pyarrow.Table
        source_id, band, time (float64), mag, mag_err (float32) of the kept points.
    seen : pyarrow.Table
        Distinct (source_id, band) pairs that have an epoch with a time, kept or not.
    counts : dict
        Points dropped per reason (``rejected_by_photometry``, ``rejected_by_variability``,
        ``nan``) and the number of ``empty_slot`` entries.
    """
    empty = points.column("empty").to_numpy(zero_copy_only=False)
    rej_phot = points.column("rejected_by_photometry").to_numpy(zero_copy_only=False) & ~empty
    rej_var = points.column("rejected_by_variability").to_numpy(zero_copy_only=False) & ~empty & ~rej_phot
    if keep_variability_rejected:
        rej_var[:] = False
    values = [points.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("time", "mag", "mag_err")]
    finite = np.logical_and.reduce([np.isfinite(v) for v in values])
    bad = ~finite & ~empty & ~rej_phot & ~rej_var
    keep = ~(empty | rej_phot | rej_var | bad)
    time, mag, err = values
    kept = pa.table({
        "source_id": points.column("source_id").filter(pa.array(keep)),
        "band": points.column("band").filter(pa.array(keep)),
        "time": pa.array(time[keep]),
        "mag": pa.array(mag[keep].astype(np.float32)),
        "mag_err": pa.array(err[keep].astype(np.float32)),
    })
    timed = pa.array(np.isfinite(time))
    seen = points.select(["source_id", "band"]).filter(timed).group_by(["source_id", "band"]).aggregate([])
    counts = {"rejected_by_photometry": int(rej_phot.sum()), "rejected_by_variability": int(rej_var.sum()),
              "nan": int(bad.sum()), "empty_slot": int(empty.sum())}
    return kept, seen, counts


def _tag(table: pa.Table, index: int) -> pa.Table:
    """Add the input's index as ``_file`` (used to name files in conflicts)."""
    return table.append_column("_file", pa.array(np.full(table.num_rows, index, np.int32)))


def _write(folder: Path, stem: str, table: pa.Table) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / stem)


def _has_parts(parts: Path, kind: str) -> bool:
    return (parts / kind).is_dir() and any((parts / kind).iterdir())


def _glob(folder: Path) -> str:
    return str(folder / "*.parquet")


def _count_sources(con: duckdb.DuckDBPyConnection, folder: Path, per_file: dict) -> None:
    """Add the number of distinct source_ids each input contributed."""
    rows = con.execute("SELECT _file, count(DISTINCT source_id) FROM read_parquet(?) GROUP BY _file",
                       [_glob(folder)]).fetchall()
    for index, n in rows:
        per_file[index] = max(per_file.get(index, 0), int(n))


_BAND_SQL = "\n".join(
    f"""      , count(time) FILTER (WHERE band = {code})::INTEGER AS n_{b}
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(time ORDER BY time) FILTER (WHERE band = {code}), []::DOUBLE[]) END AS {b}_time
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(mag ORDER BY time) FILTER (WHERE band = {code}), []::FLOAT[]) END AS {b}_mag
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(mag_err ORDER BY time) FILTER (WHERE band = {code}), []::FLOAT[]) END AS {b}_mag_err"""
    for code, b in enumerate(("g", "bp", "rp")))


def _merge_light_curves(con: duckdb.DuckDBPyConnection, parts: Path, final: Path) -> tuple[int, int, int]:
    """Merge point parts into light_curves.parquet; return (rows, duplicate epochs, sources in several inputs)."""
    points, seen = _glob(parts / "points"), _glob(parts / "seen")
    total, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (source_id, band, time)) FROM read_parquet(?)", [points]).fetchone()
    multi = con.execute(
        "SELECT count(*) FROM (SELECT source_id FROM read_parquet(?) GROUP BY source_id "
        "HAVING count(DISTINCT _file) > 1)", [seen]).fetchone()[0]
    # every (source, band) with an epoch in the input is joined to its kept points, so a band
    # whose epochs were all dropped still shows up (as an empty list, not a null)
    sql = f"""
    COPY (
      WITH pts AS (
        SELECT source_id, band, time, arg_min(mag, ord) AS mag, arg_min(mag_err, ord) AS mag_err
        FROM read_parquet($points) GROUP BY source_id, band, time
      ), bands AS (
        SELECT DISTINCT source_id, band FROM read_parquet($seen)
      ), joined AS (
        SELECT b.source_id, b.band AS sband, p.band, p.time, p.mag, p.mag_err
        FROM bands b LEFT JOIN pts p ON p.source_id = b.source_id AND p.band = b.band
      )
      SELECT source_id
{_BAND_SQL}
      FROM joined GROUP BY source_id ORDER BY source_id
    ) TO $dest (FORMAT parquet)
    """
    con.execute(sql, {"points": points, "seen": seen, "dest": str(final / "light_curves.parquet")}).fetchall()
    rows = pq.ParquetFile(final / "light_curves.parquet").metadata.num_rows
    return rows, int(total - distinct), int(multi)


def _merge_rows(con: duckdb.DuckDBPyConnection, folder: Path, final: Path, table: str, plan: list) -> tuple[int, int]:
    """Merge per-source rows (xp, sources, labels), refusing conflicts; return (rows, merged duplicates)."""
    src = "read_parquet($parts, union_by_name = true)"
    bind = {"parts": _glob(folder)}
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}", bind).fetchall()]
    values = [c for c in columns if c not in ("source_id", "_file")]
    quoted = {c: '"' + c.replace('"', '""') + '"' for c in values}
    if values:
        checks = " OR ".join(f"count(DISTINCT {quoted[c]}) > 1" for c in values)
        flags = ", ".join(f"count(DISTINCT {quoted[c]}) > 1" for c in values)
        hit = con.execute(f"SELECT source_id, {flags} FROM {src} GROUP BY source_id HAVING {checks} "
                          f"ORDER BY source_id LIMIT 1", bind).fetchall()
        if hit:
            sid, column = hit[0][0], values[list(hit[0][1:]).index(True)]
            rows = con.execute(f"SELECT _file FROM {src} WHERE source_id = $sid AND {quoted[column]} IS NOT NULL "
                               f"GROUP BY _file, {quoted[column]} ORDER BY _file", {**bind, "sid": sid}).fetchall()
            first, second = plan[rows[0][0]][0].name, plan[rows[-1][0]][0].name
            raise InputError(f"source_id {sid}: conflicting {table} rows ({column} differs) in {first} and {second}")
    n_in = con.execute(f"SELECT count(*) FROM {src}", bind).fetchone()[0]
    select = ", ".join(f"any_value({quoted[c]}) AS {quoted[c]}" for c in values)
    dest = final / f"{table}.parquet"
    con.execute(f"COPY (SELECT source_id{', ' + select if select else ''} FROM {src} GROUP BY source_id "
                f"ORDER BY source_id) TO $dest (FORMAT parquet)", {**bind, "dest": str(dest)}).fetchall()
    rows = pq.ParquetFile(dest).metadata.num_rows
    return rows, int(n_in - rows)


def _commit(final: Path, out: Path, report: dict) -> None:
    """Move the finished tables into ``out``, replacing those of an earlier ingest all at once."""
    (final / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True))
    old = final.parent / "previous"
    old.mkdir()
    names = [f"{t}.parquet" for t in TABLES] + [REPORT]
    moved_old, moved_new = [], []
    try:
        for name in names:
            if (out / name).exists():
                os.replace(out / name, old / name)
                moved_old.append(name)
        for name in names:
            if (final / name).exists():
                os.replace(final / name, out / name)
                moved_new.append(name)
    except OSError:
        for name in moved_new:
            os.replace(out / name, final / name)
        for name in moved_old:
            os.replace(old / name, out / name)
        raise
