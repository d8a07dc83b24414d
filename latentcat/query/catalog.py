"""The read-only Catalog: SQL over catalog.duckdb and nearest neighbours through FAISS.

    >>> import latentcat
    >>> cat = latentcat.open("cat/")
    >>> cat.similar(5853498713190525696, k=10, where="phot_g_mean_mag < 16")
    >>> cat.similar([5853498713190525696, 5853498713190525697], k=10)   # a batch: one table
    >>> cat.like(rr_lyrae_ids, top=100)              # every other source ranked by a set
    >>> cat.sql("SELECT best_class_name, count(*) FROM labels GROUP BY 1")
    >>> cat.map(with_meta=True)                      # the stored 2-D map

Classifiers, outlier rankings and the map are fitted on an open Catalog by `latentcat.analyse`.

Many processes may open the same catalogue at once; none of them can change it. A Catalog is a
snapshot: its DuckDB connection and every FAISS index are opened when it is, so a later
``latentcat add`` (which swaps in a new catalogue folder) is seen only by a Catalog opened
after it. The catalogue file is attached read-only and user SQL may hold only read statements
(`READ_STATEMENTS`); every query and ``where`` filter stops at the Catalog's time limit, and its
DuckDB works within a memory limit with the configuration locked. Its connection reaches
nothing outside catalog.duckdb (DuckDB's external access is off) unless it is opened with
``allow_external_access=True``; a ``where`` filter is parsed as one SQL expression, never pasted
into a statement; user SQL runs on its own connection, so a temporary view it creates cannot
stand in for the catalogue's tables in the Catalog's own queries.

Searches run at the speed of the index: the source_meta view and the search-space (or latent)
vectors are read once per Catalog, on first use, and addressed by row through their sorted
source_ids; a ``where`` filter is evaluated once per filter text and kept with its FAISS selector.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from latentcat.analysis.like import LIKE_M, best_rows, self_check
from latentcat.blocks import BLOCK_DIM, BLOCKS, parse_block_set, SPACE
from latentcat.catalog import index as lc_index
from latentcat.catalog.store import sql_statements
from latentcat.errors import LatentcatError
from latentcat.errors import one_line as _one_line
from latentcat.layout import DB_NAME, INDEX_DIR
from latentcat.limits import MAX_K, MEMORY_LIMIT_MIB, TIMEOUT, as_source_id

CHUNK = 1024
"""Queries of a batch searched by one FAISS call (per part set) and given their metadata at once."""

FILTER_CACHE = 16
"""``where`` filters a Catalog keeps evaluated (their source_ids and FAISS selector), most recently
used first; together they hold at most `FILTER_CACHE_IDS` ids (8 bytes each)."""

FILTER_CACHE_IDS = 20_000_000

READ_STATEMENTS = ("SELECT", "EXPLAIN", "CREATE", "DROP")
"""The kinds of statement user SQL may hold: SELECT in all its forms (WITH, VALUES, FROM-first,
SHOW, DESCRIBE, SUMMARIZE); EXPLAIN (and EXPLAIN ANALYZE, which runs its statement) of a
SELECT; CREATE of TEMPORARY views, tables and macros, which live on the user's own connection;
and DROP (the catalogue file, attached read-only, refuses it). Any other statement (ATTACH,
DETACH, USE, SET, COPY, INSERT, LOAD, PREPARE, ...), or a CREATE that is not temporary, is
refused before any statement of the query runs."""

MODALITIES = {
    "space": "search space (latents + colour)",
    "all": "all latent blocks",
    "xp": "XP spectrum",
    "dmdt": "dm-dt map",
    "fold": "folded light curve",
    "dmdt+fold": "dm-dt + fold",
    "xp+fold": "XP + fold",
    "xp+dmdt": "XP + dm-dt",
}
"""The named modalities of `Catalog.similar` and `Catalog.like`, with what each compares:
``space``, the search space (latent blocks and colour, `latentcat.analysis.space`), the
default; ``all``, the latent blocks a source has; or one block or a '+'-joined set of blocks
(any set, and ``space:`` with named parts, is accepted too)."""


def _named_parts(modality: str) -> tuple[bool, str, tuple[str, ...]]:
    """(search space?, the block-set spec, the parts or blocks it names) of a `Catalog.like` or
    `Catalog.discover` modality; an unknown name is a LatentcatError."""
    space, names, spec = _modality(modality)
    try:
        return space, spec, parse_block_set(spec, names)
    except ValueError as err:
        raise LatentcatError(f"{err}, or 'space', the default") from None


def _modality(modality: str) -> tuple[bool, tuple[str, ...], str]:
    """(search space?, the canonical names, the block-set spec) of a modality: ``"space"`` is the
    search space on the parts a query has, ``"space:dmdt+fold"`` named parts of it; anything
    else names latent blocks."""
    from latentcat.analysis.space import PARTS

    head, colon, spec = str(modality).partition(":")
    if head == SPACE:
        return True, PARTS, spec if colon else "all"
    return False, BLOCKS, modality


class _Vectors(NamedTuple):
    """Every source's search-space parts or latent blocks, in source_id order."""

    ids: np.ndarray
    """int64 (n,), sorted."""
    parts: dict[str, np.ndarray]
    """part or block -> float32 (n, dim), NaN rows where a source lacks it."""
    names: tuple[str, ...]


class _Batch(NamedTuple):
    """Queries resolved for searching (`Catalog._batch`)."""

    query_id: np.ndarray
    """int64 (n,): the source_id, or the row number of a vector."""
    exclude: np.ndarray
    """int64 (n,): the source each query must not return (itself), -1 for a vector."""
    code: np.ndarray
    """(n,): key of each query's part set in ``sets``."""
    sets: dict[int, tuple[str, ...]]
    space: bool
    vectors: _Vectors | None
    """Where source_id queries take their vectors (row ``rows[i]``)."""
    rows: np.ndarray | None
    x: np.ndarray | None
    """float32 (n, d): vector queries."""


@functools.lru_cache(maxsize=64)
def _ranks(n: int) -> pa.Array:
    """int32 1..n, made once per n (a one-query answer's rank column)."""
    return pa.array(np.arange(1, n + 1, dtype=np.int32))


