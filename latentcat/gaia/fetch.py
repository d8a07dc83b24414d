"""Download Gaia DR3 products for a list of sources from the ESA Gaia archive.

For each chunk of at most 5,000 source_ids (the DataLink service's limit) :func:`fetch` asks
the archive, through astroquery's Gaia TAP+ client, for

* the epoch photometry and the XP continuous spectra (``Gaia.load_data``, DataLink), and
* the ``gaiadr3.gaia_source`` and ``gaiadr3.vari_classifier_result`` rows (asynchronous ADQL
  jobs with the ids in an ``IN`` list),

and saves the archive's responses unchanged, one folder per chunk::

    OUT/
      .query/query.adql, .query/query_result.vot   (with an ADQL query: the query, its result)
      chunk-00000/
        ids.txt                         the chunk's source_ids, one per line
        datalink_EPOCH_PHOTOMETRY.zip   DataLink bundle as the archive serves it
        datalink_XP_CONTINUOUS.zip
        gaia_source.vot                 VOTable of the ADQL job result
        vari_classifier_result.vot
        COMPLETE                        JSON: ids checksum, file sizes and checksums
      chunk-00001/ ...

DataLink products are requested with ``data_structure='INDIVIDUAL'`` (one file per source
inside the zip, the archive's default and the layout it documents for multi-source requests)
and ``format='votable'``. ``latentcat ingest OUT`` reads the folder as it is.

A chunk is built in ``OUT/.partial/chunk-NNNNN/`` and renamed into place only when all its
files are complete and readable, so a crash never leaves a half-written chunk where ingest
looks; a second run skips every chunk whose ``COMPLETE`` marker matches its ids. Network
errors and truncated responses are retried with exponential backoff.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latentcat.atomic import write_file
from latentcat.errors import InputError, LatentcatError

__all__ = [
    "DATALINK_MAX_IDS",
    "RETRIEVAL_TYPES",
    "GAIA_SOURCE_COLUMNS",
    "fetch",
    "read_source_ids",
]

log = logging.getLogger(__name__)

#: The Gaia archive's DataLink service accepts at most this many ids per request.
DATALINK_MAX_IDS = 5000

#: DataLink products fetched for every source.
RETRIEVAL_TYPES = ("EPOCH_PHOTOMETRY", "XP_CONTINUOUS")

DATA_RELEASE = "Gaia DR3"
DATA_STRUCTURE = "INDIVIDUAL"
DATALINK_FORMAT = "votable"
TAP_FORMAT = "votable"

#: Columns of gaiadr3.gaia_source saved for every source.
GAIA_SOURCE_COLUMNS = (
    "source_id", "ra", "dec", "parallax", "parallax_error", "pmra", "pmdec", "ruwe",
    "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "bp_rp",
    "phot_g_mean_flux_over_error", "phot_variable_flag",
    "has_xp_continuous", "has_epoch_photometry",
)

#: ADQL templates; ``{ids}`` is filled only with validated int64 source_ids.
_TAP_QUERIES = {
    "gaia_source": "SELECT " + ", ".join(GAIA_SOURCE_COLUMNS)
    + " FROM gaiadr3.gaia_source WHERE source_id IN ({ids})",
    "vari_classifier_result": "SELECT source_id, best_class_name, best_class_score"
    " FROM gaiadr3.vari_classifier_result WHERE source_id IN ({ids})",
}

_ID_PATTERN = r"^[0-9]{1,19}$"
_TABLE_SUFFIXES = {".csv", ".ecsv", ".parquet", ".pq"}
_MARKER = "COMPLETE"


class _BadResponse(Exception):
    """A response that arrived but is truncated or unreadable (worth asking again)."""


def _network_errors() -> tuple[type[BaseException], ...]:
    import requests

    # OSError covers socket errors, timeouts and requests' own exceptions.
    return (OSError, http.client.HTTPException, requests.exceptions.RequestException,
            zipfile.BadZipFile, _BadResponse)


# --------------------------------------------------------------------------- source ids


def _validate_ids(values: pa.Array, where: Callable[[int], str], path: Path) -> np.ndarray:
    """Turn an Arrow array of id strings into int64, naming the first bad entry."""
    text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    ok = pc.fill_null(pc.match_substring_regex(text, _ID_PATTERN), False)
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if bad.size == 0:
        as_uint = pc.cast(text, pa.uint64()).to_numpy()
        over = np.flatnonzero(as_uint > np.iinfo(np.int64).max)
        bad = over if over.size else np.flatnonzero(as_uint == 0)
        if bad.size == 0:
            return as_uint.astype(np.int64)
    i = int(bad[0])
    raise InputError(f"{path}: {where(i)}: {text[i].as_py()!r} is not a Gaia source_id "
                     "(a positive 64-bit integer)")


def _ids_from_text(path: Path) -> np.ndarray:
    """One id per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the id list ({err})") from None
    stripped = [line.strip() for line in lines]
    keep = [i for i, s in enumerate(stripped) if s and not s.startswith("#")]
    if keep and stripped[keep[0]].lower() == "source_id":  # a one-column CSV without .csv
        keep = keep[1:]
    values = pa.array([stripped[i] for i in keep], pa.string())
    return _validate_ids(values, lambda i: f"line {keep[i] + 1}", path)


