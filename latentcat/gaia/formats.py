"""Archive file formats -> Arrow batches: VOTable, ECSV, CSV, FITS and Parquet, each possibly gzipped.

:func:`read_columns` gives a table's column names without reading its rows; :func:`iter_batches`
reads it in bounded batches, with lower-case column names. A reader never decides what a table
*means* (:mod:`latentcat.gaia.layouts` does); the files to read come from
:mod:`latentcat.gaia.inputs` as :class:`InputFile` entries.

A HATS leaf is read like any other Parquet file, less its partitioning columns. A nested
light-curve column (``list<struct>``, or the ``struct<list>`` form nested-pandas writes) is read
as one list column per per-epoch field, one row per source: per-band field names
(``g_transit_time``, ...) give the bulk array layout, DataLink names (``band``, ``time``,
``mag``, ...) the long layout.

Memory: Parquet is read by record batches and CSV/ECSV by byte blocks, so memory follows the
batch size, not the file size. VOTable and FITS are parsed whole by astropy (the archive
serves them per DataLink request, at most 5000 sources each) and then sliced into batches.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latentcat.errors import InputError
from latentcat.gaia.layouts import detect_layout, input_error

#: Columns a HATS leaf carries for its partitioning (``_hipscat_index``: the older name); never read.
HATS_COLUMNS = ("_healpix_29", "_hipscat_index", "norder", "dir", "npix")

#: A nested light-curve row counts as this many epochs against ``batch_rows`` when it is exploded
#: to one row per epoch (a DR3 source has some 40-300 G, BP and RP epochs).
NESTED_ROW_WEIGHT = 100


@dataclass
class InputFile:
    """One table to read: a file on disk, or a member of a zip bundle extracted to disk.

    Attributes
    ----------
    path : Path
        Where the bytes are now (gzip is kept only for text formats and VOTable).
    name : str
        How messages and the report call it (``bundle.zip:member.csv`` for zip members).
    fmt : str
        ``votable``, ``ecsv``, ``csv``, ``fits`` or ``parquet``.
    gzipped : bool
        Whether the bytes are gzip-compressed.
    bundle : str
        The zip file or folder the file sits in (used to pair XP_SAMPLED with XP_CONTINUOUS);
        for a HATS leaf, the catalogue folder.
    hats : bool
        Whether the file is a HATS leaf (its :data:`HATS_COLUMNS` are dropped).
    """

    path: Path
    name: str
    fmt: str
    gzipped: bool
    bundle: str
    hats: bool = False


# --------------------------------------------------------------------------- header


def read_columns(f: InputFile) -> list[str]:
    """Return a table's column names without reading its rows.

    Parameters
    ----------
    f : InputFile
        The table.

    Returns
    -------
    list of str
        Column names, lower-cased as the archive spells them.
    """
    try:
        if f.fmt == "parquet":
            return [c for c, _ in _parquet_plan(pq.read_schema(f.path), f)]
        if f.fmt in ("csv", "ecsv"):
            skip, delim = _text_header(f)
            with _text_stream(f) as fh:
                for _ in range(skip):
                    fh.readline()
                line = fh.readline().decode("utf-8", "replace").strip()
            if not line:
                raise input_error(f.name, "no header row (empty table)")
            return [c.strip().lower() for c in _split_header(line, delim)]
        if f.fmt == "votable":
            with _text_stream(f) as fh:
                head = b""
                while (chunk := fh.read(1 << 16)) and not re.search(rb"<(TABLEDATA|BINARY2?|FITS)\b", head):
                    head += chunk
            names = re.findall(rb"<FIELD\b[^>]*?\bname\s*=\s*\"([^\"]+)\"", head)
            if not names:
                raise input_error(f.name, "VOTable without any FIELD (truncated or not a table)")
            return [n.decode().lower() for n in names]
        if f.fmt == "fits":
            from astropy.io import fits

            with fits.open(f.path) as hdul:
                for hdu in hdul[1:]:
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        return [c.lower() for c in hdu.columns.names]
            raise input_error(f.name, "FITS file without a table extension")
    except InputError:
        raise
    except Exception as exc:  # a reader library's own error: report it as one line
        raise input_error(f.name, f"cannot read {f.fmt} header ({exc})") from None
    raise input_error(f.name, f"unsupported format {f.fmt}")


def _split_header(line: str, delim: str) -> list[str]:
    """Split a CSV header row, honouring quotes."""
    import csv

    return next(csv.reader([line], delimiter=delim))


# --------------------------------------------------------------------------- batches


def iter_batches(f: InputFile, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Read a table in batches of about ``batch_rows`` rows, with lower-case column names.

    CSV and ECSV columns come back as text (empty, ``null`` and ``NaN`` cells as nulls);
    callers cast them with :func:`latentcat.gaia.layouts.cast_column`, which names the column and
    row that fail.

    Parameters
    ----------
    f : InputFile
        The table (gzipped Parquet and FITS were decompressed by
        :func:`latentcat.gaia.inputs.find_inputs`).
    batch_rows : int
        Rows per batch (CSV/ECSV: the byte block is sized from it).
    columns : list of str, optional
        Only these columns (lower-case) are kept.

    Yields
    ------
    pyarrow.Table
    """
    try:
        if f.fmt == "parquet":
            yield from _parquet_batches(f, batch_rows, columns)
        elif f.fmt in ("csv", "ecsv"):
            yield from _csv_batches(f, batch_rows, columns)
        else:
            table = _astropy_table(f, columns)
            if table.num_rows == 0:
                return
            for start in range(0, table.num_rows, max(1, batch_rows)):
                yield table.slice(start, batch_rows)
    except InputError:
        raise
    except Exception as exc:
        raise input_error(f.name, f"cannot read {f.fmt} (truncated or corrupt?): {exc}") from None