@functools.lru_cache(maxsize=64)
def _repeated(text: str, n: int) -> pa.Array:
    """``text`` n times as an Arrow string array, made once per (text, n) (a one-query answer's
    blocks column)."""
    return pa.array([text] * n, pa.string())


def _as_batch(query) -> np.ndarray | None:
    """Many queries as an int64 array of source_ids or a float (n, d) array of vectors; None for
    one source_id or one vector. A sequence of integers is a batch of source_ids (a vector is
    given as floats)."""
    if isinstance(query, (int, np.integer)):
        return None
    if isinstance(query, (pa.Array, pa.ChunkedArray)):
        if not pa.types.is_integer(query.type):
            return None
        if query.null_count:
            raise LatentcatError("the batch of source_ids holds nulls")
        return _source_ids(query.to_numpy())
    if isinstance(query, (list, tuple)):
        if len(query) == 0:
            return np.empty(0, np.int64)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in query):
            return np.array([as_source_id(v) for v in query], dtype=np.int64)
    array = np.asarray(query)
    if array.ndim == 2:
        return array.astype(np.float32)
    if array.ndim == 1 and array.dtype.kind in "iu":
        return _source_ids(array)
    return None


def _source_ids(array: np.ndarray) -> np.ndarray:
    """An integer array as int64 source_ids; a value outside 0 .. 2**63 - 1 is refused (an
    unsigned id above it would otherwise wrap to a negative one)."""
    bad = (array < 0) | (array > np.iinfo(np.int64).max)
    if bad.any():
        as_source_id(int(array[np.flatnonzero(bad)[0]]), "the batch of source_ids")  # raises, naming it
    return array.astype(np.int64)


def _refuse(ids: np.ndarray, bad: np.ndarray, message: str, single: bool) -> None:
    """Fail on the first query marked ``bad``, saying how many more there are in a batch."""
    if bad.any():
        text = message.format(int(ids[np.flatnonzero(bad)[0]]))
        more = int(bad.sum()) - 1
        if more and not single:
            text += f" (and {more} more of the {ids.size} queries)"
        raise LatentcatError(text)


def _checked_k(k, name: str = "k") -> int:
    if not 1 <= int(k) <= MAX_K:
        raise LatentcatError(f"{name} must be between 1 and {MAX_K}, got {k}")
    return int(k)


def _like_parts(have: dict[str, np.ndarray], space: bool) -> tuple[str, ...]:
    """The parts `Catalog.like` compares a set on: the parts every member has, when they hold a
    latent block; otherwise (a member without a light curve in a set of light curves, say) the
    combination that compares the most member values, (members that have all of it) x (its
    values), ties to more parts, the members without it set aside. Empty when no member has
    any part."""
    from latentcat.analysis.space import PART_DIM

    names = tuple(have)
    shared = tuple(b for b in names if have[b].all())
    if any(b != "colour" for b in shared):
        return shared
    best, best_key = (), (0, 0)
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(names, r):
            n = int(np.logical_and.reduce([have[b] for b in combo]).sum())
            key = (n * sum(PART_DIM[b] if space else BLOCK_DIM for b in combo), r)
            if key[0] and key > best_key:
                best, best_key = combo, key
    return best


def _read_statements(query: str) -> None:
    """Refuse a query that holds any statement but those of `READ_STATEMENTS`, naming it."""
    if not isinstance(query, str):
        raise LatentcatError(f"SQL must be text, got {type(query).__name__}")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise LatentcatError(f"SQL error: {_one_line(err)}") from None
    for statement in statements:
        kind, text = statement.type.name, _one_line(statement.query)[:60]
        reason = None if kind in READ_STATEMENTS else f"{kind} statements are not allowed on a read-only catalogue"
        if kind == "EXPLAIN":  # EXPLAIN ANALYZE runs what it explains: only a SELECT
            inner = re.sub(r"^\s*explain\s+(analy[sz]e\s+)?", "", statement.query, flags=re.IGNORECASE)
            try:
                inner_kinds = [s.type.name for s in duckdb.extract_statements(inner)]
            except duckdb.Error:
                inner_kinds = []
            if inner_kinds != ["SELECT"]:
                reason = "EXPLAIN is allowed of a SELECT only"
        elif kind == "CREATE" and not re.match(r"^\s*create\s+(or\s+replace\s+)?temp(orary)?\s", statement.query,
                                                flags=re.IGNORECASE):
            reason = "CREATE is allowed of TEMPORARY views, tables and macros only"
        if reason:
            raise LatentcatError(f"SQL refused: {reason} ({text!r}); a reader may run SELECT, EXPLAIN of a SELECT, "
                                 "CREATE TEMPORARY and DROP")


def _bounded_table(result, max_bytes: int) -> pa.Table:
    """A query's whole answer as an Arrow table, refused once it holds more than ``max_bytes``."""
    if result is None:  # a statement without an answer (CREATE, DROP)
        return pa.table({})
    reader = result.to_arrow_reader(65_536)
    batches, size = [], 0
    try:
        for batch in reader:
            size += batch.nbytes
            if size > max_bytes:
                raise LatentcatError(f"the answer is larger than the catalogue's memory limit "
                                     f"({max_bytes / 2**20:,.0f} MiB): add a LIMIT or select fewer columns")
            batches.append(batch)
    finally:
        reader.close()
    return pa.Table.from_batches(batches, schema=reader.schema)


