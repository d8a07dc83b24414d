"""Gaia DR3 archive layouts -> latentcat's canonical Arrow tables.

A layout is what a table holds. It is recognised from the column names only
(:func:`detect_layout`), never from a file name or format. The functions here take Arrow
batches (as :mod:`latentcat.gaia.formats` reads them) and open no files; each batch becomes one
of a few canonical shapes:

* :func:`epoch_points` - one row per (source, band, transit) point with its rejection flags,
  from any of the three epoch-photometry layouts (DataLink long, epoch_photometry per transit,
  bulk arrays);
* :func:`xp_coefficients` - XP continuous mean spectra, one row per source;
* :func:`source_columns` / :func:`label_columns` - ``gaia_source`` columns and classes.

A nested light curve (one row per source, one list column per per-epoch field) with DataLink
names (``band``, ``time``, ``mag``, ...) is exploded by :func:`epoch_points` to one row per
epoch. :func:`cast_column` casts one column (CSV text included) to its canonical type and names
the file, column and row that fail; :func:`input_error` is the one-line error every reader of
``latentcat.gaia`` gives.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latentcat.errors import InputError
from latentcat.gaia.source_ids import MAX_SOURCE_ID

#: 2.5 / ln(10): converts a relative flux error into a magnitude error.
MAG_ERR_FACTOR = 2.5 / np.log(10.0)

#: Band codes used in the point tables (G, BP, RP).
BANDS = ("G", "BP", "RP")

#: Wide (epoch_photometry table) column names per band: time, mag, flux, flux error, variability flag.
WIDE_BANDS = {
    "G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error", "variability_flag_g_reject"),
    "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
    "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject"),
}

#: Gaia DR3 ``gaia_source`` columns kept in ``sources.parquet``, with their archive types.
GAIA_SOURCE_COLUMNS: dict[str, pa.DataType] = {
    **{c: pa.float64() for c in (
        "ra", "dec", "parallax", "pmra", "pmdec", "l", "b", "ecl_lon", "ecl_lat", "ref_epoch",
        "phot_g_mean_flux", "phot_bp_mean_flux", "phot_rp_mean_flux",
        "phot_g_mean_flux_error", "phot_bp_mean_flux_error", "phot_rp_mean_flux_error")},
    **{c: pa.float32() for c in (
        "ra_error", "dec_error", "parallax_error", "parallax_over_error", "pm", "pmra_error", "pmdec_error",
        "ruwe", "astrometric_excess_noise", "astrometric_excess_noise_sig", "astrometric_chi2_al",
        "nu_eff_used_in_astrometry", "pseudocolour", "ipd_frac_multi_peak", "ipd_gof_harmonic_amplitude",
        "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error",
        "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "phot_bp_rp_excess_factor",
        "bp_rp", "bp_g", "g_rp", "radial_velocity", "radial_velocity_error", "rv_template_teff",
        "vbroad", "vbroad_error", "grvs_mag", "grvs_mag_error",
        "classprob_dsc_combmod_quasar", "classprob_dsc_combmod_galaxy", "classprob_dsc_combmod_star",
        "teff_gspphot", "logg_gspphot", "mh_gspphot", "distance_gspphot", "azero_gspphot",
        "ag_gspphot", "ebpminrp_gspphot")},
    **{c: pa.int16() for c in (
        "astrometric_n_obs_al", "astrometric_n_good_obs_al", "astrometric_params_solved",
        "visibility_periods_used", "phot_g_n_obs", "phot_bp_n_obs", "phot_rp_n_obs",
        "rv_nb_transits", "ipd_multi_peak")},
    **{c: pa.bool_() for c in (
        "duplicated_source", "has_xp_continuous", "has_xp_sampled", "has_rvs", "has_epoch_photometry",
        "has_epoch_rv", "has_mcmc_gspphot", "has_mcmc_msc", "in_qso_candidates", "in_galaxy_candidates",
        "in_andromeda_survey")},
    **{c: pa.string() for c in ("designation", "phot_variable_flag", "libname_gspphot")},
    "random_index": pa.int64(),
}

#: Class columns accepted for ``labels.parquet`` (first match wins) and their score columns.
CLASS_COLUMNS = ("best_class_name", "class_name", "class", "label")
SCORE_COLUMNS = ("best_class_score", "class_score", "score")

#: XP continuous columns and their canonical types.
XP_COLUMNS: dict[str, pa.DataType] = {"source_id": pa.int64()}
for _band in ("bp", "rp"):
    XP_COLUMNS.update({
        f"{_band}_coefficients": pa.list_(pa.float64()),
        f"{_band}_coefficient_errors": pa.list_(pa.float32()),
        f"{_band}_coefficient_correlations": pa.list_(pa.float32()),
        f"{_band}_n_relevant_bases": pa.int16(),
        f"{_band}_standard_deviation": pa.float32(),
    })

#: The layouts :func:`detect_layout` knows, with what each one needs (for error messages).
LAYOUTS = {
    "epoch_long": "DataLink epoch photometry (source_id, band, time, mag, flux, flux_error)",
    "epoch_wide": "epoch_photometry per transit or bulk arrays (source_id, g_transit_time, g_transit_mag, "
                  "g_transit_flux, g_transit_flux_error)",
    "xp_continuous": "XP continuous spectra (source_id, bp_coefficients and/or rp_coefficients)",
    "sources": "gaia_source columns (source_id plus ra, dec, phot_g_mean_mag, bp_rp, parallax, ...)",
    "labels": "classes (source_id plus best_class_name or class)",
}


def input_error(name: str, what: str) -> InputError:
    """Build a one-line InputError naming the file."""
    what = " ".join(str(what).split())
    return InputError(f"{name}: {what}")


# --------------------------------------------------------------------------- layout


def detect_layout(columns: list[str]) -> set[str]:
    """Recognise what a table holds from its column names.

    Parameters
    ----------
    columns : list of str
        Lower-case column names.

    Returns
    -------
    set of str
        One of ``{"epoch_long"}``, ``{"epoch_wide"}`` (either with ``"sources"`` when the
        table also has gaia_source columns, as a light-curve catalogue with ra/dec does),
        ``{"xp_continuous"}``, ``{"xp_sampled"}``, ``{"datalink_other"}``, or a non-empty
        subset of ``{"sources", "labels"}`` (a table may feed both). Empty when nothing matches.
    """
    cols = set(columns)
    if {"wavelength", "flux", "flux_error"} <= cols:
        return {"xp_sampled"}
    if {"log_pos", "log_lik"} <= cols:  # MCMC_GSPPHOT / MCMC_MSC samples
        return {"datalink_other"}
    if "source_id" not in cols:
        return set()
    sources = {"sources"} if cols & GAIA_SOURCE_COLUMNS.keys() else set()
    if {"band", "time", "mag"} <= cols and ({"flux", "flux_error"} <= cols or "mag_err" in cols):
        return {"epoch_long"} | sources
    if set(WIDE_BANDS["G"][:4]) <= cols:
        return {"epoch_wide"} | sources
    if "bp_coefficients" in cols or "rp_coefficients" in cols:
        return {"xp_continuous"}
    found = set()
    if cols & GAIA_SOURCE_COLUMNS.keys():
        found.add("sources")
    if cols & set(CLASS_COLUMNS):
        found.add("labels")
    return found


def unknown_layout_message(columns: list[str]) -> str:
    """The one-line explanation for a table no layout matches."""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    expected = "; ".join(LAYOUTS.values())
    return f"unknown layout (columns: {shown}); expected one of: {expected}"


# --------------------------------------------------------------------------- casting


def parse_array_strings(arr: pa.Array, value_type: pa.DataType) -> pa.Array:
    """Parse text arrays such as ``"[1.0, 2.0, null]"`` or ``"(1.0, 2.0, NaN)"`` into a list column.

    Parameters
    ----------
    arr : pyarrow.Array
        String cells; a null or empty cell gives a null list.
    value_type : pyarrow.DataType
        Element type (``null``/``None`` elements become nulls).

    Returns
    -------
    pyarrow.ListArray
    """
    s = pc.utf8_trim_whitespace(arr)
    s = pc.utf8_trim_whitespace(pc.replace_substring_regex(s, r"^[\[\(]|[\]\)]$", ""))
    s = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
    parts = pc.split_pattern(s, ",")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    flat = pc.if_else(pc.is_in(flat, pa.array(["null", "NULL", "None", "--", ""])),
                      pa.scalar(None, pa.string()), flat)
    values = pc.cast(flat, value_type)
    offsets = pc.list_value_length(parts).fill_null(0).to_numpy(zero_copy_only=False).cumsum()
    offsets = pa.array(np.concatenate([[0], offsets]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=pc.is_null(parts))


def cast_column(table: pa.Table, column: str, to: pa.DataType, name: str, row0: int = 0) -> pa.Array:
    """Cast one column to its canonical type, or fail naming the file, column and first bad row.

    Parameters
    ----------
    table : pyarrow.Table
        The batch.
    column : str
        Column name.
    to : pyarrow.DataType
        Target type; list targets accept list columns or text arrays.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file (for messages).

    Returns
    -------
    pyarrow.Array
    """
    arr = table.column(column).combine_chunks()
    try:
        if pa.types.is_list(to) or pa.types.is_large_list(to):
            if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                return parse_array_strings(arr, to.value_type)
            if pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
                arr = arr.cast(pa.list_(arr.type.value_type))
            if not pa.types.is_list(arr.type):
                raise pa.ArrowInvalid(f"expected an array column, found {arr.type}")
            return arr.cast(to)
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            raise pa.ArrowInvalid(f"expected single values, found an array column ({arr.type})")
        if pa.types.is_string(arr.type) and not pa.types.is_string(to):
            arr = pc.utf8_trim_whitespace(arr)
        return arr.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        row = _first_bad_row(arr, to)
        where = f", {_at(table, row, row0)}" if row is not None else ""
        value = f" (value {arr[row].as_py()!r:.40})" if row is not None else ""
        raise input_error(name, f"column {column!r}{where}: cannot read as {to}{value}: "
                                f"{str(exc).splitlines()[0]}") from None


def _first_bad_row(arr: pa.Array, to: pa.DataType) -> int | None:
    """Index of the first cell that does not cast (error path only)."""
    if pa.types.is_list(to) or pa.types.is_list(arr.type):
        return None
    for i in range(len(arr)):
        try:
            arr.slice(i, 1).cast(to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i
    return None


def _at(table: pa.Table, i: int, row0: int) -> str:
    """Where row ``i`` of a batch is in its file: ``row N``, or, for a nested light curve exploded
    by :func:`_explode_nested`, ``row N (source_id X), epoch K``."""
    if "_epoch" not in table.column_names:
        return f"row {row0 + i + 1}"
    sid = table.column("source_id")[i].as_py() if "source_id" in table.column_names else None
    return f"row {table.column('_row')[i].as_py()} (source_id {sid}), epoch {table.column('_epoch')[i].as_py()}"


# --------------------------------------------------------------------------- canonical shapes

#: The point table every epoch layout is turned into.
POINT_SCHEMA = pa.schema([
    ("source_id", pa.int64()), ("band", pa.int8()), ("time", pa.float64()), ("mag", pa.float64()),
    ("mag_err", pa.float64()), ("rejected_by_photometry", pa.bool_()), ("rejected_by_variability", pa.bool_()),
    ("empty", pa.bool_()),
])


def _flag(table: pa.Table, column: str, name: str, row0: int, n: int) -> pa.Array:
    """A boolean flag column, False where absent or null."""
    if column not in table.column_names:
        return pa.array(np.zeros(n, bool))
    return pc.fill_null(cast_column(table, column, pa.bool_(), name, row0), False)


def _mag_err(mag_err: pa.Array | None, flux: pa.Array | None, flux_error: pa.Array | None) -> pa.Array:
    """Magnitude errors as given, or 1.0857 * flux_error / flux."""
    if mag_err is not None:
        return mag_err
    return pc.multiply(pc.divide(flux_error, flux), MAG_ERR_FACTOR)


def epoch_points(table: pa.Table, layout: str, name: str, row0: int = 0) -> pa.Table:
    """Turn a batch of any epoch-photometry layout into one row per (source, band, transit).

    Parameters
    ----------
    table : pyarrow.Table
        A batch from :func:`latentcat.gaia.formats.iter_batches`.
    layout : str
        ``epoch_long`` (DataLink) or ``epoch_wide`` (per-transit rows or bulk array rows,
        told apart by the column types).
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        :data:`POINT_SCHEMA`. ``empty`` marks wide-layout slots with no time, magnitude and flux
        (a band not observed in that transit); nothing is dropped here.
    """
    if layout == "epoch_long":
        if _is_list(table.column("time").type):  # a nested light curve: one row per source
            table = _explode_nested(table, name, row0)
        return _long_points(table, name, row0)
    if layout == "epoch_wide":
        if is_array_column(table.column("g_transit_time")):
            table = _explode_bulk(table, name, row0)  # rows are now transits; messages name row and epoch
        return _wide_points(table, name, row0)
    raise ValueError(f"not an epoch layout: {layout}")


def is_array_column(col: pa.ChunkedArray) -> bool:
    """Whether a column holds arrays (list type or text like ``[1.0, ...]``).

    Parameters
    ----------
    col : pyarrow.ChunkedArray
        A column of a batch.

    Returns
    -------
    bool
    """
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        return True
    if pa.types.is_string(col.type):
        first = pc.drop_null(col)
        return len(first) > 0 and str(first[0].as_py()).lstrip()[:1] in ("[", "(")
    return False


def _long_points(table: pa.Table, name: str, row0: int) -> pa.Table:
    n = table.num_rows
    band_text = pc.utf8_upper(pc.utf8_trim_whitespace(cast_column(table, "band", pa.string(), name, row0)))
    band = pc.index_in(band_text, pa.array(BANDS))
    bad = pc.and_(pc.is_null(band), pc.is_valid(band_text))
    if pc.any(bad).as_py() or band.null_count > (band_text.null_count):
        i = int(np.flatnonzero(pc.fill_null(bad, True).to_numpy(zero_copy_only=False))[0])
        raise input_error(name, f"column 'band', {_at(table, i, row0)}: unknown band {band_text[i].as_py()!r} "
                                f"(expected G, BP or RP)")
    cols = set(table.column_names)
    mag_err = cast_column(table, "mag_err", pa.float64(), name, row0) if "mag_err" in cols else None
    flux = cast_column(table, "flux", pa.float64(), name, row0) if "flux" in cols else None
    flux_error = cast_column(table, "flux_error", pa.float64(), name, row0) if "flux_error" in cols else None
    return pa.table({
        "source_id": _source_ids(table, name, row0),
        "band": band.cast(pa.int8()),
        "time": cast_column(table, "time", pa.float64(), name, row0),
        "mag": cast_column(table, "mag", pa.float64(), name, row0),
        "mag_err": _mag_err(mag_err, flux, flux_error),
        "rejected_by_photometry": _flag(table, "rejected_by_photometry", name, row0, n),
        "rejected_by_variability": _flag(table, "rejected_by_variability", name, row0, n),
        "empty": pa.array(np.zeros(n, bool)),
    }, schema=POINT_SCHEMA)


def _source_ids(table: pa.Table, name: str, row0: int) -> pa.Array:
    """The source_id column as int64, refusing nulls and values no Gaia DR3 source_id has."""
    ids = cast_column(table, "source_id", pa.int64(), name, row0)
    if ids.null_count:
        i = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
        raise input_error(name, f"column 'source_id', {_at(table, i, row0)}: empty source_id")
    values = ids.to_numpy()
    bad = np.flatnonzero((values <= 0) | (values >= MAX_SOURCE_ID))
    if len(bad):
        raise input_error(name, f"column 'source_id', {_at(table, int(bad[0]), row0)}: {values[bad[0]]} is not a "
                                f"Gaia DR3 source_id (must be above 0 and below 12 * 4**12 * 2**35)")
    return ids


def _explode_bulk(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Bulk rows (one per source, array columns) -> one row per transit."""
    ids = _source_ids(table, name, row0)
    lists = {}
    for band, cols in WIDE_BANDS.items():
        for col, typ in zip(cols, (pa.float64(),) * 4 + (pa.bool_(),)):
            if col in table.column_names:
                lists[col] = cast_column(table, col, pa.list_(typ), name, row0)
    if "rejected_by_photometry" in table.column_names:
        lists["rejected_by_photometry"] = cast_column(table, "rejected_by_photometry", pa.list_(pa.bool_()), name, row0)
    out = _explode_lists(ids, lists, "g_transit_time", name, row0)
    return out.append_column("source_id", pc.take(ids, out.column("_parent")))


