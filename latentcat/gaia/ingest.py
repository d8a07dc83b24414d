"""The ingest stage: Gaia DR3 products in any supported layout -> the staging area.

``ingest(inputs, out)`` reads every table found in ``inputs`` (files, zip bundles, folders:
:mod:`latentcat.gaia.inputs`, :mod:`latentcat.gaia.formats`), recognises its layout from its
columns and turns it into canonical tables (:mod:`latentcat.gaia.layouts`), and writes the
staging tables of ``docs/schemas.md``: ``light_curves.parquet``, ``xp.parquet``,
``sources.parquet``, ``labels.parquet`` (each only when some input had that kind of data)
and ``ingest_report.json``.

Rules
-----
* Epochs: a point flagged ``rejected_by_photometry`` is dropped; one flagged
  ``rejected_by_variability`` is dropped unless ``keep_variability_rejected``; one whose
  time, magnitude or magnitude error is NaN/null is dropped (``nan``); one whose magnitude
  error is zero or negative (a negative flux or flux error) is dropped
  (``non_positive_error``). Each dropped point is counted once, under the first of these
  reasons that applies. Wide-layout slots with no time, magnitude and flux at all (a band not
  observed in that transit) are not points; they are counted as ``empty_slot``. Magnitude
  errors are ``1.0857 * flux_error / flux``.
* The same source in several inputs (or one epoch twice in one input): its epochs are merged
  and de-duplicated on (band, time); a repeated epoch keeps the values of the first input
  that has it, and within that input of its first row (`latentcat.encode` applies the same
  rule to a light curve sent to be compared), and the
  report counts the repeated epochs (``duplicates.light_curve_epochs``) and, among them, those
  whose magnitudes disagree (``duplicates.conflicting_epochs``).
  A band is null for a source when no input has an epoch of that band with a time,
  and an empty list when all its epochs were dropped.
* ``sources``, ``labels`` and ``xp`` rows for the same source_id in several inputs (or twice
  in one) are merged when they agree (a column missing from one input is taken from the
  other); when two inputs give different values for the same column the ingest stops with
  an :class:`~latentcat.errors.InputError` naming the source_id, the column and both files.
* A light-curve table with gaia_source columns too (a HATS catalogue with ra, dec, ...) gives
  ``sources`` rows as well, one per source (identical rows of one batch are written once).
  Columns no layout reads are listed per input as ``ignored_columns``.
* XP_SAMPLED spectra cannot be put on the pseudo-wavelength grid: they are skipped when their
  bundle (zip or folder) also holds XP_CONTINUOUS, and are an error otherwise. MCMC samples
  and RVS spectra are skipped. Every skipped file is listed in the report.

Memory follows ``chunk_rows``, not the input size: inputs are read in batches, each batch
is written as a part file in a temporary folder inside ``out``, and the parts are merged by
source_id ranges. The ranges are cut from the number of part rows of each source_id so that
each holds fewer than ``chunk_rows`` rows plus those of its last source (a range never
splits a source, so all epochs of a source meet in one range); each range is merged by DuckDB
on its own and appended, in source_id order, to the table through one Parquet writer (one
row group per range). DuckDB's memory limit follows ``chunk_rows`` too
(:func:`duckdb_memory_limit`). A part file is only opened for the ranges its source_ids overlap, so inputs sorted by
source_id (as the archive's files are) are read about once; unsorted ones are re-scanned per
range, which is correct but slower.

The tables appear in ``out`` only when everything succeeded; on any error ``out`` is left as
it was (an earlier staging area is kept whole). A successful ingest replaces all staging
tables of an earlier one, so ``out`` never mixes two ingests.

Reading the inputs into part files is one job per input file, run through
:func:`latentcat.compute.shard_runner`: in this process (the default), in local processes,
or as Dask tasks (docs/dask.md). Finding the inputs (and extracting zip bundles and gzipped
Parquet/FITS into the temporary folder inside ``out``) and the merge stay in the calling
process. The part files are named by input and batch, so the tables and the report are the
same whichever scheduler read the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import track

from latentcat.compute import check_folders, check_scheduler, not_on_worker, shard_runner
from latentcat.errors import InputError
from latentcat.gaia.formats import InputFile, iter_batches, read_columns
from latentcat.gaia.inputs import find_inputs, sampled_spectrum_kind
from latentcat.gaia.layouts import (
    CLASS_COLUMNS, GAIA_SOURCE_COLUMNS, SCORE_COLUMNS, WIDE_BANDS, XP_COLUMNS,
    detect_layout, epoch_points, is_array_column, label_columns, source_columns, unknown_layout_message,
    xp_coefficients,
)
from latentcat.layout import INGEST_REPORT, STAGED_TABLES, staged

#: Folders of part files inside the temporary parts folder.
PART_KINDS = ("points", "seen", "xp", "sources", "labels")

#: One bulk-array or XP row counts as this many rows against ``chunk_rows``.
WIDE_ROW_WEIGHT = 100

#: DuckDB may use this many bytes per row of ``chunk_rows`` while merging ...
DUCKDB_BYTES_PER_ROW = 1024
#: ... and at least this many MiB.
DUCKDB_MIN_MIB = 128


def ingest(inputs: list[Path], out: Path, keep_variability_rejected: bool = False,
           chunk_rows: int = 200_000, scheduler: str = "processes", address: str | None = None,
           n_workers: int = 1) -> dict:
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
        Rows read per batch; memory follows it, not the input size (per worker).
    scheduler : {"processes", "dask"}
        Where the input files are read (`latentcat.compute`): local processes, or one Dask task
        per input file. With "dask", the inputs and ``out`` must be paths every worker reaches
        (zip members and decompressed copies are written inside ``out``); the merge runs here.
    address : str or None
        Address of a running Dask scheduler (``"tcp://host:8786"``); None starts a
        LocalCluster of ``n_workers`` processes for this call.
    n_workers : int
        Processes reading input files in parallel (1: this process reads them one by one);
        the output does not depend on it.

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
    check_scheduler(scheduler, address, n_workers)
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out))
    try:
        report = _run(list(inputs), work, keep_variability_rejected, max(1, int(chunk_rows)),
                      (scheduler, address, n_workers))
        _commit(work / "final", out, report)
        return report
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(inputs: list[Path], work: Path, keep_var: bool, chunk_rows: int, compute: tuple) -> dict:
    """Read every input into part files (one job per file, on ``compute`` = (scheduler, address,
    n_workers)), then merge them into ``work/final`` here."""
    files, ignored = find_inputs(inputs, work / "inputs")
    if not files:
        names = ", ".join(str(p) for p in inputs)
        raise InputError(f"{names}: no table files to ingest (looked for VOTable, ECSV, CSV, FITS, Parquet and zip bundles)")
    plan = []
    for f in files:
        columns = read_columns(f)
        layout = detect_layout(columns)
        if not layout:
            raise InputError(f"{f.name}: {unknown_layout_message(columns)}")
        plan.append((f, layout, columns))

    xp_bundles = {f.bundle for f, layout, _ in plan if "xp_continuous" in layout}
    parts = work.absolute() / "parts"  # absolute: a worker's working folder is its own
    for kind in PART_KINDS:  # made here, so a job cancelled after the work folder is removed cannot remake it
        (parts / kind).mkdir(parents=True)
    jobs, skipped = [], []
    for index, (f, layout, columns) in enumerate(plan):
        if layout == {"datalink_other"}:
            skipped.append({"file": f.name, "product": "MCMC samples", "reason": "not used by latentcat"})
            continue
        if layout == {"xp_sampled"}:
            kind = sampled_spectrum_kind(f)
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
        f = dataclasses.replace(f, path=f.path.absolute())
        jobs.append((f, index, layout, columns, str(parts), keep_var, chunk_rows))
    entries = []
    if jobs:  # only skipped files: no pool or cluster is started
        with shard_runner(*compute) as run:
            entries = list(track(run(_read_one, jobs), total=len(jobs), description="ingest (files)",
                                 console=Console(stderr=True), transient=True))
    entries.sort(key=lambda entry: entry["_index"])  # the jobs finish in any order

    final = work / "final"
    final.mkdir()
    con = duckdb.connect(config={"temp_directory": str(work / "duckdb"),
                                 "memory_limit": f"{duckdb_memory_limit(chunk_rows)}MiB",
                                 "threads": 2, "preserve_insertion_order": False})
    try:
        written, duplicates, per_file = {}, {}, {}
        if _has_parts(parts, "points") or _has_parts(parts, "seen"):
            (written["light_curves"], duplicates["light_curve_epochs"], duplicates["conflicting_epochs"],
             duplicates["light_curve_sources"]) = _merge_light_curves(con, parts, final, chunk_rows, per_file)
        for table in ("xp", "sources", "labels"):
            if _has_parts(parts, table):
                budget = max(1, chunk_rows // WIDE_ROW_WEIGHT) if table == "xp" else chunk_rows
                written[table], duplicates[table] = _merge_rows(con, parts / table, final, table, plan,
                                                                budget, per_file)
    finally:
        con.close()

    for entry in entries:
        entry["sources"] = per_file.get(entry.pop("_index"), 0)
    missing = {t: "no input had this kind of data" for t in STAGED_TABLES if t not in written}
    return {
        "inputs": entries,
        "skipped": skipped,
        "ignored_files": ignored,
        "tables": {t: {"file": staged(".", t).name, "rows": n} for t, n in written.items()},
        "tables_not_written": missing,
        "duplicates": duplicates,
        "keep_variability_rejected": keep_var,
    }


def _read_one(f: InputFile, index: int, layout: set[str], columns: list[str], parts: str,
              keep_var: bool, chunk_rows: int) -> dict:
    """Read one input in batches and write its part files; return its report entry.

    One job of :func:`latentcat.compute.shard_runner`: it may run in another process or on
    another host, which must see ``f.path`` and ``parts`` at the same paths.
    """
    parts = Path(parts)
    check_folders([parts], "the inputs and out")
    if not f.path.exists():
        raise not_on_worker(f.name, "the inputs and out", "file")
    entry = {"file": f.name, "format": f.fmt + (".gz" if f.gzipped else ""), "layout": sorted(layout),
             "rows": 0, "_index": index}
    if "epoch_long" in layout or "epoch_wide" in layout:
        entry["dropped"] = {"rejected_by_photometry": 0, "rejected_by_variability": 0, "nan": 0,
                            "non_positive_error": 0}
        entry["empty_slot"] = 0
    used = _used_columns(layout, columns)
    ignored = [c for c in columns if c not in used]
    if ignored:
        entry["ignored_columns"] = ignored
    heavy = "xp_continuous" in layout or ("epoch_wide" in layout and _looks_bulk(f))
    batch_rows = max(1, chunk_rows // WIDE_ROW_WEIGHT) if heavy else chunk_rows
    row0 = n_kept = 0
    for batch_no, batch in enumerate(iter_batches(f, batch_rows, used)):
        stem = f"{index:05d}-{batch_no:06d}.parquet"
        if "epoch_long" in layout or "epoch_wide" in layout:
            kind = "epoch_long" if "epoch_long" in layout else "epoch_wide"
            points = epoch_points(batch, kind, f.name, row0)
            kept, seen, counts = clean_points(points, keep_var)
            for reason, n in counts.items():
                if reason == "empty_slot":
                    entry["empty_slot"] += n
                else:
                    entry["dropped"][reason] += n
            order = (index << 40) + n_kept + np.arange(kept.num_rows, dtype=np.int64)  # input, then row: "first"
            n_kept += kept.num_rows
            _write(parts / "points", stem, kept.append_column("ord", pa.array(order, pa.int64())))
            _write(parts / "seen", stem, seen.append_column("_file", pa.array(np.full(seen.num_rows, index, np.int32))))
        if "xp_continuous" in layout:
            from latentcat.gaia.xp import convert_xp

            xp = convert_xp(xp_coefficients(batch, f.name, row0))
            _write(parts / "xp", stem, _tag(xp, index))
        if "sources" in layout:
            sources = source_columns(batch, f.name, row0)
            if layout & {"epoch_long", "epoch_wide"}:  # a row per epoch or transit repeats the source's values
                sources = sources.group_by(sources.column_names).aggregate([])
            _write(parts / "sources", stem, _tag(sources, index))
        if "labels" in layout:
            _write(parts / "labels", stem, _tag(label_columns(batch, f.name, row0), index))
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
        used |= {c for cols in WIDE_BANDS.values() for c in cols} | {"rejected_by_photometry"}
    if "xp_continuous" in layout:
        used |= set(XP_COLUMNS)
    if "sources" in layout:
        used |= set(GAIA_SOURCE_COLUMNS)
    if "labels" in layout:
        used |= set(CLASS_COLUMNS) | set(SCORE_COLUMNS)
    return [c for c in columns if c in used]


def _looks_bulk(f: InputFile) -> bool:
    """Whether a wide epoch table holds one row per source (array columns)."""
    for batch in iter_batches(f, 16, ["g_transit_time"]):
        return is_array_column(batch.column("g_transit_time"))
    return False


def clean_points(points: pa.Table, keep_variability_rejected: bool = False) -> tuple[pa.Table, pa.Table, dict]:
    """Apply the epoch rules to a point table.

    Parameters
    ----------
    points : pyarrow.Table
        :data:`latentcat.gaia.layouts.POINT_SCHEMA` rows.
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
        ``nan``, ``non_positive_error``) and the number of ``empty_slot`` entries.
    """
    empty = points.column("empty").to_numpy(zero_copy_only=False)
    rej_phot = points.column("rejected_by_photometry").to_numpy(zero_copy_only=False) & ~empty
    rej_var = points.column("rejected_by_variability").to_numpy(zero_copy_only=False) & ~empty & ~rej_phot
    if keep_variability_rejected:
        rej_var[:] = False
    values = [points.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("time", "mag", "mag_err")]
    finite = np.logical_and.reduce([np.isfinite(v) for v in values])
    bad = ~finite & ~empty & ~rej_phot & ~rej_var
    time, mag, err = values
    with np.errstate(invalid="ignore"):
        non_positive = finite & (err <= 0) & ~empty & ~rej_phot & ~rej_var
    keep = ~(empty | rej_phot | rej_var | bad | non_positive)
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
              "nan": int(bad.sum()), "non_positive_error": int(non_positive.sum()), "empty_slot": int(empty.sum())}
    return kept, seen, counts


def _tag(table: pa.Table, index: int) -> pa.Table:
    """Add the input's index as ``_file`` (used to name files in conflicts)."""
    return table.append_column("_file", pa.array(np.full(table.num_rows, index, np.int32)))