def _jsonable(value):
    """numpy values in a query_info record, as JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class Catalog:
    """A latentcat catalogue opened read-only. Create it with `latentcat.open`."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, timeout: float | None = TIMEOUT,
                 memory_limit_mib: int = MEMORY_LIMIT_MIB):
        self.path = Path(path)
        self.timeout = timeout
        """Seconds a user query or ``where`` filter may run (None: no limit)."""
        self.memory_limit_mib = int(memory_limit_mib)
        self._con = con
        self._local = threading.local()
        self._lock = threading.RLock()
        self._loaded: dict[str, object] = {}  # source_meta and the vectors, on first use
        self._filters: OrderedDict[str, lc_index.Allowed] = OrderedDict()
        self._indexes: dict[tuple, object] = {}
        for file in sorted((self.path / INDEX_DIR).glob("*.faiss")):  # the snapshot: every index now
            space = file.stem.startswith(f"{SPACE}_")
            blocks = tuple(file.stem.removeprefix(f"{SPACE}_").split("_"))
            try:
                self._indexes[(space, blocks)] = lc_index.read_index(file)
            except RuntimeError as err:  # FAISS reports a damaged file as a RuntimeError
                self._con.close()
                raise LatentcatError(f"{file}: not a readable FAISS index ({str(err).split(': ')[-1].strip()})") from None

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the DuckDB connection and drop the loaded indexes."""
        self._indexes.clear()
        self._loaded.clear()
        self._filters.clear()
        self._con.close()

    def _cursor(self, user: bool = False) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the catalogue (DuckDB connections are not shared by threads):
        the Catalog's own, or with ``user`` the one user SQL runs on (its temporary objects stay
        there)."""
        name = "user" if user else "own"
        cur = getattr(self._local, name, None)
        if cur is None:
            cur = self._con.cursor()
            cur.execute("USE catalog")  # the attached catalogue file (see `open`)
            setattr(self._local, name, cur)
        return cur

    def _query(self, query: str, params=None) -> pa.Table:
        """Run one of the Catalog's own queries; a failure (a damaged file) is one line."""
        try:
            result = self._cursor().sql(query, params=params)
            return result.to_arrow_table() if result is not None else pa.table({})
        except duckdb.Error as err:
            raise LatentcatError(f"{self.path / DB_NAME}: cannot read ({_one_line(err)})") from err

    @contextmanager
    def _time_limit(self, cursor: duckdb.DuckDBPyConnection, what: str):
        """Interrupt ``cursor``'s query once it has run `timeout` seconds; its error is then one
        line naming ``what`` and the limit."""
        if not self.timeout:
            yield
            return
        state = {"running": True, "fired": False}
        guard = threading.Lock()

        def stop():
            with guard:  # never interrupts the next query of this cursor, once this one has ended
                if state["running"]:
                    state["fired"] = True
                    cursor.interrupt()

        timer = threading.Timer(self.timeout, stop)
        timer.daemon = True
        timer.start()
        try:
            yield
        except (duckdb.InterruptException, OSError, pa.ArrowException):  # Arrow's reader re-raises DuckDB's
            if not state["fired"]:
                raise
            raise LatentcatError(f"{what} stopped after {self.timeout:g} s, the catalogue's time limit "
                                 "(latentcat.open(..., timeout=...), --timeout)") from None
        finally:
            with guard:
                state["running"] = False
            timer.cancel()

    def sql(self, query: str, params: list | dict | None = None) -> pa.Table:
        """Run a SQL query on the catalogue and return its rows.

        Parameters
        ----------
        query : str
            DuckDB SQL; the tables, views and macros are described in sql/.
        params : list or dict, optional
            Values bound to ``?`` / ``$name`` placeholders.

        Returns
        -------
        pyarrow.Table
            ``.to_pandas()`` turns it into a DataFrame.

        Raises
        ------
        LatentcatError
            The query fails; it holds a statement other than `READ_STATEMENTS` (nothing runs:
            the catalogue is read-only and stays attached as it is); it runs longer than the
            Catalog's ``timeout``; or its answer is larger than its memory limit.
        """
        _read_statements(query)
        cursor = self._cursor(user=True)
        try:
            with self._time_limit(cursor, "the query"):
                return _bounded_table(cursor.sql(query, params=params), self.memory_limit_mib * 2**20)
        except (duckdb.Error, OSError, pa.ArrowException) as err:  # DuckDB's errors, also through Arrow's reader
            first = next(iter(str(err).strip().splitlines()), type(err).__name__)  # DuckDB's own line; LINE ... follows
            raise LatentcatError(f"SQL error: {first}") from err

    def df(self, query: str, params: list | dict | None = None):
        """`sql` as a pandas DataFrame."""
        return self.sql(query, params).to_pandas()

    def pl(self, query: str, params: list | dict | None = None):
        """`sql` as a polars DataFrame (needs ``pip install polars``)."""
        try:
            import polars
        except ImportError:
            raise LatentcatError("Catalog.pl needs polars: pip install polars") from None
        return polars.from_arrow(self.sql(query, params))

    def info(self) -> dict:
        """Row counts, available indexes and the build record of the catalogue."""
        counts = self._query(sql_statements("query")["table_counts"]).to_pylist()[0]
        rows = self._query(sql_statements("query")["build_info"]).to_pylist()
        build = {r["key"]: json.loads(r["value"]) for r in rows}
        return {"path": str(self.path), "counts": counts, "build_info": build}

    def _index(self, blocks: tuple[str, ...], space: bool = False):
        index = self._indexes.get((space, blocks))
        if index is None:
            path = lc_index.index_path(self.path / INDEX_DIR, blocks, space)
            raise LatentcatError(f"{path}: the catalogue has no {lc_index.index_key(blocks, space)} index")
        return index

    def space_rule(self):
        """The catalogue's stored search-space rule (`latentcat.analysis.space.SearchSpace`)."""
        from latentcat.analysis.space import SearchSpace

        return SearchSpace.from_table(self._query(sql_statements("query")["space_rule"]))

    def space_vector(self, source_id: int) -> dict[str, np.ndarray | None]:
        """The search-space parts of one source: {"xp": array(5) or None, ..., "colour": array(1) or None}.

        Raises
        ------
        LatentcatError
            ``source_id`` is not in the catalogue.
        """
        from latentcat.analysis.space import PARTS

        rows = self._query(sql_statements("query")["space_of"].format(source_id=as_source_id(source_id)))
        if rows.num_rows == 0:
            raise LatentcatError(f"source_id {int(source_id)} is not in the catalogue")
        row = rows.to_pylist()[0]
        return {p: None if row[f"s_{p}"] is None else np.asarray(row[f"s_{p}"], np.float32) for p in PARTS}

    def codes(self, source_id: int) -> dict[str, np.ndarray | None]:
        """The latent blocks of one source: {"xp": array(5) or None, "dmdt": ..., "fold": ...}.

        Raises
        ------
        LatentcatError
            ``source_id`` is not in the catalogue.
        """
        rows = self._query(sql_statements("query")["codes_of"].format(source_id=as_source_id(source_id)))
        if rows.num_rows == 0:
            raise LatentcatError(f"source_id {int(source_id)} is not in the catalogue")
        row = rows.to_pylist()[0]
        return {
            b: None if row[f"z_{b}"] is None else np.asarray(row[f"z_{b}"], np.float32)
            for b in BLOCKS
        }

    # -----------------------------------------------------------------------------------
    # what the searches read, loaded once per Catalog (the Catalog is a snapshot)

    def _once(self, key: str | tuple, load):
        """A value loaded on first use and kept for the Catalog's life."""
        value = self._loaded.get(key)
        if value is None:
            with self._lock:
                value = self._loaded.get(key)
                if value is None:
                    value = self._loaded[key] = load()
        return value

    def _meta_rows(self) -> tuple[np.ndarray, pa.RecordBatch | pa.Table]:
        """The source_meta view in source_id order, loaded once: its sorted source_ids and its
        columns. A neighbour list's metadata is then a `np.searchsorted` and an Arrow ``take``
        (microseconds), not a query."""
        def load():
            table = self._query(sql_statements("query")["source_meta_all"]).combine_chunks()
            ids = table.column("source_id").to_numpy().astype(np.int64, copy=False)
            columns = table.drop_columns(["source_id"])
            if not columns.num_rows:
                return ids, pa.RecordBatch.from_pylist([], schema=columns.schema)
            return ids, columns.to_batches()[0]  # one batch: the cheapest take

        return self._once("meta", load)

    def _vectors(self, space: bool) -> _Vectors:
        """Every source's search-space parts (or latent blocks), loaded once, in source_id order."""
        def load():
            from latentcat.analysis.space import PARTS, vectors_of

            if space:
                table = self._query(sql_statements("query")["space_all"])
                return _Vectors(table.column("source_id").to_numpy().astype(np.int64, copy=False),
                                vectors_of(table), PARTS)
            ids, blocks = lc_index.codes_to_numpy(self._query(sql_statements("query")["codes_all"]))
            return _Vectors(ids, blocks, BLOCKS)

        return self._once("space" if space else "codes", load)

    def _filter(self, where: str) -> lc_index.Allowed:
        """The source_ids passing ``where``: one boolean SQL expression over source_meta, parsed
        as an expression (DuckDB's relational filter), never pasted into a statement. Evaluated
        once per filter text and kept (with its FAISS selector) for the Catalog's life, the
        `FILTER_CACHE` most recently used filters of at most `FILTER_CACHE_IDS` ids in all."""
        if not isinstance(where, str) or not where.strip():
            raise LatentcatError(f"bad where filter {where!r}: give one SQL boolean expression")
        with self._lock:
            allowed = self._filters.get(where)
            if allowed is not None:
                self._filters.move_to_end(where)
                return allowed
        cursor = self._cursor()
        try:
            with self._time_limit(cursor, f"where filter {where!r}"):
                ids = cursor.table("source_meta").filter(where).select("source_id").to_arrow_table()
        except duckdb.Error as err:
            reason = _one_line(err).split(" LINE ")[0]
            raise LatentcatError(f"bad where filter {where!r}: {reason}") from err
        allowed = lc_index.Allowed(ids.column("source_id").to_numpy())
        with self._lock:
            self._filters[where] = allowed
            self._filters.move_to_end(where)
            while len(self._filters) > 1 and (
                    len(self._filters) > FILTER_CACHE
                    or sum(len(a) for a in self._filters.values()) > FILTER_CACHE_IDS):
                self._filters.popitem(last=False)
        return allowed

    # -----------------------------------------------------------------------------------
    # nearest neighbours

    def _batch(self, queries, modality: str, single: bool) -> _Batch:
        """Resolve source_ids (an int64 array) or vectors (float (n, d)) into query vectors: the
        part set each is searched on, and the source each must not return. Every query is
        checked before any is searched, so a bad one fails the call before anything is answered."""
        space, names, spec = _modality(modality)
        try:
            wanted = parse_block_set(spec, names)
        except ValueError as err:
            raise LatentcatError(f"{err}, or 'space', the default") from None
        if queries.dtype.kind in "iu":
            ids = queries.astype(np.int64, copy=False).ravel()
            vec = self._vectors(space)
            if ids.size == 1:  # one source: the same checks on plain values
                sid = int(ids[0])
                row = int(np.searchsorted(vec.ids, sid))
                if row >= vec.ids.size or vec.ids[row] != sid:
                    raise LatentcatError(f"source_id {sid} is not in the catalogue")
                have = tuple(b for b in wanted if not math.isnan(vec.parts[b][row, 0]))
                if spec != "all" and have != wanted:
                    missing = "+".join(b for b in wanted if b not in have)
                    raise LatentcatError(f"source_id {sid} has no {missing} {'part' if space else 'code'}")
                if not have:
                    raise LatentcatError(f"source_id {sid} has no latent code")
                return _Batch(ids, ids, np.zeros(1, np.int64), {0: have}, space, vec, np.array([row]), None)
            rows = np.searchsorted(vec.ids, ids) if vec.ids.size else np.zeros(ids.size, np.int64)
            rows = np.minimum(rows, max(vec.ids.size - 1, 0))
            known = (vec.ids[rows] == ids) if vec.ids.size else np.zeros(ids.size, bool)
            _refuse(ids, ~known, "source_id {} is not in the catalogue", single)
            have = np.stack([np.isfinite(vec.parts[b][rows, 0]) for b in wanted], axis=1)
            if spec != "all":
                lacking = ~have.all(axis=1)
                if lacking.any():
                    first = int(np.flatnonzero(lacking)[0])
                    missing = "+".join(b for b, h in zip(wanted, have[first]) if not h)
                    _refuse(ids, lacking, f"source_id {{}} has no {missing} {'part' if space else 'code'}", single)
            _refuse(ids, ~have.any(axis=1), "source_id {} has no latent code", single)
            code = have @ (1 << np.arange(len(wanted)))  # the part set of each query, as bits
            sets = {int(c): tuple(b for j, b in enumerate(wanted) if c >> j & 1) for c in np.unique(code)}
            return _Batch(ids, ids, code, sets, space, vec, rows, None)
        from latentcat.analysis.space import PART_DIM

        dims = PART_DIM if space else dict.fromkeys(names, BLOCK_DIM)
        dim = sum(dims[b] for b in wanted)
        x = np.asarray(queries, dtype=np.float32)
        if x.shape[-1] != dim:
            raise LatentcatError(f"a {modality} query vector has {dim} values, got {x.shape[-1]}")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise LatentcatError("the query vector holds NaN or infinite values" if single else
                                 f"query vector {first} holds NaN or infinite values")
        n = len(x)
        return _Batch(np.arange(n, dtype=np.int64), np.full(n, -1, np.int64), np.zeros(n, np.int64),
                      {0: wanted}, space, None, None, np.ascontiguousarray(x))

    def _answer(self, batch: _Batch, pos: np.ndarray, k: int, allowed, with_meta: bool | tuple[str, ...],
                with_query_id: bool) -> pa.Table:
        """The neighbours of the queries at positions ``pos`` of a batch: one FAISS call per part
        set among them, the metadata of all their neighbours taken at once."""
        if pos.size == 1 and not with_query_id:  # one query (`similar`): plain lists, columns made once
            p = int(pos[0])
            blocks = batch.sets[int(batch.code[p])]
            x = batch.x[p : p + 1] if batch.x is not None else \
                np.concatenate([batch.vectors.parts[b][batch.rows[p]] for b in blocks])[None]
            found, dist = lc_index.search_one(self._index(blocks, batch.space), x, k, allowed, int(batch.exclude[p]))
            found = np.array(found, np.int64)  # Arrow takes numpy arrays faster than lists
            head = {"rank": _ranks(found.size), "source_id": pa.array(found),
                    "distance": pa.array(np.array(dist, np.float32)),
                    "blocks": _repeated(lc_index.index_key(blocks, batch.space), found.size)}
            return self._with_meta(head, found, with_meta)
        parts = []
        for code, blocks in batch.sets.items():
            sel = pos if len(batch.sets) == 1 else pos[batch.code[pos] == code]
            if sel.size == 0:
                continue
            if batch.x is not None:
                x = batch.x[sel]
            else:
                rows = batch.rows[sel]
                x = np.hstack([batch.vectors.parts[b][rows] for b in blocks])
            dist, ids = lc_index.search_many(self._index(blocks, batch.space), x, k, allowed, batch.exclude[sel])
            if sel.size == 1:
                m = int(np.count_nonzero(ids[0] >= 0))  # found ids come first
                parts.append((np.repeat(sel, m), np.arange(1, m + 1), ids[0, :m], dist[0, :m], np.full(m, code)))
                continue
            r, c = np.nonzero(ids >= 0)  # row by row, in rank order
            parts.append((sel[r], c + 1, ids[r, c], dist[r, c], np.full(r.size, code)))
        if not parts:
            parts = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                      np.empty(0, np.float32), np.empty(0, np.int64))]
        q, rank, ids, dist, code = (np.concatenate(a) for a in zip(*parts)) if len(parts) > 1 else parts[0]
        if len(parts) > 1:  # back to query order
            order = np.lexsort((rank, q))
            q, rank, ids, dist, code = q[order], rank[order], ids[order], dist[order], code[order]
        keys = sorted(batch.sets)
        names = [lc_index.index_key(batch.sets[c], batch.space) for c in keys]
        head = {}
        if with_query_id:
            head["query_id"] = pa.array(batch.query_id[q], pa.int64())
        head["rank"] = pa.array(rank.astype(np.int32))
        head["source_id"] = pa.array(ids, pa.int64())
        head["distance"] = pa.array(dist, pa.float32())
        if len(keys) == 1:
            head["blocks"] = pa.repeat(pa.scalar(names[0], pa.string()), len(code))
        else:
            head["blocks"] = pa.array(names, pa.string()).take(np.searchsorted(keys, code))
        return self._with_meta(head, ids, with_meta)

    def _with_meta(self, head: dict, ids: np.ndarray, columns: bool | tuple[str, ...] = True) -> pa.Table:
        """``head`` (the neighbour columns) followed by the source_meta ``columns`` of ``ids`` (True:
        all of them, False: none), taken by row from the loaded source_meta (null where a row is
        missing)."""
        if columns is False:
            return pa.table(head)
        meta_ids, meta = self._meta_rows()
        if columns is not True:
            meta = self._meta_columns(columns)
        pos = np.minimum(np.searchsorted(meta_ids, ids), max(meta_ids.size - 1, 0))
        there = meta_ids[pos] == ids if meta_ids.size else np.zeros(ids.size, bool)
        rows = meta.take(pos if there.all() else pa.array(pos, pa.int64(), mask=~there))
        return pa.Table.from_batches([pa.RecordBatch.from_arrays(
            [*head.values(), *rows.columns], names=[*head, *rows.schema.names])])

    def _checked_meta(self, with_meta) -> bool | tuple[str, ...]:
        """The ``with_meta`` argument checked: True (every source_meta column), False (none) or a
        tuple of source_meta column names, each known (checked before anything is searched)."""
        if isinstance(with_meta, (bool, np.bool_)):
            return bool(with_meta)
        if isinstance(with_meta, str) or not isinstance(with_meta, Sequence) \
                or not all(isinstance(c, str) for c in with_meta):
            raise LatentcatError("with_meta takes True, False or a list of source_meta column names, "
                                 f"got {with_meta!r}")
        self._meta_columns(tuple(with_meta))
        return tuple(with_meta)

    def _meta_columns(self, columns: tuple[str, ...]) -> pa.RecordBatch:
        """The loaded source_meta narrowed to ``columns`` (in their order; source_id, which every
        answer has, left out), kept per column list; an unknown name is a LatentcatError."""
        wanted = tuple(dict.fromkeys(c for c in columns if c != "source_id"))

        def load():
            meta = self._meta_rows()[1]
            unknown = [c for c in wanted if c not in meta.schema.names]
            if unknown:
                raise LatentcatError(f"source_meta has no column {unknown[0]!r} "
                                     f"(it has: {', '.join(meta.schema.names)})")
            return meta.select(list(wanted))

        return self._once(("meta",) + wanted, load)

    def iter_similar(self, queries, k: int = 10, modality: str = "space", where: str | None = None, *,
                     with_meta: bool | Sequence[str] = True, chunk_size: int = CHUNK):
        """`similar` for many queries, one Arrow table per chunk of ``chunk_size`` queries, for
        streaming large batches (``latentcat similar --ids-file`` writes them as they come).

        Every query is checked first: an unknown source_id, or one without the requested part,
        fails the call before any table is produced. Each chunk costs one FAISS call per part
        set among its queries and one metadata lookup. Parameters and columns as `similar` with
        a batch (``query_id`` first); a batch without queries gives one empty table.

        Returns
        -------
        iterator of pyarrow.Table
        """
        k = _checked_k(k)
        with_meta = self._checked_meta(with_meta)
        batch = self._batch(_as_batch(queries), modality, single=False)
        allowed = self._filter(where) if where is not None else None
        chunk_size = max(1, int(chunk_size))

        def tables():
            n = len(batch.query_id)
            for start in range(0, max(n, 1), chunk_size):
                pos = np.arange(start, min(n, start + chunk_size))
                yield self._answer(batch, pos, k, allowed, with_meta, with_query_id=True)

        return tables()

    def similar(self, query=None, k: int = 10, modality: str = "space", where: str | None = None, *,
                light_curve=None, xp=None, time_format: str = "gaia", bp_rp: float | None = None,
                with_meta: bool | Sequence[str] = True) -> pa.Table:
        """The k catalogue sources nearest to a source, a latent vector, or raw data; or to each
        of many sources or vectors at once.

        Parameters
        ----------
        query : int, array_like or a batch, optional
            A Gaia source_id (the source itself is left out of the answer) or a vector:
            16 search-space values for ``"space"`` (all four parts), 15 latent values for
            ``"all"``, 5 per block otherwise. A batch: a sequence (list, numpy or Arrow array)
            of integer source_ids, or a 2-D array of vectors, one per row; give a single vector
            as floats, since a sequence of integers is a batch of source_ids. Leave it out to
            search with ``light_curve`` and/or ``xp`` instead.
        light_curve : (time, mag, mag_err), optional
            A G-band light curve not in the catalogue; it goes through the catalogue's own
            feature extraction and trained encoders (`latentcat.query.by_example`). The
            answer's ``query_info`` metadata (``table.schema.metadata[b"query_info"]``, JSON)
            holds its derived period, amplitude and latents.
        xp : (bp_flux, bp_flux_error, rp_flux, rp_flux_error), optional
            Sampled BP/RP spectra on `latentcat.gaia.xp.XP_SAMPLING`.
        time_format : {"gaia", "bjd", "jd", "mjd"}
            Time system of ``light_curve`` (gaia: BJD - 2455197.5).
        bp_rp : float, optional
            With ``light_curve``/``xp``: the source's BP - RP colour, so that the search space's
            colour part is compared too (data alone carries none).
        with_meta : bool or list of str
            Join the neighbours to the catalogue's metadata: True, every source_meta column
            (the default); a list, those columns only (the cheapest way to get a few: the
            answer is assembled from them alone); False, only rank, source_id, distance and
            blocks.
        k : int
            Number of neighbours (per query).
        modality : {"space", "all", "xp", "dmdt", "fold"} or a block set such as "dmdt+fold"
            What is compared. ``"space"`` (the default): the search space, the latent blocks
            and the BP - RP colour standardised by the catalogue's stored rule
            (`latentcat.analysis.space`), on the parts the query source has: a source without
            XP is matched on dm-dt, fold and colour among the sources that have them;
            ``"space:dmdt+fold"`` names the parts. ``"all"``: the latent blocks themselves,
            every block the query has. Otherwise the named latent blocks.
        where : str, optional
            SQL condition on the source_meta view (gaia_source, label and feature columns,
            e.g. ``"phot_g_mean_mag < 16 AND best_class_name = 'RRAB'"``), applied inside the
            search (a FAISS IDSelector), so k rows come back whenever k sources pass it. It is
            evaluated once per Catalog and filter text and kept (`FILTER_CACHE`).

        Returns
        -------
        pyarrow.Table
            rank (1 = nearest), source_id, distance (Euclidean), blocks (what was compared,
            e.g. "space:dmdt+fold+colour" or "dmdt+fold"), then the source_meta columns. A
            batch gives one table for all its queries, ``query_id`` first (the query's
            source_id, or its row number for vectors), in query order and rank order within
            each; for large batches `iter_similar` streams it chunk by chunk.

        Raises
        ------
        LatentcatError
            Unknown source_id, a source without the requested block, a malformed vector
            or a bad ``where`` filter.
        """
        if light_curve is not None or xp is not None:
            if query is not None:
                raise LatentcatError("give either a source_id/vector or light_curve/xp data, not both")
            from latentcat.query.by_example import similar_to_data

            table, info = similar_to_data(self, light_curve=light_curve, xp=xp, k=k, modality=modality,
                                          where=where, time_format=time_format, bp_rp=bp_rp,
                                          with_meta=with_meta)
            meta = {b"query_info": json.dumps(info, default=_jsonable).encode()}
            return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        if query is None:
            raise LatentcatError("similar() needs a source_id, a latent vector, or light_curve/xp data")
        queries = _as_batch(query)
        if queries is not None:
            tables = list(self.iter_similar(queries, k, modality, where, with_meta=with_meta))
            return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        k = _checked_k(k)
        with_meta = self._checked_meta(with_meta)
        if isinstance(query, (int, np.integer)):
            one = np.array([as_source_id(query)], np.int64)
        else:
            one = np.asarray(query, dtype=np.float32).reshape(1, -1)
        batch = self._batch(one, modality, single=True)
        allowed = self._filter(where) if where is not None else None
        return self._answer(batch, np.arange(1), k, allowed, with_meta, with_query_id=False)

    def like(self, ids, top: int = 100, where: str | None = None, modality: str = "space", *,
             with_meta: bool | Sequence[str] = True, seed: int = 0) -> pa.Table:
        """More like these: every other source ranked by its similarity to a set of sources.

        The rule: a source's ``score`` is its mean Euclidean distance to its m nearest members
        of the set, m = min(`latentcat.analysis.like.LIKE_M`, members used), in the search space (or ``modality``).
        The set is compared on the parts every member has, as `similar` compares one source on
        the parts it has: a set with members without XP on dm-dt, fold and colour. When those
        hold no latent block (a member without a light curve in a set of light curves, say), on
        the combination of parts that compares the most member values, (members that have all
        of it) x (its number of values), and the members without it are set aside
        (``like_info`` names them). Sources that lack one of the parts are not ranked, and
        nothing is filled in. Lower is more alike; the ranking is exact, over every source with
        those parts except the set's own members.

        It also checks itself: a random fifth of the members used (at least one; ``seed``) is
        held out, the rest ranks the catalogue by the same rule (held-out members among the
        candidates, ``where`` not applied), and the share of held-out members that land in the
        top 1% is its recall (chance: 1%). Above 200,000 candidates the held-out members' ranks
        are estimated against a random sample of 200,000 (`latentcat.analysis.like.SELF_CHECK_SAMPLE`);
        the ranking itself is always exact.

        Parameters
        ----------
        ids : sequence of int
            The set's source_ids (repeats count once).
        top : int
            Rows returned (at most `MAX_K`).
        where : str, optional
            SQL condition on source_meta that the ranked sources must pass (as in `similar`).
        modality : str
            As in `similar`: ``"space"`` (the default), ``"all"`` (the latent blocks), or named
            parts or blocks (``"space:dmdt+fold+colour"``, ``"fold"``), which are then used as
            given (e.g. to rank the sources without XP too when every member has it).
        with_meta : bool or list of str
            Join the source_meta columns: all (default), those listed, or none (False).
        seed : int
            Seed of the held-out fifth.

        Returns
        -------
        pyarrow.Table
            rank, source_id, score, nearest_member (the closest member's source_id), blocks,
            then the source_meta columns. ``table.schema.metadata[b"like_info"]`` (JSON):
            ``members`` (given), ``used``, ``set_aside`` (up to 20 source_ids lacking a compared
            part), ``m``, ``blocks``, ``rule``, ``ranked`` (sources ranked), and ``self_check``
            (held_out, seed, m, ranked, top_1pct (rows), recall, chance, median_rank, sampled:
            the candidates sampled, or null when every one was ranked), null when
            fewer than two members are used.

        Raises
        ------
        LatentcatError
            An empty set, an unknown source_id, no member with the named parts (or with any
            part), or a bad ``where`` filter.
        """
        top = _checked_k(top, "top")
        with_meta = self._checked_meta(with_meta)
        given = _as_batch([ids] if isinstance(ids, (int, np.integer)) else ids)
        if given is None or given.dtype.kind not in "iu":
            raise LatentcatError("like() takes source_ids (integers)")
        members = np.unique(given.astype(np.int64))
        if members.size == 0:
            raise LatentcatError("like() needs at least one source_id")
        space, spec, wanted = _named_parts(modality)
        vec = self._vectors(space)
        rows = np.minimum(np.searchsorted(vec.ids, members), max(vec.ids.size - 1, 0))
        known = vec.ids[rows] == members if vec.ids.size else np.zeros(members.size, bool)
        _refuse(members, ~known, "source_id {} is not in the catalogue", single=members.size == 1)
        have = {b: np.isfinite(vec.parts[b][rows, 0]) for b in wanted}
        use = _like_parts(have, space) if spec == "all" else wanted
        used = np.logical_and.reduce([have[b] for b in use]) if use else np.zeros(members.size, bool)
        if not used.any():
            raise LatentcatError(f"no source of the set has {'+'.join(use or wanted)}"
                                 + ("" if spec == "all" else ": give a modality naming parts its members have"))
        has = np.ones(vec.ids.size, bool)
        for b in use:
            has &= np.isfinite(vec.parts[b][:, 0])
        cand = np.flatnonzero(has)  # the rows that can be compared on those parts
        x = np.hstack([vec.parts[b][cand] for b in use])
        member_at = np.searchsorted(cand, rows[used])  # the members' positions among them
        m = min(LIKE_M, int(used.sum()))
        ranked = np.ones(cand.size, bool)
        ranked[member_at] = False  # no member is ranked (those set aside lack a part: not candidates)
        if where is not None:
            ranked &= self._filter(where).contains(vec.ids[cand])
        pick, score, nearest = best_rows(x, x[member_at], m, top, ranked, vec.ids[cand])
        found = vec.ids[cand[pick]]
        name = lc_index.index_key(use, space)
        head = {
            "rank": pa.array(np.arange(1, pick.size + 1, dtype=np.int32)),
            "source_id": pa.array(found, pa.int64()),
            "score": pa.array(score, pa.float32()),
            "nearest_member": pa.array(members[used][nearest], pa.int64()),
            "blocks": pa.array([name] * pick.size, pa.string()),
        }
        table = self._with_meta(head, found, with_meta)
        info = {"members": int(members.size), "used": int(used.sum()),
                "set_aside": members[~used][:20].tolist(), "m": m, "blocks": name,
                "rule": f"mean distance to the {m} nearest members", "ranked": int(ranked.sum()),
                "self_check": self_check(x, member_at, seed)}
        meta = {b"like_info": json.dumps(info).encode()}
        return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})

    def discover(self, seed: int = 0, labels: str | Path | None = None, modality: str = "space",
                 where: str | None = None):
        """An active discovery session: unusual sources one at a time, ranked by the
        isolation forest and moved by each answer, up near sources you called interesting and
        down near those you did not (`latentcat.analysis.discover`).

        ``session.next()`` gives the source_id to look at, ``session.label(source_id, True or
        False)`` answers it (``session.skip(source_id)`` passes; known examples may be labelled
        too), ``session.save(path)`` writes the answers to a CSV file you own
        (``source_id,interesting``), and ``cat.discover(labels=path)`` resumes from it. The
        catalogue is only read.

        Parameters
        ----------
        seed : int
            Seed of the isolation forest, when the catalogue holds no ``isolation_forest:space``
            outlier scores for these sources (then one is fitted on the vectors used).
        labels : path, optional
            An answers file (`latentcat.analysis.discover.read_answers`) to resume from.
        modality : str
            The vectors that say which sources are alike: ``"space"`` (the default: the
            search-space parts every source has, else the combination that covers the most
            values, as `like` chooses for a set), named parts (``"space:xp+dmdt+fold+colour"``),
            or latent blocks (``"all"``, ``"fold"``). Sources without those parts are never shown.
        where : str, optional
            SQL condition on source_meta that the sources shown must pass (as in `similar`).

        Returns
        -------
        latentcat.analysis.discover.Discovery
            With ``parts`` (the parts used) and ``n_ranked`` (sources that can be shown).

        Raises
        ------
        LatentcatError
            A bad answers file (named with its line), an answered source_id that is not in the
            catalogue, fewer than two sources with the parts, or a bad ``where`` filter.
        """
        from latentcat.analysis.discover import Discovery, read_answers
        from latentcat.analysis.outliers import forest_for

        space, spec, wanted = _named_parts(modality)
        vec = self._vectors(space)
        have = {b: np.isfinite(vec.parts[b][:, 0]) for b in wanted}
        use = _like_parts(have, space) if spec == "all" else wanted
        rows = np.logical_and.reduce([have[b] for b in use]) if use else np.zeros(vec.ids.size, bool)
        if where is not None:
            rows &= self._filter(where).contains(vec.ids)
        rows = np.flatnonzero(rows)
        if rows.size < 2:
            raise LatentcatError(f"fewer than two sources have {'+'.join(use or wanted)}"
                                 + ("" if where is None else " and pass the where filter"))
        answers = None
        if labels is not None:
            answers = read_answers(Path(labels))
            given = np.fromiter(answers, np.int64, len(answers))
            at = np.minimum(np.searchsorted(vec.ids, given), max(vec.ids.size - 1, 0))
            unknown = given[vec.ids[at] != given] if given.size else given
            if unknown.size:
                raise LatentcatError(f"{labels}: source_id {unknown[0]} is not in the catalogue {self.path}")
        ids = vec.ids[rows]
        x = np.hstack([vec.parts[b][rows] for b in use])
        stored = self._query(sql_statements("query")["outlier_scores_of"], {"method": "isolation_forest:space"})
        have_score = np.isin(ids, stored.column("source_id").to_numpy())
        if space and have_score.all():
            score = stored.column("score").to_numpy()[np.searchsorted(stored.column("source_id").to_numpy(), ids)]
        else:  # no stored ranking for these vectors: a forest on them
            score = -forest_for(x, seed).score_samples(x)
        return Discovery(ids, x, score, answers=answers, parts=lc_index.index_key(use, space))

    # -----------------------------------------------------------------------------------
    # analyses on the latent codes (scikit-learn and torch are imported on first use)

    def build_id(self) -> str:
        """The build's identifier: ``build_info.build_id`` (written by `latentcat build`), else a
        short hash of the whole build record."""
        rows = self._query(sql_statements("query")["build_info"]).to_pylist()
        for r in rows:
            if r["key"] == "build_id":
                return json.loads(r["value"])
        record = json.dumps([[r["key"], r["value"]] for r in rows])
        return hashlib.sha256(record.encode()).hexdigest()[:12]

    def map(self, with_meta: bool = False) -> pa.Table:
        """The stored 2-D map: ``source_id, x, y``, plus the source_meta columns with ``with_meta``.

        Empty until a map has been written (`latentcat.catalog.store.write_map`).
        """
        return self._query(sql_statements("query")["map_with_meta" if with_meta else "map"])