def _ids_from_table(path: Path) -> np.ndarray:
    """A CSV, ECSV or Parquet table with a ``source_id`` column."""
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"source_id": pa.string()}))
        else:
            from astropy.table import Table

            table = Table.read(path, format="ascii.ecsv")
    except Exception as err:  # any reader failure is a bad input file
        raise InputError(f"{path}: cannot read the id table ({type(err).__name__}: {err})") from None
    names = list(table.colnames if suffix == ".ecsv" else table.column_names)
    if "source_id" not in names:
        raise InputError(f"{path}: no source_id column (columns: {', '.join(names)})")
    if suffix == ".ecsv":
        values = table["source_id"]
        column = pa.array(np.ma.getdata(values).astype(str), mask=np.ma.getmaskarray(values))
    else:
        column = table.column("source_id").combine_chunks()
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
        raise InputError(f"{path}: column source_id has type {column.type}, expected integers")
    if column.null_count:
        i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{path}: data row {i + 1}: source_id is empty")
    return _validate_ids(column, lambda i: f"data row {i + 1}", path)


def read_source_ids(path: Path) -> np.ndarray:
    """Read Gaia source_ids from a file.

    Parameters
    ----------
    path : Path
        A text file with one id per line (blank lines and ``#`` comments allowed), or a CSV,
        ECSV or Parquet table with a ``source_id`` column.

    Returns
    -------
    numpy.ndarray
        int64 ids in file order, duplicates included.

    Raises
    ------
    InputError
        If the file cannot be read or an entry is not a positive 64-bit integer; the message
        names the file and the line (text, CSV) or row (ECSV, Parquet).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in _TABLE_SUFFIXES:
        return _ids_from_table(path)
    return _ids_from_text(path)


def _unique_in_order(ids: np.ndarray) -> np.ndarray:
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


# --------------------------------------------------------------------------- archive calls


def _default_gaia():
    from astroquery.gaia import Gaia

    return Gaia


def _with_retries(what: str, call: Callable[[], Any], retries: int, backoff_s: float,
                  counter: dict) -> Any:
    """Run ``call``; on a network error wait ``backoff_s * 2**k`` seconds and try again."""
    errors = _network_errors()
    for attempt in range(1, retries + 1):
        try:
            return call()
        except errors as err:
            if attempt == retries:
                raise LatentcatError(f"{what}: failed after {retries} attempt(s): "
                                     f"{type(err).__name__}: {err}") from err
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s: %s; retrying in %.1f s", what, type(err).__name__, err, delay)
            counter["retries"] += 1
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _quiet_astroquery():
    """Hold back astroquery's per-request INFO lines (one per chunk is logged here instead)."""
    from astroquery import log as aq_log

    level = aq_log.level
    aq_log.setLevel("WARNING")
    try:
        yield
    finally:
        aq_log.setLevel(level)


