"""The embeddings as a HATS catalogue (``embeddings_hats/``) that LSDB and any Parquet reader open.

HATS (https://hats.readthedocs.io) partitions a catalogue into HEALPix pixels, one Parquet leaf
per pixel, each row carrying its level-29 nested HEALPix index in ``_healpix_29``. Here the
partition comes from the Gaia DR3 source_id itself, not from ra/dec: ``source_id // 2**35`` is
the source's level-12 nested HEALPix index (Gaia DR3 documentation, ``gaia_source.source_id``),
and a level-29 index is a level-12 index times ``4**17``, so

    _healpix_29 = (source_id >> 35) << 34

is the first level-29 pixel inside the source's level-12 pixel. A source's rows therefore sit in
the same pixel at every order up to 12 as Gaia's own HATS catalogues, which place it by ra/dec.
Sources without ra/dec (no gaia_source row in the inputs) are kept, with null ra and dec.

Crossmatching with LSDB (the Gaia DR3 address is the one data.lsdb.io lists)::

    import lsdb
    emb = lsdb.read_hats("my_catalog/embeddings_hats")
    gaia = lsdb.open_catalog("https://data.lsdb.io/hats/gaia_dr3", columns=["source_id", "ra", "dec"])
    same = emb.join(gaia, left_on="source_id", right_on="source_id", suffixes=("", "_gaia"),
                    suffix_method="overlapping_columns").compute()   # by source_id, exact
    near = emb.query("ra == ra").crossmatch(gaia, radius_arcsec=1.0, suffixes=("", "_gaia")).compute()

``join`` pairs rows by source_id and needs no ra/dec: the leaves of both catalogues meet because
the source_id pixel is the pixel of the source's position (LSDB warns that the right catalogue
has no margin cache; only a source whose DR3 position lies outside its source_id's level-12
pixel, about 0.9 arcmin wide, could be missed). ``crossmatch`` pairs by position and refuses null
coordinates, hence ``query("ra == ra")``, which keeps the sources that have ra/dec.
Without LSDB, ``duckdb.sql("SELECT * FROM read_parquet('my_catalog/embeddings_hats/dataset/**/*.parquet')")``
reads the same rows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latentcat import __version__
from latentcat.errors import InputError, LatentcatError
from latentcat.errors import one_line as _one_line
from latentcat.gaia.source_ids import MAX_SOURCE_ID
from latentcat.layout import shards


CATALOG_NAME = "latentcat_embeddings"
"""The catalogue name written to the HATS properties (``obs_collection``)."""

MAX_ROWS = 500_000
"""Default most rows in one leaf."""

HISTOGRAM_ORDER = 8
"""Deepest HEALPix order a leaf may have: a leaf holds at most ``max_rows`` rows unless a single
order-8 pixel (0.05 square degree) holds more."""

SOURCE_ID_PIXEL_SHIFT = 35
"""``source_id >> 35`` is the level-12 nested HEALPix index of a Gaia DR3 source."""

SOURCE_ID_ORDER = 12

BATCH_ROWS = 65_536
"""Rows fetched from DuckDB and written per Parquet row group."""


def healpix29(source_id: np.ndarray) -> np.ndarray:
    """The HATS spatial index (level-29 nested HEALPix) of Gaia DR3 source_ids.

    Parameters
    ----------
    source_id : numpy.ndarray
        Gaia DR3 source_ids (int64).

    Returns
    -------
    numpy.ndarray
        ``(source_id >> 35) << 34``: the first level-29 pixel of each source's level-12 pixel.
    """
    sid = np.asarray(source_id, dtype=np.int64)
    return (sid >> SOURCE_ID_PIXEL_SHIFT) << (2 * (29 - SOURCE_ID_ORDER))


def _source_id_range(order: int, pixel: int) -> tuple[int, int]:
    """The half-open source_id range [lo, hi) of a HEALPix pixel (order <= 12)."""
    shift = SOURCE_ID_PIXEL_SHIFT + 2 * (SOURCE_ID_ORDER - order)
    return pixel << shift, (pixel + 1) << shift


def _name(x, what: str) -> str:
    """How messages call an input: its path, or ``what`` for a table or relation."""
    return str(x) if isinstance(x, (str, Path)) else what


def _relations(embeddings, sources, con: duckdb.DuckDBPyConnection | None) -> duckdb.DuckDBPyRelation:
    """The embeddings with ra/dec from ``sources`` as one DuckDB relation; tables and files are
    read through ``con`` (None when both inputs are relations)."""

    def relation(x, what: str) -> duckdb.DuckDBPyRelation:
        if isinstance(x, duckdb.DuckDBPyRelation):
            return x
        if isinstance(x, pa.Table):
            return con.from_arrow(x)

        path = Path(x)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        files = shards(path, what) if path.is_dir() else [path]
        return con.read_parquet([str(f) for f in files])

    emb = relation(embeddings, "embeddings")
    if "source_id" not in emb.columns:
        raise InputError(f"{_name(embeddings, 'embeddings')}: no source_id column")
    body = "".join(f', e."{c}"' for c in emb.columns if c not in ("source_id", "ra", "dec", "_healpix_29"))
    if sources is None:
        return emb.set_alias("e").project(f"e.source_id, NULL::DOUBLE AS ra, NULL::DOUBLE AS dec{body}")
    src = relation(sources, "sources")
    missing = {"source_id", "ra", "dec"} - set(src.columns)
    if missing:
        raise InputError(f"{_name(sources, 'sources')}: lacks column(s) {', '.join(sorted(missing))}")
    src = src.project("source_id, ra::DOUBLE AS ra, dec::DOUBLE AS dec").set_alias("s")
    rel = emb.set_alias("e").join(src, "e.source_id = s.source_id", how="left").project(
        f"e.source_id AS source_id, s.ra AS ra, s.dec AS dec{body}")
    if rel.count("*").fetchall() != emb.count("*").fetchall():  # a source_id with two sources rows
        (sid, _), = rel.aggregate("source_id, count(*) AS n", "source_id").filter("n > 1").order("source_id") \
            .limit(1).fetchall()
        raise InputError(f"{_name(sources, 'sources')}: source_id {sid} has more than one row "
                         "(ra/dec would be ambiguous)")
    return rel


def write_embeddings_hats(embeddings, sources, out_dir: Path, *, max_rows: int = MAX_ROWS) -> dict:
    """Write the embeddings as a HATS catalogue that ``hats.read_hats`` and ``lsdb.read_hats`` open.

    Every column of the embeddings is written with the type it has there, with ``ra`` and
    ``dec`` from the sources table (null for a source without a row there; no row is ever
    dropped) and the HATS spatial index ``_healpix_29`` computed from the source_id
    (:func:`healpix29`). From a catalogue's ``embeddings`` table that is ``z`` as a fixed-size
    list of 15 floats, the blocks as fixed-size lists of 5, the modality flags and the
    reconstruction losses; embedding shards (docs/schemas.md) have no ``z`` and their blocks
    are variable-length lists, and are written so. Leaves are HEALPix pixels of adaptive order
    (0 to :data:`HISTOGRAM_ORDER`, chosen by hats' own ``generate_alignment``) holding at most
    ``max_rows`` rows each, written one at a time with rows in source_id order, so memory holds
    one leaf, never the whole table. Metadata (``dataset/_metadata``, ``_common_metadata``,
    ``partition_info.csv``, ``properties``, ``skymap.fits``) is written with the hats library's
    writers. Everything is written into a hidden sibling folder (``.<name>.tmp-<pid>``) that is
    renamed to ``out_dir`` at the end, so ``out_dir`` exists only once complete.

    Parameters
    ----------
    embeddings : Path, pyarrow.Table or duckdb.DuckDBPyRelation
        A folder of ``embeddings-*.parquet`` shards or one Parquet file (docs/schemas.md), a
        table, or a relation such as ``con.table("embeddings")`` of a catalogue connection.
    sources : Path, pyarrow.Table, duckdb.DuckDBPyRelation or None
        Where ra and dec come from (source_id, ra, dec; other columns ignored): a Parquet
        file such as the staging ``sources.parquet``, a table, or a relation of the same
        connection as ``embeddings``. None: ra and dec are all null.
    out_dir : Path
        The HATS catalogue folder to create (conventionally ``<catalogue>/embeddings_hats``);
        must not exist.
    max_rows : int
        Most rows in one leaf (see :data:`HISTOGRAM_ORDER` for the one exception); written to
        the properties as ``hats_max_rows``.

    Returns
    -------
    dict
        ``path``, ``rows``, ``leaves`` (number of leaf files), ``max_leaf_rows`` and
        ``orders`` (the HEALPix orders of the leaves).

    Raises
    ------
    InputError
        An input is missing, unreadable or lacks a column, a source has two sources rows, or a
        source_id is not a Gaia DR3 source_id; the message names the input.
    LatentcatError
        ``out_dir`` already exists.
    """
    from hats.catalog import PartitionInfo, TableProperties
    from hats.catalog.dataset.hats_properties import HatsProperties
    from hats.io import paths as hats_paths
    from hats.io import write_parquet_metadata
    from hats.io.skymap import write_skymap
    from hats.pixel_math import HealpixPixel
    from hats.pixel_math.partition_stats import empty_histogram, generate_alignment

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise LatentcatError(f"{out_dir}: already exists")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    kinds = {isinstance(x, duckdb.DuckDBPyRelation) for x in (embeddings, sources) if x is not None}
    if kinds == {True, False}:
        raise TypeError("embeddings and sources must both be DuckDB relations (of one connection), or neither")
    emb_name = _name(embeddings, "embeddings")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    con = None if True in kinds else duckdb.connect()
    try:
        rel = _relations(embeddings, sources, con)
        (lo, hi, n, with_id), = rel.aggregate("min(source_id), max(source_id), count(*), count(source_id)").fetchall()
        if n == 0:
            raise InputError(f"{emb_name}: no rows to write as a HATS catalogue")
        if with_id != n:
            raise InputError(f"{emb_name}: {n - with_id} row(s) without a source_id")
        if lo < 0 or hi >= MAX_SOURCE_ID:
            bad = lo if lo < 0 else hi
            raise InputError(f"{emb_name}: source_id {bad} is not a Gaia DR3 source_id (its HEALPix pixel is out of range)")
        shift = SOURCE_ID_PIXEL_SHIFT + 2 * (SOURCE_ID_ORDER - HISTOGRAM_ORDER)
        counts = rel.aggregate(f"source_id >> {shift} AS pixel, count(*) AS n", "pixel").fetchnumpy()
        histogram = empty_histogram(HISTOGRAM_ORDER)
        histogram[counts["pixel"].astype(np.int64)] = counts["n"]
        threshold = max(int(max_rows), int(histogram.max()))
        alignment = generate_alignment(histogram, highest_order=HISTOGRAM_ORDER, threshold=threshold)
        leaves = sorted({(int(a[0]), int(a[1]), int(a[2])) for a in alignment[histogram > 0]})

        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run with this process id
        tmp.mkdir(parents=True)
        for order, pixel, _ in leaves:
            start, stop = _source_id_range(order, pixel)
            path = Path(hats_paths.pixel_catalog_file(tmp, HealpixPixel(order, pixel)).path)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_leaf(rel.filter(f"source_id >= {start} AND source_id < {stop}").order("source_id"), path)

        if write_parquet_metadata(tmp) != n:  # every row is in exactly one leaf
            raise LatentcatError(f"{out_dir}: the leaves do not hold the {n} embedding rows")
        partition_info = PartitionInfo([HealpixPixel(o, p) for o, p, _ in leaves])
        partition_info.write_to_file(tmp / "partition_info.csv")
        TableProperties(
            catalog_name=CATALOG_NAME, catalog_type="object", total_rows=int(n),
            ra_column="ra", dec_column="dec", healpix_column="_healpix_29", healpix_order=29,
            hats_order=partition_info.get_highest_order(), hats_max_rows=threshold,
            moc_sky_fraction=float(f"{partition_info.calculate_fractional_coverage():.5g}"),
            skymap_order=HISTOGRAM_ORDER, npix_suffix=".parquet",
            **HatsProperties.new_provenance_dict(tmp, builder=f"latentcat v{__version__}"),
        ).to_properties_file(tmp)
        write_skymap(histogram, tmp)
        os.replace(tmp, out_dir)
    except duckdb.Error as err:
        where = ", ".join(str(x) for x in (embeddings, sources) if isinstance(x, (str, Path))) or emb_name
        raise InputError(f"{where}: cannot read the embeddings for {out_dir}: {_one_line(err)}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if con is not None:
            con.close()
    return {"path": str(out_dir), "rows": int(n), "leaves": len(leaves),
            "max_leaf_rows": max(c for *_, c in leaves), "orders": sorted({o for o, *_ in leaves})}


def _write_leaf(part: duckdb.DuckDBPyRelation, path: Path) -> None:
    """Write one leaf's rows, adding ``_healpix_29`` (:func:`healpix29`) batch by batch."""
    reader = part.to_arrow_reader(BATCH_ROWS)
    try:
        schema = reader.schema.append(pa.field("_healpix_29", pa.int64()))
        with pq.ParquetWriter(path, schema) as writer:
            for batch in reader:
                index = pa.array(healpix29(batch.column("source_id").to_numpy()))
                writer.write_batch(pa.RecordBatch.from_arrays([*batch.columns, index], schema=schema))
    finally:
        reader.close()