def open(path: str | Path, allow_external_access: bool = False, timeout: float | None = TIMEOUT,  # noqa: A001
         memory_limit_mib: int = MEMORY_LIMIT_MIB, threads: int | None = None) -> Catalog:
    """Open a catalogue folder (or its catalog.duckdb) read-only.

    Parameters
    ----------
    path : str or Path
    allow_external_access : bool
        Let SQL on this Catalog read files other than the catalogue and reach the network
        (DuckDB's ``enable_external_access``: ``read_csv``, ``read_parquet``, httpfs...).
        Off by default: the connection then reaches nothing but the catalogue, and its
        configuration is locked. Either way the catalogue file stays attached read-only: no
        statement may attach, detach or write it (`READ_STATEMENTS`).
    timeout : float or None
        Seconds a query (`Catalog.sql`) or a ``where`` filter may run before it is interrupted
        (default `TIMEOUT`; None: no limit).
    memory_limit_mib : int
        DuckDB's memory limit for this Catalog, and the largest answer `Catalog.sql` returns
        (default `MEMORY_LIMIT_MIB`). Nothing spills to disk.
    threads : int, optional
        DuckDB threads per query (default: DuckDB's, one per core). A server answering many
        requests at once gives 1, so a slow query holds one core and the others keep answering.

    Raises
    ------
    LatentcatError
        No catalogue there, or DuckDB cannot open it.
    """
    path = Path(path)
    folder = path.parent if path.name == DB_NAME else path
    db_path = folder / DB_NAME
    if not db_path.is_file():
        raise LatentcatError(f"{folder}: not a latentcat catalogue ({DB_NAME} not found)")
    if timeout is not None and not timeout > 0:
        raise LatentcatError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if not int(memory_limit_mib) >= 64:
        raise LatentcatError(f"memory limit must be at least 64 MiB, got {memory_limit_mib!r}")
    try:
        # a database of its own in which the file is attached read-only: a Catalog opened after an
        # `add` sees the new file even while an older Catalog of this process holds the old one
        # (connections to one path would share DuckDB's cached database), and its settings are its own
        con = duckdb.connect(":memory:")
        quoted = str(db_path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS catalog (READ_ONLY)")
        con.execute("USE catalog")
        con.execute(f"SET memory_limit = '{int(memory_limit_mib)}MiB'")
        con.execute("SET temp_directory = ''")  # a reader writes no file, not even a spill
        if threads is not None:
            con.execute(f"SET threads = {max(1, int(threads))}")
        if not allow_external_access:
            con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as err:
        raise LatentcatError(f"{db_path}: cannot open ({_one_line(err)})") from err
    return Catalog(folder, con, timeout=timeout, memory_limit_mib=int(memory_limit_mib))
