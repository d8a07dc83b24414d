"""The read-only Catalog: SQL over catalog.duckdb and nearest neighbours through FAISS.

    >>> import latentcat
    >>> cat = latentcat.open("cat/")
    >>> cat.similar(5853498713190525696, k=10, where="phot_g_mean_mag < 16")
    >>> cat.sql("SELECT best_class_name, count(*) FROM labels GROUP BY 1")
    >>> cat.map(with_meta=True)                      # the stored 2-D map

Classifiers, outlier rankings and the map are fitted on an open Catalog by `latentcat.analyse`.

Many processes may open the same catalogue at once; none of them can change it. A Catalog is a
snapshot: its DuckDB connection and every FAISS index are opened when it is, so a later
``latentcat add`` (which swaps in a new catalogue folder) is seen only by a Catalog opened
after it. Its connection reaches nothing outside catalog.duckdb (DuckDB's external access is
off and the configuration locked) unless it is opened with ``allow_external_access=True``; a
``where`` filter is parsed as one SQL expression, never pasted into a statement; user SQL runs on
its own connection, so a temporary view it creates cannot stand in for the catalogue's tables
in the Catalog's own queries.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from latentcat.blocks import BLOCK_DIM, BLOCKS, parse_block_set, SPACE
from latentcat.catalog import index as lc_index
from latentcat.catalog.store import sql_statements
from latentcat.errors import LatentcatError
from latentcat.errors import one_line as _one_line
from latentcat.layout import DB_NAME, INDEX_DIR

MAX_K = 10_000
"""Most neighbours one `Catalog.similar` call returns."""

MODALITIES = ("space", "all", "xp", "dmdt", "fold")
"""``space``: the search space (latent blocks and colour, `latentcat.analysis.space`), the
default; ``all``: the latent blocks a source has; or one block or a '+'-joined set of blocks."""


def _modality(modality: str) -> tuple[bool, tuple[str, ...], str]:
    """(search space?, the canonical names, the block-set spec) of a modality: ``"space"`` is the
    search space on the parts a query has, ``"space:dmdt+fold"`` named parts of it; anything
    else names latent blocks."""
    from latentcat.analysis.space import PARTS

    head, colon, spec = str(modality).partition(":")
    if head == SPACE:
        return True, PARTS, spec if colon else "all"
    return False, BLOCKS, modality


def _jsonable(value):
    """numpy values in a query_info record, as JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class Catalog:
    """A latentcat catalogue opened read-only. Create it with `latentcat.open`."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection):
        self.path = Path(path)
        self._con = con
        self._local = threading.local()
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

    def _query(self, query: str, params=None, user: bool = False) -> pa.Table:
        """Run a query; a failure of the Catalog's own queries (a damaged file) is one line."""
        try:
            result = self._cursor(user).sql(query, params=params)
            return result.to_arrow_table() if result is not None else pa.table({})
        except duckdb.Error as err:
            if user:
                raise
            raise LatentcatError(f"{self.path / DB_NAME}: cannot read ({_one_line(err)})") from err

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
            The query fails (including any attempt to write: the catalogue is read-only).
        """
        try:
            return self._query(query, params, user=True)
        except duckdb.Error as err:
            raise LatentcatError(f"SQL error: {_one_line(err)}") from err

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

        rows = self._query(sql_statements("query")["space_of"].format(source_id=int(source_id)))
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
        rows = self._query(sql_statements("query")["codes_of"].format(source_id=int(source_id)))
        if rows.num_rows == 0:
            raise LatentcatError(f"source_id {int(source_id)} is not in the catalogue")
        row = rows.to_pylist()[0]
        return {
            b: None if row[f"z_{b}"] is None else np.asarray(row[f"z_{b}"], np.float32)
            for b in BLOCKS
        }

    def _resolve(self, query, modality: str) -> tuple[np.ndarray, tuple[str, ...], int | None]:
        """The query vector, the block (or part) set searched and the query's own source_id."""
        from latentcat.analysis.space import PART_DIM

        space, names, spec = _modality(modality)
        try:
            wanted = parse_block_set(spec, names)
        except ValueError as err:
            raise LatentcatError(f"{err}, or 'space', the default") from None
        dims = PART_DIM if space else dict.fromkeys(names, BLOCK_DIM)
        if isinstance(query, (int, np.integer)):
            source_id = int(query)
            codes = self.space_vector(source_id) if space else self.codes(source_id)
            have = tuple(b for b in wanted if codes[b] is not None)
            if spec == "all":
                blocks = have  # compare on the blocks the query has
            elif have != wanted:
                missing = "+".join(b for b in wanted if codes[b] is None)
                raise LatentcatError(f"source_id {source_id} has no {missing} {'part' if space else 'code'}")
            else:
                blocks = wanted
            if not blocks:
                raise LatentcatError(f"source_id {source_id} has no latent code")
            return np.concatenate([codes[b] for b in blocks]), blocks, source_id
        vector = np.asarray(query, dtype=np.float32).ravel()
        dim = sum(dims[b] for b in wanted)
        if vector.size != dim:
            raise LatentcatError(
                f"a {modality} query vector has {dim} values, got {vector.size}"
            )
        if not np.all(np.isfinite(vector)):
            raise LatentcatError("the query vector holds NaN or infinite values")
        return vector, wanted, None

    def _allowed_ids(self, where: str) -> np.ndarray:
        """The source_ids passing ``where``: one boolean SQL expression over source_meta, parsed
        as an expression (DuckDB's relational filter), never pasted into a statement."""
        if not isinstance(where, str) or not where.strip():
            raise LatentcatError(f"bad where filter {where!r}: give one SQL boolean expression")
        try:
            ids = self._cursor().table("source_meta").filter(where).select("source_id").to_arrow_table()
        except duckdb.Error as err:
            reason = _one_line(err).split(" LINE ")[0]
            raise LatentcatError(f"bad where filter {where!r}: {reason}") from err
        return ids.column("source_id").to_numpy().astype(np.int64, copy=False)

    def similar(self, query=None, k: int = 10, modality: str = "space", where: str | None = None, *,
                light_curve=None, xp=None, time_format: str = "gaia", bp_rp: float | None = None,
                with_meta: bool = True) -> pa.Table:
        """The k catalogue sources nearest to a source, a latent vector, or raw data.

        Parameters
        ----------
        query : int or array_like, optional
            A Gaia source_id (the source itself is left out of the answer) or a vector:
            16 search-space values for ``"space"`` (all four parts), 15 latent values for
            ``"all"``, 5 per block otherwise. Leave it out to search with ``light_curve``
            and/or ``xp`` instead.
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
        with_meta : bool
            Join the neighbours to the catalogue's metadata (default). False returns only
            rank, source_id, distance and blocks: the fastest answer, for bulk queries.
        k : int
            Number of neighbours.
        modality : {"space", "all", "xp", "dmdt", "fold"} or a block set such as "dmdt+fold"
            What is compared. ``"space"`` (the default): the search space, the latent blocks
            and the BP - RP colour standardised by the catalogue's stored rule
            (`latentcat.analysis.space`), on the parts the query source has: a source without
            XP is matched on dm-dt, fold and colour among the sources that have them;
            ``"space:dmdt+fold"`` names the parts. ``"all"``: the latent blocks themselves,
            every block the query has. Otherwise the named latent blocks.
        where : str, optional
            SQL condition on the source_meta view (gaia_source, label and feature columns,
            e.g. ``"phot_g_mean_mag < 16 AND best_class_name = 'RRAB'"``), applied before
            the top-k cut, so k rows come back whenever k sources pass it.

        Returns
        -------
        pyarrow.Table
            rank (1 = nearest), source_id, distance (Euclidean), blocks (what was compared,
            e.g. "space:dmdt+fold+colour" or "dmdt+fold"), then the source_meta columns.

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
                                          where=where, time_format=time_format, bp_rp=bp_rp)
            meta = {b"query_info": json.dumps(info, default=_jsonable).encode()}
            return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        if query is None:
            raise LatentcatError("similar() needs a source_id, a latent vector, or light_curve/xp data")
        if not 1 <= int(k) <= MAX_K:
            raise LatentcatError(f"k must be between 1 and {MAX_K}, got {k}")
        k = int(k)
        vector, blocks, self_id = self._resolve(query, modality)
        space = _modality(modality)[0]
        index = self._index(blocks, space)
        allowed = None
        if where is not None:
            allowed = self._allowed_ids(where)
            if self_id is not None:
                allowed = allowed[allowed != self_id]
        if allowed is not None and allowed.size == 0:
            dist, ids = np.empty(0, np.float32), np.empty(0, np.int64)
        else:
            extra = 1 if self_id is not None and allowed is None else 0
            dist, ids = lc_index.search(index, vector, k + extra, allowed)
            keep = ids != self_id if self_id is not None else np.ones(ids.size, bool)
            dist, ids = dist[keep][:k], ids[keep][:k]
        name = lc_index.index_key(blocks, space)
        if not with_meta:
            return pa.table({
                "rank": pa.array(np.arange(1, ids.size + 1, dtype=np.int32)),
                "source_id": pa.array(ids, pa.int64()),
                "distance": pa.array(dist, pa.float32()),
                "blocks": pa.array([name] * ids.size, pa.string()),
            })
        return self._with_meta(ids, dist, name)

    def _with_meta(self, ids: np.ndarray, dist: np.ndarray, blocks: str) -> pa.Table:
        """The neighbours in rank order with their source_meta columns (null where a row is missing)."""
        ids = ids.astype(np.int64).tolist()
        sql = sql_statements("query")["meta_of_ids"].format(id_list=",".join(map(str, ids)) or "NULL")
        meta = self._query(sql)
        row_of = dict(zip(meta.column("source_id").to_pylist(), range(meta.num_rows)))
        table = meta.take(pa.array([row_of.get(i) for i in ids], pa.int64())).drop_columns(["source_id"])
        head = {
            "rank": pa.array(np.arange(1, len(ids) + 1, dtype=np.int32)),
            "source_id": pa.array(ids, pa.int64()),
            "distance": pa.array(dist, pa.float32()),
            "blocks": pa.array([blocks] * len(ids), pa.string()),
        }
        for position, (name, column) in enumerate(head.items()):
            table = table.add_column(position, name, column)
        return table

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


def open(path: str | Path, allow_external_access: bool = False) -> Catalog:  # noqa: A001 - the package's public name
    """Open a catalogue folder (or its catalog.duckdb) read-only.

    Parameters
    ----------
    path : str or Path
    allow_external_access : bool
        Let SQL on this Catalog read and write files and reach the network (DuckDB's
        ``enable_external_access``: ``read_csv``, ``COPY ... TO``, ``ATTACH``...). Off by default:
        the connection then reaches nothing but the catalogue, and its configuration is locked.

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
    try:
        # a database of its own in which the file is attached read-only: a Catalog opened after an
        # `add` sees the new file even while an older Catalog of this process holds the old one
        # (connections to one path would share DuckDB's cached database), and its settings are its own
        con = duckdb.connect(":memory:")
        quoted = str(db_path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS catalog (READ_ONLY)")
        con.execute("USE catalog")
        if not allow_external_access:
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as err:
        raise LatentcatError(f"{db_path}: cannot open ({_one_line(err)})") from err
    return Catalog(folder, con)