def _write(folder: Path, stem: str, table: pa.Table) -> None:
    pq.write_table(table, folder / stem)  # the folder exists (made by _run)


def _has_parts(parts: Path, kind: str) -> bool:
    return (parts / kind).is_dir() and any((parts / kind).iterdir())


def duckdb_memory_limit(chunk_rows: int) -> int:
    """DuckDB's memory limit for the merge, in MiB.

    Parameters
    ----------
    chunk_rows : int
        The ingest's ``chunk_rows``.

    Returns
    -------
    int
        ``DUCKDB_BYTES_PER_ROW * chunk_rows`` in MiB, at least ``DUCKDB_MIN_MIB``
        (195 MiB, so 200 MiB in all, for the default 200,000 rows). DuckDB spills to the
        temporary folder beyond it.
    """
    return max(DUCKDB_MIN_MIB, -(-DUCKDB_BYTES_PER_ROW * int(chunk_rows) // 2**20))


@dataclass
class _Parts:
    """The part files of one kind, with the source_id span and columns of each."""

    paths: list[str]
    first: np.ndarray  # smallest source_id of each file
    last: np.ndarray  # largest source_id of each file
    columns: list[set[str]]

    def overlapping(self, lo: int, hi: int) -> list[int]:
        """Indices of the files with a source_id in ``[lo, hi]``; the first file when none has
        (a query still needs its schema)."""
        return np.flatnonzero((self.first <= hi) & (self.last >= lo)).tolist() or [0]

    def files(self, lo: int, hi: int) -> list[str]:
        """Paths of :meth:`overlapping`."""
        return [self.paths[i] for i in self.overlapping(lo, hi)]


def _parts(folder: Path) -> _Parts:
    """Index the part files of ``folder`` from their Parquet footers (nothing else is read)."""
    paths, first, last, columns = [], [], [], []
    for path in sorted(folder.glob("*.parquet")):
        meta = pq.read_metadata(path)
        names = [meta.schema.column(j).path for j in range(meta.num_columns)]
        col = names.index("source_id")
        spans = [(s.min, s.max) for s in (meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups))
                 if s is not None and s.has_min_max]
        paths.append(str(path))
        # a file without statistics (no rows) overlaps nothing
        first.append(min(a for a, _ in spans) if spans else np.iinfo(np.int64).max)
        last.append(max(b for _, b in spans) if spans else np.iinfo(np.int64).min)
        columns.append(set(meta.schema.to_arrow_schema().names))
    return _Parts(paths, np.array(first, np.int64), np.array(last, np.int64), columns)


def source_ranges(con: duckdb.DuckDBPyConnection, files: list[list[str]], budget: int) -> list[tuple[int, int]]:
    """Cut the source_ids of Parquet files into ranges of about ``budget`` rows each.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection that counts the rows (out of core, within its memory limit).
    files : list of list of str
        Groups of Parquet files, each group with one schema; all have a ``source_id`` column.
    budget : int
        Rows per range.

    Returns
    -------
    list of (int, int)
        Inclusive ``(first, last)`` source_id bounds, ascending and disjoint, covering every
        source_id of the files. A range starts at the source whose first row falls into the
        next multiple of ``budget`` rows, so it holds fewer than ``budget`` rows plus those of
        its last source; a source is never split. Empty when the files have no rows.
    """
    union = " UNION ALL ".join(f"SELECT source_id FROM read_parquet($f{i})" for i in range(len(files)))
    rel = con.sql(f"SELECT source_id, count(*) AS n FROM ({union}) GROUP BY source_id ORDER BY source_id",
                  params={f"f{i}": group for i, group in enumerate(files)})
    starts, done, previous, end = [], 0, -1, None
    for batch in rel.to_arrow_reader(1 << 16):
        if batch.num_rows == 0:
            continue
        sid = batch.column(0).to_numpy()
        n = batch.column(1).to_numpy().astype(np.int64)
        offset = done + np.cumsum(n) - n  # rows before each source
        block = offset // max(1, int(budget))
        new = np.flatnonzero(np.diff(block, prepend=previous) != 0)
        starts.extend(int(x) for x in sid[new])
        done, previous, end = int(offset[-1] + n[-1]), int(block[-1]), int(sid[-1])
    return [(lo, hi - 1) for lo, hi in zip(starts, starts[1:])] + ([(starts[-1], end)] if starts else [])


class _Appender:
    """Append Arrow tables, in order, to one Parquet file (one row group per table)."""

    def __init__(self, path: Path):
        self.path, self.writer, self.rows = path, None, 0

    def append(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> "_Appender":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()


def _add_sources(con: duckdb.DuckDBPyConnection, src: str, params: dict, counts: dict) -> None:
    """Add the number of distinct source_ids each input has in ``src`` to ``counts``."""
    for index, n in con.execute(f"SELECT _file, count(DISTINCT source_id) FROM {src} GROUP BY _file",
                                params).fetchall():
        counts[index] = counts.get(index, 0) + int(n)


def _note_sources(per_file: dict, counts: dict) -> None:
    """An input's source count is the largest over the tables it gave rows to."""
    for index, n in counts.items():
        per_file[index] = max(per_file.get(index, 0), n)


_BAND_SQL = "\n".join(
    f"""      , count(time) FILTER (WHERE band = {code})::INTEGER AS n_{b}
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(time ORDER BY time) FILTER (WHERE band = {code}), []::DOUBLE[]) END AS {b}_time
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(mag ORDER BY time) FILTER (WHERE band = {code}), []::FLOAT[]) END AS {b}_mag
      , CASE WHEN bool_or(sband = {code}) THEN coalesce(list(mag_err ORDER BY time) FILTER (WHERE band = {code}), []::FLOAT[]) END AS {b}_mag_err"""
    for code, b in enumerate(("g", "bp", "rp")))

_POINTS = "(SELECT * FROM read_parquet($points) WHERE source_id BETWEEN $lo AND $hi)"
_SEEN = "(SELECT * FROM read_parquet($seen) WHERE source_id BETWEEN $lo AND $hi)"

# every (source, band) with an epoch in the input is joined to its kept points, so a band
# whose epochs were all dropped still shows up (as an empty list, not a null); a repeated
# (source, band, time) keeps the values of the first input, and within it of its first row (smallest ord)
_LIGHT_CURVES_SQL = f"""
  WITH pts AS (
    SELECT source_id, band, time, arg_min(mag, ord) AS mag, arg_min(mag_err, ord) AS mag_err
    FROM {_POINTS} GROUP BY source_id, band, time
  ), bands AS (
    SELECT DISTINCT source_id, band FROM {_SEEN}
  ), joined AS (
    SELECT b.source_id, b.band AS sband, p.band, p.time, p.mag, p.mag_err
    FROM bands b LEFT JOIN pts p ON p.source_id = b.source_id AND p.band = b.band
  )
  SELECT source_id
{_BAND_SQL}
  FROM joined GROUP BY source_id ORDER BY source_id
"""


def _merge_light_curves(con: duckdb.DuckDBPyConnection, parts: Path, final: Path, budget: int,
                        per_file: dict) -> tuple[int, int, int]:
    """Merge point parts into light_curves.parquet range by range.

    Returns (rows, repeated epochs, repeated epochs whose magnitudes disagree, sources in
    several inputs) and adds each input's source count to ``per_file``.
    """
    points, seen = _parts(parts / "points"), _parts(parts / "seen")
    ranges = source_ranges(con, [points.paths, seen.paths], budget) or [(0, -1)]  # (0, -1): schema only
    duplicates = conflicts = multi = 0
    counts = {}
    with _Appender(staged(final, "light_curves")) as out:
        for lo, hi in ranges:
            bounds = {"lo": lo, "hi": hi}
            p, s = {"points": points.files(lo, hi), **bounds}, {"seen": seen.files(lo, hi), **bounds}
            repeated, disagree = con.execute(  # one pass: the epochs given more than once, and with two magnitudes
                f"SELECT coalesce(sum(n - 1), 0), count(*) FILTER (WHERE n_mag > 1) FROM (SELECT count(*) AS n, "
                f"count(DISTINCT mag) AS n_mag FROM {_POINTS} GROUP BY source_id, band, time HAVING count(*) > 1)",
                p).fetchone()
            duplicates += int(repeated)
            conflicts += int(disagree)
            multi += con.execute(f"SELECT count(*) FROM (SELECT source_id FROM {_SEEN} GROUP BY source_id "
                                 f"HAVING count(DISTINCT _file) > 1)", s).fetchone()[0]
            _add_sources(con, _SEEN, s, counts)
            out.append(con.sql(_LIGHT_CURVES_SQL, params={**p, **s}).to_arrow_table())
    _note_sources(per_file, counts)
    return out.rows, duplicates, int(conflicts), int(multi)


def _merge_rows(con: duckdb.DuckDBPyConnection, folder: Path, final: Path, table: str, plan: list,
                budget: int, per_file: dict) -> tuple[int, int]:
    """Merge per-source rows (xp, sources, labels) range by range, refusing conflicts.

    Returns (rows, merged duplicates) and adds each input's source count to ``per_file``.
    """
    parts = _parts(folder)
    types = con.execute("DESCRIBE SELECT * FROM read_parquet($parts, union_by_name = true)",
                        {"parts": parts.paths}).fetchall()
    types = {name: kind for name, kind, *_ in types}
    values = [c for c in types if c not in ("source_id", "_file")]
    quoted = {c: '"' + c.replace('"', '""') + '"' for c in values}
    ranges = source_ranges(con, [parts.paths], budget) or [(0, -1)]  # (0, -1): schema only
    n_in = 0
    counts = {}
    with _Appender(staged(final, table)) as out:
        for lo, hi in ranges:
            hit = parts.overlapping(lo, hi)
            present = set().union(*(parts.columns[i] for i in hit))
            # every range has the columns and types of the whole table, whatever its files hold
            cast = "".join(f", CAST({quoted[c]} AS {types[c]}) AS {quoted[c]}" if c in present
                           else f", NULL::{types[c]} AS {quoted[c]}" for c in values)
            src = (f"(SELECT source_id, _file{cast} FROM read_parquet($parts, union_by_name = true) "
                   f"WHERE source_id BETWEEN $lo AND $hi)")
            bind = {"parts": [parts.paths[i] for i in hit], "lo": lo, "hi": hi}
            if values:
                _refuse_conflicts(con, src, bind, values, quoted, table, plan)
            n_in += con.execute(f"SELECT count(*) FROM {src}", bind).fetchone()[0]
            _add_sources(con, src, bind, counts)
            select = "".join(f", any_value({quoted[c]}) AS {quoted[c]}" for c in values)
            merged = con.sql(f"SELECT source_id{select} FROM {src} GROUP BY source_id ORDER BY source_id",
                             params=bind).to_arrow_table()
            out.append(merged.cast(merged.schema.set(0, pa.field("source_id", pa.int64(), nullable=False))))
    _note_sources(per_file, counts)
    return out.rows, int(n_in - out.rows)


def _refuse_conflicts(con: duckdb.DuckDBPyConnection, src: str, bind: dict, values: list[str], quoted: dict,
                      table: str, plan: list) -> None:
    """Raise InputError for the first source_id of ``src`` whose inputs give two values for a column."""
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


def _commit(final: Path, out: Path, report: dict) -> None:
    """Move the finished tables into ``out``, replacing those of an earlier ingest all at once."""
    (final / INGEST_REPORT).write_text(json.dumps(report, indent=2, sort_keys=True))
    old = final.parent / "previous"
    old.mkdir()
    names = [staged(".", t).name for t in STAGED_TABLES] + [INGEST_REPORT]
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