def _text_stream(f: InputFile):
    """Open a text table as a binary stream, decompressing gzip on the fly."""
    return gzip.open(f.path, "rb") if f.gzipped else open(f.path, "rb")


def _text_header(f: InputFile) -> tuple[int, str]:
    """Count the leading ``#`` comment lines and find the delimiter (ECSV declares it)."""
    skip, delim = 0, ","
    with _text_stream(f) as fh:
        for raw in fh:
            line = raw.decode("utf-8", "replace")
            if not line.startswith("#"):
                break
            skip += 1
            m = re.match(r"#\s*delimiter:\s*'(.)'", line)
            if m:
                delim = m.group(1)
    if f.fmt == "ecsv" and skip and delim == ",":
        # ECSV's default delimiter is a space unless the header says otherwise
        with _text_stream(f) as fh:
            header = b"".join(fh.readline() for _ in range(skip)).decode("utf-8", "replace")
        if "delimiter:" not in header:
            delim = " "
    return skip, delim


def _lower(table: pa.Table) -> pa.Table:
    return table.rename_columns([c.lower() for c in table.column_names])


def _nested_fields(typ: pa.DataType) -> list[str] | None:
    """Per-epoch field names of a nested light-curve column type, or None for any other type.

    Two physical forms: ``list<struct<time, mag, ...>>`` and nested-pandas' ``struct<time: list,
    mag: list, ...>``.
    """
    if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_struct(typ.value_type):
        return [typ.value_type.field(i).name for i in range(typ.value_type.num_fields)]
    if pa.types.is_struct(typ) and typ.num_fields and all(
            pa.types.is_list(typ.field(i).type) or pa.types.is_large_list(typ.field(i).type)
            for i in range(typ.num_fields)):
        return [typ.field(i).name for i in range(typ.num_fields)]
    return None


def _parquet_plan(schema: pa.Schema, f: InputFile) -> list[tuple[str, tuple[str, str | None]]]:
    """The columns a Parquet file offers: ``(lower-case name, (top-level column, nested field or None))``.

    Nested fields take the place of their column; a field that repeats a top-level column name
    is left out (the top-level column wins), and :data:`HATS_COLUMNS` of a HATS leaf are dropped.
    """
    plan = [(n.lower(), (n, None)) for n in schema.names if _nested_fields(schema.field(n).type) is None]
    top, nested = {c for c, _ in plan}, {}
    for name in schema.names:
        for field in _nested_fields(schema.field(name).type) or []:
            key = field.lower()
            if key in nested:
                raise input_error(f.name, f"nested columns {nested[key]!r} and {name!r} both have a field {field!r}")
            if key not in top:
                nested[key] = name
                plan.append((key, (name, field)))
    if f.hats:
        plan = [p for p in plan if p[0] not in HATS_COLUMNS]
    return plan