def _explode_nested(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Rows of a nested long-layout light curve (one per source, per-epoch list columns) -> one row
    per epoch, the other columns repeated, plus the ``_row`` and ``_epoch`` of :func:`_explode_lists`."""
    lists = [c for c in table.column_names if _is_list(table.column(c).type)]
    ids = table.column("source_id") if "source_id" not in lists else None
    exploded = _explode_lists(ids, {c: table.column(c) for c in lists}, "time", name, row0)
    for c in table.column_names:
        if c not in lists:
            exploded = exploded.append_column(c, pc.take(table.column(c), exploded.column("_parent")))
    return exploded.select([*table.column_names, "_row", "_epoch"])


def _is_list(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ)


def _explode_lists(ids: pa.Array | None, lists: dict[str, pa.Array], ref: str, name: str, row0: int) -> pa.Table:
    """List columns of one row per source -> one row per element.

    Every list of a row must have as many values as ``lists[ref]``; a wholly null list (e.g. no
    BP for this source) stands for a row of nulls, and a null ``ref`` list for no elements.
    ``ids`` (one per row, or None) and ``row0`` (the file row of the first row) only name the row
    in messages. Three columns are added: ``_parent`` (the element's row in ``lists``), and, for
    messages (:func:`_at`), ``_row`` (that row's place in the file, 1-based) and ``_epoch`` (the
    element's place in its row's lists, 1-based).
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    lists = {c: a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for c, a in lists.items()}
    ref_len = pc.list_value_length(lists[ref])
    n = pc.fill_null(ref_len, 0).to_numpy(zero_copy_only=False)
    out = {}
    for col, arr in lists.items():
        length = pc.list_value_length(arr)
        wrong = pc.and_(pc.is_valid(length), pc.not_equal(length, pc.fill_null(ref_len, 0)))
        if pc.any(wrong).as_py():
            i = int(np.flatnonzero(pc.fill_null(wrong, False).to_numpy(zero_copy_only=False))[0])
            source = f" (source_id {ids[i].as_py()})" if ids is not None else ""
            raise input_error(name, f"row {row0 + i + 1}{source}: column {col!r} has {length[i].as_py()} values "
                                    f"but {ref} has {ref_len[i].as_py()}")
        filled = pc.if_else(pc.is_null(arr), _null_lists(n, arr.type), arr)
        out[col] = pc.list_flatten(filled)
    parents = pc.list_parent_indices(pc.if_else(pc.is_null(lists[ref]),
                                                _null_lists(np.zeros(len(lists[ref]), int), lists[ref].type),
                                                lists[ref]))
    parents = parents.to_numpy().astype(np.int64)
    first = np.flatnonzero(np.diff(parents, prepend=-1))  # where each row's elements start
    out["_parent"] = parents
    out["_row"] = parents + row0 + 1
    out["_epoch"] = np.arange(len(parents)) - np.repeat(first, np.diff(np.append(first, len(parents)))) + 1
    return pa.table(out)


def _null_lists(lengths: np.ndarray, typ: pa.DataType) -> pa.Array:
    """Lists of nulls with the given lengths, of list type ``typ`` (list or large_list)."""
    large = pa.types.is_large_list(typ)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if large else np.int32)
    make = pa.LargeListArray if large else pa.ListArray
    return make.from_arrays(pa.array(offsets), pa.nulls(int(offsets[-1]), typ.value_type))


def _wide_points(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Per-transit rows (scalar columns) -> points, one block per band present."""
    n = table.num_rows
    ids = _source_ids(table, name, row0)
    rej_phot = _flag(table, "rejected_by_photometry", name, row0, n)
    blocks = []
    for code, (band, (t, m, fx, fe, var)) in enumerate(WIDE_BANDS.items()):
        if not {t, m, fx, fe} <= set(table.column_names):
            continue
        time = cast_column(table, t, pa.float64(), name, row0)
        mag = cast_column(table, m, pa.float64(), name, row0)
        flux = cast_column(table, fx, pa.float64(), name, row0)
        err = cast_column(table, fe, pa.float64(), name, row0)
        empty = pc.and_(pc.and_(_missing(time), _missing(mag)), _missing(flux))
        blocks.append(pa.table({
            "source_id": ids, "band": pa.array(np.full(n, code, np.int8)), "time": time, "mag": mag,
            "mag_err": _mag_err(None, flux, err), "rejected_by_photometry": rej_phot,
            "rejected_by_variability": _flag(table, var, name, row0, n), "empty": empty,
        }, schema=POINT_SCHEMA))
    return pa.concat_tables(blocks)


def _missing(arr: pa.Array) -> pa.Array:
    """True where a float value is null or NaN."""
    return pc.fill_null(pc.is_nan(arr), True)


def xp_coefficients(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """XP continuous mean spectra in their canonical Arrow form.

    Parameters
    ----------
    table : pyarrow.Table
        A batch of an XP_CONTINUOUS / XpContinuousMeanSpectrum table.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        Exactly the columns of :data:`XP_COLUMNS`; a band missing from the table or from a
        source gives null lists (and null counts) for it.
    """
    out = {"source_id": _source_ids(table, name, row0)}
    for col, typ in list(XP_COLUMNS.items())[1:]:
        if col in table.column_names:
            arr = cast_column(table, col, typ, name, row0)
            if pa.types.is_list(typ):  # an empty array is a missing band
                arr = pc.if_else(pc.equal(pc.list_value_length(arr), 0), pa.nulls(len(arr), typ), arr)
            out[col] = arr
        else:
            out[col] = pa.nulls(table.num_rows, typ)
    return pa.table(out, schema=pa.schema(list(XP_COLUMNS.items())))


def source_columns(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """The ``gaia_source`` columns of a batch, cast to their archive types.

    Parameters
    ----------
    table : pyarrow.Table
        A batch with source_id and some :data:`GAIA_SOURCE_COLUMNS`.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        source_id then the known columns, in the archive's order of this table.
    """
    out = {"source_id": _source_ids(table, name, row0)}
    for col in table.column_names:
        if col in GAIA_SOURCE_COLUMNS:
            out[col] = cast_column(table, col, GAIA_SOURCE_COLUMNS[col], name, row0)
    return pa.table(out)


def label_columns(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """Classes of a batch as ``source_id, best_class_name, best_class_score``.

    Parameters
    ----------
    table : pyarrow.Table
        A batch with source_id and a class column (:data:`CLASS_COLUMNS`).
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
    """
    cls = next(c for c in CLASS_COLUMNS if c in table.column_names)
    score = next((c for c in SCORE_COLUMNS if c in table.column_names), None)
    names = cast_column(table, cls, pa.string(), name, row0)
    if names.null_count:
        i = int(np.flatnonzero(pc.is_null(names).to_numpy(zero_copy_only=False))[0])
        raise input_error(name, f"column {cls!r}, row {row0 + i + 1}: empty class name")
    return pa.table({
        "source_id": _source_ids(table, name, row0),
        "best_class_name": pc.utf8_trim_whitespace(names),
        "best_class_score": (cast_column(table, score, pa.float32(), name, row0) if score
                             else pa.nulls(table.num_rows, pa.float32())),
    })