def _download_datalink(gaia, ids: np.ndarray, retrieval_type: str, dest: Path) -> None:
    """Save the DataLink zip for ``ids`` to ``dest`` exactly as the archive served it.

    ``Gaia.load_data(dump_to_file=True)`` writes its zip (and, briefly, the extracted files)
    into the working directory, so it runs inside a scratch folder of its own.
    """
    scratch = dest.parent / f"_{retrieval_type}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with contextlib.chdir(scratch), _quiet_astroquery():
            gaia.load_data(ids=ids.tolist(), data_release=DATA_RELEASE,
                           retrieval_type=retrieval_type, data_structure=DATA_STRUCTURE,
                           format=DATALINK_FORMAT, dump_to_file=True,
                           overwrite_output_file=True)
        zips = sorted(scratch.glob("datalink_output_*.zip"))
        if len(zips) != 1:
            raise _BadResponse(f"expected one DataLink zip, found {len(zips)}")
        with zipfile.ZipFile(zips[0]) as bundle:
            broken = bundle.testzip()
        if broken is not None:
            raise _BadResponse(f"corrupt member {broken!r} in the DataLink zip")
        zips[0].replace(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_votable(path: Path) -> int:
    """Parse a saved VOTable; return its row count. Unreadable files are bad responses."""
    from astropy.io import votable

    try:
        table = votable.parse_single_table(str(path))
    except Exception as err:
        raise _BadResponse(f"unreadable VOTable {path.name} ({type(err).__name__}: {err})") from None
    if "source_id" not in [f.name for f in table.fields]:
        raise _BadResponse(f"{path.name} has no source_id column")
    return len(table.array)


def _run_tap_job(gaia, query: str, dest: Path) -> int:
    """Run ``query`` as an asynchronous ADQL job and save its VOTable result at ``dest``."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    gaia.launch_job_async(query, output_format=TAP_FORMAT, dump_to_file=True,
                          output_file=str(part))
    if not part.is_file():
        raise _BadResponse(f"the archive returned no result for {dest.name}")
    n_rows = _check_votable(part)
    part.replace(dest)
    return n_rows


# --------------------------------------------------------------------------- chunks


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunk_is_complete(folder: Path, ids: np.ndarray) -> bool:
    """True when ``folder`` holds a finished chunk for exactly these ids."""
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("ids_sha256") != _ids_digest(ids):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == meta["bytes"]
               for name, meta in info.get("files", {}).items())


def _fetch_chunk(gaia, ids: np.ndarray, index: int, out: Path, retries: int,
                 backoff_s: float, counter: dict) -> dict:
    """Download one chunk into a scratch folder, then move it into place."""
    final = out / f"chunk-{index:05d}"
    work = out / ".partial" / final.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    label = f"chunk {index} (source_id {ids[0]} .. {ids[-1]}, {ids.size} ids)"

    try:
        marker = _download_chunk(gaia, ids, work, label, retries, backoff_s, counter)
        marker["chunk"] = index
        (work / (_MARKER + ".part")).write_text(json.dumps(marker, indent=1))
        (work / (_MARKER + ".part")).replace(work / _MARKER)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if final.exists():  # a stale chunk from a run with other ids
        shutil.rmtree(final)
    work.replace(final)
    return marker


def _download_chunk(gaia, ids: np.ndarray, work: Path, label: str, retries: int,
                    backoff_s: float, counter: dict) -> dict:
    """Save the chunk's ids, DataLink bundles and ADQL results in ``work``; return its marker."""
    np.savetxt(work / "ids.txt", ids, fmt="%d")
    for rt in RETRIEVAL_TYPES:
        dest = work / f"datalink_{rt}.zip"
        _with_retries(f"{label}: DataLink {rt}",
                      lambda rt=rt, dest=dest: _download_datalink(gaia, ids, rt, dest),
                      retries, backoff_s, counter)
    id_list = ",".join(str(i) for i in ids.tolist())  # validated int64 only
    rows = {}
    for name, template in _TAP_QUERIES.items():
        dest = work / f"{name}.vot"
        rows[name] = _with_retries(f"{label}: ADQL {name}",
                                   lambda q=template.format(ids=id_list), dest=dest:
                                   _run_tap_job(gaia, q, dest),
                                   retries, backoff_s, counter)

    files = {p.name: {"bytes": p.stat().st_size, "sha256": _file_digest(p)}
             for p in sorted(work.iterdir()) if p.is_file()}
    return {"n_ids": int(ids.size), "ids_sha256": _ids_digest(ids), "rows": rows,
            "files": files, "data_release": DATA_RELEASE, "data_structure": DATA_STRUCTURE,
            "fetched_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _ids_from_adql(gaia, adql: str, out: Path, retries: int, backoff_s: float,
                   counter: dict) -> np.ndarray:
    """Run the user's ADQL query (once; reused on a rerun with the same text)."""
    (out / ".query").mkdir(exist_ok=True)
    result = out / ".query" / "query_result.vot"
    saved_query = out / ".query" / "query.adql"
    if not (result.is_file() and saved_query.is_file() and saved_query.read_text() == adql):
        result.unlink(missing_ok=True)
        _with_retries("ADQL query", lambda: _run_tap_job(gaia, adql, result), retries,
                      backoff_s, counter)
        write_file(saved_query, lambda tmp: tmp.write_text(adql))
    from astropy.io import votable

    column = votable.parse_single_table(str(result)).array["source_id"]
    if np.ma.is_masked(column):
        i = int(np.flatnonzero(np.ma.getmaskarray(column))[0])
        raise InputError(f"{result}: row {i + 1}: source_id is null in the query result")
    return _validate_ids(pa.array(np.asarray(column).astype(str)), lambda i: f"row {i + 1}", result)


# --------------------------------------------------------------------------- entry point


def fetch(out: Path, ids_file: Path | None = None, adql: str | None = None,
          chunk_size: int = DATALINK_MAX_IDS, retries: int = 3, *, gaia=None,
          backoff_s: float = 2.0) -> dict:
    """Download Gaia DR3 epoch photometry, XP spectra, classes and gaia_source rows.

    Parameters
    ----------
    out : Path
        Folder for the saved archive responses (created if needed). Rerunning into the same
        folder skips the chunks already complete.
    ids_file : Path, optional
        Source_ids to fetch: see :func:`read_source_ids`. Duplicates are fetched once.
    adql : str, optional
        An ADQL query whose result has a ``source_id`` column; exactly one of ``ids_file``
        and ``adql`` is required.
    chunk_size : int
        Ids per archive request, at most 5,000 (the DataLink limit).
    retries : int
        Attempts per request before giving up.
    gaia : astroquery.gaia.GaiaClass, optional
        The archive client; default ``astroquery.gaia.Gaia`` (log in on it for larger quotas).
    backoff_s : float
        Wait before the first retry; doubled at each further retry.

    Returns
    -------
    dict
        A report: ids read, duplicates, chunks fetched and skipped, retries, files written.

    Raises
    ------
    InputError
        For a bad id file or a query result without usable source_ids.
    LatentcatError
        For bad arguments, or when a request still fails after ``retries`` attempts (the
        chunks finished so far are kept and skipped on the next run).
    """
    if (ids_file is None) == (adql is None):
        raise LatentcatError("give exactly one of an id file or an ADQL query")
    if not 1 <= int(chunk_size) <= DATALINK_MAX_IDS:
        raise LatentcatError(f"chunk_size {chunk_size} is out of range: the Gaia archive's "
                             f"DataLink service takes 1 to {DATALINK_MAX_IDS} ids per request")
    if int(retries) < 1:
        raise LatentcatError(f"retries must be at least 1, got {retries}")
    chunk_size, retries = int(chunk_size), int(retries)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gaia = _default_gaia() if gaia is None else gaia
    counter = {"retries": 0}

    if ids_file is not None:
        all_ids = read_source_ids(Path(ids_file))
        source = str(ids_file)
    else:
        all_ids = _ids_from_adql(gaia, adql, out, retries, backoff_s, counter)
        source = "adql"
    ids = _unique_in_order(all_ids)
    if ids.size == 0:
        raise InputError(f"{source}: no source_ids to fetch")

    fetched, skipped = [], []
    for index, start in enumerate(range(0, ids.size, chunk_size)):
        chunk = ids[start:start + chunk_size]
        folder = out / f"chunk-{index:05d}"
        if _chunk_is_complete(folder, chunk):
            log.info("chunk %d already complete, skipped", index)
            skipped.append(folder.name)
            continue
        try:
            _fetch_chunk(gaia, chunk, index, out, retries, backoff_s, counter)
        finally:
            with contextlib.suppress(OSError):
                (out / ".partial").rmdir()  # only when empty
        fetched.append(folder.name)
        log.info("chunk %d saved (%d ids)", index, chunk.size)

    report = {
        "out": str(out),
        "source": source,
        "ids_read": int(all_ids.size),
        "duplicate_ids": int(all_ids.size - ids.size),
        "ids_fetched": int(ids.size),
        "chunk_size": chunk_size,
        "chunks": len(fetched) + len(skipped),
        "chunks_fetched": fetched,
        "chunks_skipped": skipped,
        "retries": counter["retries"],
        "data_release": DATA_RELEASE,
        "retrieval_types": list(RETRIEVAL_TYPES),
    }
    write_file(out / "fetch_report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    return report