def _parquet_batches(f: InputFile, batch_rows: int, columns: list[str] | None) -> Iterator[pa.Table]:
    """Read Parquet by record batches; nested columns come out as one list column per field.

    When the fields of the nested columns make the long (DataLink) layout, a batch holds one
    source row per :data:`NESTED_ROW_WEIGHT` of ``batch_rows``
    (:func:`latentcat.gaia.layouts.epoch_points` explodes them to one row per epoch).
    """
    pf = pq.ParquetFile(f.path, pre_buffer=False)  # pre-buffering keeps every batch's buffers alive
    plan = _parquet_plan(pf.schema_arrow, f)
    wanted = [(c, src) for c, src in plan if columns is None or c in columns]
    if all(field is None for _, (_, field) in plan):
        names = [n for _, (n, _) in wanted]
        for batch in pf.iter_batches(batch_size=max(1, batch_rows), columns=names):
            yield _lower(pa.Table.from_batches([batch]))
        return
    explode = "epoch_long" in detect_layout([c for c, _ in plan])
    fields = {(n, field) for _, (n, field) in wanted}
    paths = []  # Parquet leaf columns: a nested column's unused fields are not read
    for column in pf.schema:
        top, *rest = column.path.split(".")
        if (top, None) in fields or any((top, part) in fields for part in rest):
            paths.append(column.path)
    size = max(1, batch_rows // NESTED_ROW_WEIGHT) if explode else max(1, batch_rows)
    for batch in pf.iter_batches(batch_size=size, columns=paths):
        out = {}
        for c, (n, field) in wanted:
            col = batch.column(n)
            out[c] = col if field is None else _nested_field_lists(col, field)
        yield pa.table(out)


def _nested_field_lists(col: pa.Array, field: str) -> pa.Array:
    """One field of a nested column as a list column (a null row gives a null list)."""
    if pa.types.is_struct(col.type):  # nested-pandas: struct of lists
        return col.flatten()[col.type.get_field_index(field)]
    values = col.values.flatten()[col.type.value_type.get_field_index(field)]
    make = pa.LargeListArray if pa.types.is_large_list(col.type) else pa.ListArray
    return make.from_arrays(col.offsets, values, mask=col.is_null() if col.null_count else None)


def _csv_batches(f: InputFile, batch_rows: int, columns: list[str] | None) -> Iterator[pa.Table]:
    """Stream a CSV/ECSV file as all-text columns."""
    skip, delim = _text_header(f)
    with _text_stream(f) as fh:
        for _ in range(skip):
            fh.readline()
        header = _split_header(fh.readline().decode("utf-8", "replace").strip(), delim)
    names = [h.strip() for h in header]
    include = [n for n in names if columns is None or n.lower() in columns]
    block = int(min(max(batch_rows * 256, 1 << 20), 1 << 28))
    stream = pa.input_stream(str(f.path), compression="gzip" if f.gzipped else None)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(skip_rows=skip, block_size=block),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, include_columns=include,
            strings_can_be_null=True, null_values=["", "null", "NULL", "NaN", "nan", "--"],
            quoted_strings_can_be_null=True),
    )
    for batch in reader:
        if batch.num_rows:
            yield _lower(pa.Table.from_batches([batch]))


def _astropy_table(f: InputFile, columns: list[str] | None) -> pa.Table:
    """Read a VOTable or FITS table with astropy and convert it to Arrow."""
    import warnings

    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unit strings astropy does not know are not our concern
        fmt = "votable" if f.fmt == "votable" else "fits"
        t = Table.read(f.path, format=fmt)
    arrays, names = [], []
    for name in t.colnames:
        if columns is not None and name.lower() not in columns:
            continue
        arrays.append(_astropy_column(t[name]))
        names.append(name.lower())
    return pa.table(arrays, names=names)


def _astropy_column(col) -> pa.Array:
    """Convert an astropy (masked) column to Arrow: nulls for masked cells, lists for array cells."""
    mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)))
    data = np.asarray(col.data.data if hasattr(col.data, "data") and mask.any() else col)
    if data.dtype.kind == "O":  # variable-length arrays or strings, one Python object per cell
        cells = []
        for value, m in zip(col, mask if mask.ndim == 1 else mask.any(axis=tuple(range(1, mask.ndim)))):
            if m or value is None or value is np.ma.masked:
                cells.append(None)
            elif isinstance(value, (str, bytes)):
                cells.append(value.decode() if isinstance(value, bytes) else value)
            else:
                arr = np.ma.asarray(value)
                cells.append(None if arr.size == 0 else np.ma.filled(arr.astype(float), np.nan))
        if all(c is None or isinstance(c, str) for c in cells):
            return pa.array(cells, type=pa.string())
        return pa.array([None if c is None else c.tolist() for c in cells], type=pa.list_(pa.float64()))
    if data.dtype.kind in "SU":
        values = data.astype(str)
        return pa.array(values, mask=mask if mask.ndim == 1 else None, type=pa.string())
    if data.ndim > 1:  # fixed-size array cells
        n = int(np.prod(data.shape[1:]))
        flat = pa.array(data.reshape(len(data), n).ravel().astype(data.dtype.newbyteorder("=")))
        lists = pa.FixedSizeListArray.from_arrays(flat, n).cast(pa.list_(flat.type))
        if mask.ndim > 1 and mask.reshape(len(mask), -1).all(axis=1).any():
            row_null = pa.array(mask.reshape(len(mask), -1).all(axis=1))
            lists = pc.if_else(row_null, pa.nulls(len(lists), lists.type), lists)
        return lists
    data = data.astype(data.dtype.newbyteorder("="))
    return pa.array(data, mask=mask if mask.any() else None)
