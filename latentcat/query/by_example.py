"""Query by example: which catalogue sources look like *my* light curve or spectrum?

    >>> import latentcat
    >>> from latentcat.query.by_example import read_query_file, similar_to_data
    >>> cat = latentcat.open("cat/")
    >>> data = read_query_file("obs.csv", time_format="mjd")      # time,mag,mag_err (G)
    >>> neighbours, info = similar_to_data(cat, light_curve=data.light_curve, xp=data.xp)
    >>> info["period"], info["blocks"]

The given data go through the catalogue's own pipeline: the feature code of
`latentcat.features.extract` (the same cleaning, dm-dt map, period search and fold, with the
catalogue's ``min_epochs``), then the catalogue's trained encoders in ``models/``, then the
FAISS index of the blocks the query has. Nothing is retrained or refitted.

Times
-----
The catalogue's time axis is Gaia's: TCB barycentric JD - 2455197.5 (``time_format="gaia"``).
``"bjd"`` and ``"jd"`` are full Julian dates and ``"mjd"`` is JD - 2400000.5; all three are
converted to Gaia time with `astropy.time` **by offset only**: the values are taken on the TCB
scale as given and **no barycentric correction is applied**. Give barycentric times (BJD): a
geocentric or topocentric JD/MJD is off by up to ~8.3 minutes, which blurs periods shorter
than about an hour. TDB instead of TCB differs by ~17 s at DR3 epochs, negligible here.

Magnitudes are Gaia G only: BP and RP epochs of a DataLink file are ignored, and the
returned notes say so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from latentcat.blocks import block_set_name, BLOCKS, parse_block_set, SPACE
from latentcat.encode import (GAIA_TIME_ZERO_JD, TIME_FORMATS, XP_BANDS, catalogue_settings, checked_light_curve,  # noqa: F401
                              encode_sources, light_curve_table, to_gaia_time, xp_table)
from latentcat.errors import InputError, LatentcatError
from latentcat.limits import MAX_EPOCHS, MAX_QUERY_FILE_BYTES, checked_input_file

PLAIN_COLUMNS = ("time", "mag", "mag_err")
"""Columns of a plain light-curve CSV (G band)."""

QUERY_ID = -1
"""The source_id the query carries through the pipeline (no Gaia source has it)."""


@dataclass
class QueryData:
    """Data read from a query file, ready for `similar_to_data`.

    Attributes
    ----------
    light_curve : (time, mag, mag_err) float64 arrays or None
        G light curve, times on the Gaia axis (BJD - 2455197.5 d).
    xp : (bp_flux, bp_flux_error, rp_flux, rp_flux_error) float32 arrays (55) or None
        Sampled XP spectrum on the catalogue's grid; a missing band is None.
    source_id : int or None
        The Gaia source_id of a DataLink file.
    notes : list of str
        What was read and what was left out (e.g. BP/RP epochs ignored).
    """

    light_curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    xp: tuple | None = None
    source_id: int | None = None
    notes: list[str] = field(default_factory=list)


def _checked_xp(xp) -> list[np.ndarray | None]:
    """BP flux, BP error, RP flux, RP error as float32 (55) arrays, or None for a missing band."""
    from latentcat.features.xp import N_SAMPLES

    if len(xp) != 4:
        raise LatentcatError("xp: give (bp_flux, bp_flux_error, rp_flux, rp_flux_error)")
    out = []
    for name, arr in zip(XP_BANDS, xp):
        if arr is None:
            out.append(None)
            continue
        arr = np.asarray(arr, dtype=np.float32).ravel()
        if arr.size != N_SAMPLES:
            raise LatentcatError(f"xp: {name} has {arr.size} values, the catalogue's XP grid has {N_SAMPLES}")
        if not np.all(np.isfinite(arr)):
            raise LatentcatError(f"xp: {name} has a non-finite value at sample {np.flatnonzero(~np.isfinite(arr))[0]}")
        out.append(arr)
    for band, (flux, err) in (("bp", out[:2]), ("rp", out[2:])):
        if (flux is None) != (err is None):
            raise LatentcatError(f"xp: give both {band}_flux and {band}_flux_error, or neither")
    return out


def similar_to_data(cat, light_curve=None, xp=None, k: int = 10, modality: str = "space",
                    where: str | None = None, time_format: str = "gaia",
                    bp_rp: float | None = None, with_meta=True) -> tuple[pa.Table, dict]:
    """The catalogue sources nearest to a light curve and/or XP spectrum that is not in it.

    Parameters
    ----------
    cat : latentcat.query.catalog.Catalog
        The opened catalogue.
    light_curve : (time, mag, mag_err) array_like, optional
        G light curve: times in ``time_format``, Gaia G magnitudes and their errors.
    xp : (bp_flux, bp_flux_error, rp_flux, rp_flux_error) array_like, optional
        XP spectrum sampled on the catalogue's grid (`latentcat.gaia.xp.XP_SAMPLING`, 55
        values per band, e-/s); a band may be None (then there is no XP code).
    k : int
        Number of neighbours.
    modality : {"space", "all", "xp", "dmdt", "fold"} or a block set such as "dmdt+fold"
        ``"space"`` (default) compares the search-space parts the query has, made by the
        catalogue's stored rule (the colour part only when ``bp_rp`` is given); ``"all"``
        compares every latent block the query has.
    where : str, optional
        SQL filter on the catalogue's metadata, as in `Catalog.similar`.
    time_format : {"gaia", "bjd", "jd", "mjd"}
        See `to_gaia_time`.
    bp_rp : float, optional
        The source's Gaia BP - RP colour (mag), the search space's colour part.
    with_meta : bool or list of str
        The source_meta columns joined to the neighbours, as in `Catalog.similar`.

    Returns
    -------
    neighbours : pyarrow.Table
        As `Catalog.similar` returns (rank, source_id, distance, blocks, metadata).
    query_info : dict
        ``blocks`` compared, ``n_obs``, ``n_clipped``, ``period`` (d), ``period_fap``,
        ``amplitude`` (G, 95th - 5th percentile), ``time_span``, ``latents`` (block ->
        float32 array or None), ``recon_loss`` (block -> float or None), ``lc_reason``,
        ``xp_reason``, ``time_format``, and ``duplicate_epochs`` / ``conflicting_epochs``
        (epochs dropped for a repeated time: `latentcat.encode.checked_light_curve`).

    Raises
    ------
    LatentcatError
        No data, malformed arrays, values outside the bounds of `latentcat.encode`, too few
        points, a requested block the query cannot have, or a catalogue without models or
        without the index needed.
    """
    if light_curve is None and xp is None:
        raise LatentcatError("give a light curve, an XP spectrum or both")
    if bp_rp is not None and not np.isfinite(float(bp_rp)):
        raise LatentcatError(f"bp_rp must be a finite colour (mag), got {bp_rp!r}")
    space = modality == SPACE
    try:
        wanted = BLOCKS if space else parse_block_set(modality)
    except ValueError as err:
        raise LatentcatError(f"{err}, or 'space', the default") from None
    min_epochs = catalogue_settings(cat.path, cat.info()["build_info"])["min_epochs"]
    lc, dropped = None, {"duplicate_epochs": 0, "conflicting_epochs": 0}
    if light_curve is not None:
        if len(light_curve) != 3:
            raise LatentcatError("light curve: give (time, mag, mag_err)")
        time, mag, err = light_curve
        lc, dropped = checked_light_curve(time, mag, err, time_format=time_format)
        if lc[0].size < min_epochs:
            raise LatentcatError(f"light curve: {lc[0].size} G points; the catalogue's features need at least {min_epochs}")
    xp_arrays = _checked_xp(xp) if xp is not None else None

    features, embeddings = encode_sources(
        cat.path, None if lc is None else light_curve_table([QUERY_ID], [lc]),
        None if xp_arrays is None else xp_table([QUERY_ID], [xp_arrays]), min_epochs)
    feats, emb = features.to_pylist()[0], embeddings.to_pylist()[0]
    for key, value in emb.items():
        if key.startswith("z_") and value is not None:
            emb[key] = np.asarray(value, np.float32)
    if lc is not None and feats["lc_reason"] is not None:
        raise LatentcatError(
            f"light curve: {feats['n_obs']} of {lc[0].size} G points left after cleaning "
            f"({feats['lc_reason']}); the catalogue's features need at least {min_epochs}"
        )
    if xp_arrays is not None and feats["xp_reason"] is not None:
        raise LatentcatError(f"xp: no XP code for this spectrum ({feats['xp_reason']}): both BP and RP are needed")

    have = tuple(b for b in BLOCKS if emb[f"z_{b}"] is not None)
    blocks = have if modality in ("all", SPACE) else wanted
    missing = [b for b in blocks if b not in have]
    if missing or not blocks:
        what = "+".join(missing) or "latent"
        hint = "an XP spectrum gives the xp block" if "xp" in missing else "a light curve gives dmdt and fold"
        raise LatentcatError(f"the query has no {what} code ({hint}; is the model in models/?)")
    if space:
        from latentcat.analysis.space import space_parts

        latents = {b: (emb[f"z_{b}"] if emb[f"z_{b}"] is not None else np.full(5, np.nan))[None, :]
                   for b in BLOCKS}
        parts = cat.space_rule().transform(space_parts(latents, None if bp_rp is None else np.array([bp_rp])))
        blocks = blocks + (("colour",) if bp_rp is not None else ())
        vector = np.concatenate([parts[b][0] for b in blocks])
        searched = f"{SPACE}:{block_set_name(blocks)}"
    else:
        vector = np.concatenate([emb[f"z_{b}"] for b in blocks])
        searched = block_set_name(blocks)
    neighbours = cat.similar(vector, k=k, modality=searched, where=where, with_meta=with_meta)

    info = {
        "blocks": searched,
        "n_obs": int(feats["n_obs"]),
        "n_clipped": int(feats["n_clipped"]),
        "period": feats["period"],
        "period_fap": feats["period_fap"],
        "period_power": feats["period_power"],
        "period_reliable": feats["period_reliable"],
        "amplitude": feats["g_amplitude"],
        "time_span": feats["time_span"],
        "latents": {b: emb[f"z_{b}"] for b in BLOCKS},
        "recon_loss": {b: emb[f"recon_loss_{b}"] for b in BLOCKS},
        "lc_reason": feats["lc_reason"],
        "xp_reason": feats["xp_reason"],
        "time_format": time_format,
        **dropped,
    }
    return neighbours, info


# ----------------------------------------------------------------------------- files


def _plain_csv(f, name: str, time_format: str) -> QueryData:
    """Read a plain time,mag,mag_err CSV (G band) into a QueryData; more than `MAX_EPOCHS` rows
    are refused as soon as they are read."""
    from latentcat.gaia.formats import iter_batches
    from latentcat.gaia.layouts import cast_column

    parts = []
    row0 = 0
    for batch in iter_batches(f, 10_000):
        parts.append([cast_column(batch, c, pa.float64(), name, row0) for c in PLAIN_COLUMNS])
        row0 += batch.num_rows
        if row0 > MAX_EPOCHS:
            raise InputError(f"{name}: more than {MAX_EPOCHS} rows; at most {MAX_EPOCHS} epochs are accepted "
                             "for one light curve")
    if not parts:
        raise InputError(f"{name}: no data rows")
    cols = [np.concatenate([p[i].to_numpy(zero_copy_only=False) for p in parts]) for i in range(3)]
    for column, values in zip(PLAIN_COLUMNS, cols):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputError(f"{name}: row {bad[0] + 1}, column {column!r}: empty or non-finite value")
    bad = np.flatnonzero(cols[2] <= 0)
    if bad.size:
        raise InputError(f"{name}: row {bad[0] + 1}, column 'mag_err': {cols[2][bad[0]]} is not positive")
    checked_light_curve(cols[0], cols[1], cols[2], name, time_format)  # bounds, before any work
    time = to_gaia_time(cols[0], time_format)
    note = f"{name}: {time.size} G points read (time format {time_format})"
    return QueryData(light_curve=(time, cols[1], cols[2]), notes=[note])


def _read_products(files, keep_variability_rejected: bool) -> tuple[dict, dict, dict, list[str]]:
    """The G epochs and XP spectra of DataLink files, read in memory by the ingest readers and
    epoch rules (`latentcat.gaia.ingest.clean_points`): (source_id -> [time, mag, err] lists of
    kept G epochs, source_id -> {band: epochs} of BP/RP, source_id -> sampled XP tuple, notes)."""
    from latentcat.gaia.formats import iter_batches, read_columns
    from latentcat.gaia.ingest import clean_points
    from latentcat.gaia.layouts import detect_layout, epoch_points, unknown_layout_message, xp_coefficients
    from latentcat.gaia.xp import convert_xp

    g_points: dict[int, list] = {}
    other_bands: dict[int, dict] = {}
    spectra: dict[int, tuple] = {}
    notes: list[str] = []
    for f in files:
        columns = read_columns(f)
        layout = detect_layout(columns)
        if not layout:
            raise InputError(f"{f.name}: {unknown_layout_message(columns)}")
        kind = next((k for k in ("epoch_long", "epoch_wide") if k in layout), None)
        if kind is None and "xp_continuous" not in layout:
            notes.append(f"{f.name}: {', '.join(sorted(layout))} not used for a query")
            continue
        row0, dropped = 0, {}
        for batch in iter_batches(f, 10_000):
            if kind is not None:
                kept, _, counts = clean_points(epoch_points(batch, kind, f.name, row0), keep_variability_rejected)
                for reason, n in counts.items():
                    if n and reason != "empty_slot":
                        dropped[reason] = dropped.get(reason, 0) + n
                sid = kept.column("source_id").to_numpy()
                order = np.argsort(sid, kind="stable")  # each source's epochs together, in file order
                sid, band = sid[order], kept.column("band").to_numpy()[order]
                values = [kept.column(c).to_numpy()[order] for c in ("time", "mag", "mag_err")]
                starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if sid.size else np.zeros(0, int)
                for a, b in zip(starts, np.r_[starts[1:], sid.size]):
                    source, g = int(sid[a]), band[a:b] == 0
                    lists = g_points.setdefault(source, [[], [], []])
                    for target, v in zip(lists, values):
                        target.extend(v[a:b][g].tolist())
                    bands = other_bands.setdefault(source, {})
                    for code, label in ((1, "BP"), (2, "RP")):
                        bands[label] = bands.get(label, 0) + int((band[a:b] == code).sum())
            if "xp_continuous" in layout:
                for row in convert_xp(xp_coefficients(batch, f.name, row0)).to_pylist():
                    spectra[int(row["source_id"])] = tuple(
                        None if row[c] is None else np.asarray(row[c], np.float32) for c in XP_BANDS)
            row0 += batch.num_rows
        if dropped:
            said = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(dropped.items()))
            notes.append(f"{f.name}: epochs dropped by the ingest rules: {said}")
    return g_points, other_bands, spectra, notes


def read_query_file(path: str | Path, time_format: str = "gaia", source_id: int | None = None,
                    keep_variability_rejected: bool = False) -> QueryData:
    """Read a query light curve and/or XP spectrum from a file, in memory.

    Accepted files (regular files of at most `latentcat.limits.MAX_QUERY_FILE_BYTES`, at most
    `latentcat.limits.MAX_EPOCHS` G epochs for the chosen source):

    - a plain CSV with a header row and exactly the columns ``time,mag,mag_err`` (Gaia G
      magnitudes; times in ``time_format``);
    - Gaia DataLink products in any format the ingest readers support (VOTable, ECSV,
      CSV, FITS, a zip bundle): EPOCH_PHOTOMETRY (long layout; the G band is used, BP and
      RP are ignored and the notes say so; the ingest rules drop flagged epochs, counted in
      the notes) and/or XP_CONTINUOUS (sampled on the catalogue's grid with `latentcat.gaia.xp`).
      DataLink times are already Gaia times, so ``time_format`` must be ``"gaia"``.

    Parameters
    ----------
    path : str or Path
        The file.
    time_format : {"gaia", "bjd", "jd", "mjd"}
        Time system of a plain CSV (see `to_gaia_time`).
    source_id : int, optional
        Which source of a DataLink file holding several.
    keep_variability_rejected : bool
        Keep epochs flagged ``rejected_by_variability`` (use the catalogue's setting).

    Returns
    -------
    QueryData

    Raises
    ------
    InputError
        Not a regular file, too large, unreadable, a plain CSV with other columns, bad or
        out-of-bounds values (naming the row and column), too many epochs, several sources
        and no ``source_id``, or no usable data.
    """
    from latentcat.gaia.formats import read_columns
    from latentcat.gaia.inputs import find_inputs

    name = str(path)
    path = checked_input_file(path, MAX_QUERY_FILE_BYTES, "a query file")
    if time_format not in TIME_FORMATS:
        raise InputError(f"unknown time format {time_format!r}: use one of {', '.join(TIME_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="latentcat-query-") as tmp:  # zip members are extracted here
        files, _ = find_inputs([path], Path(tmp))
        if len(files) == 1 and files[0].fmt == "csv" and "source_id" not in read_columns(files[0]):
            columns = read_columns(files[0])
            if sorted(columns) != sorted(PLAIN_COLUMNS):
                raise InputError(
                    f"{name}: a plain light-curve CSV needs exactly the columns time,mag,mag_err "
                    f"(Gaia G magnitudes), got {','.join(columns)}"
                )
            return _plain_csv(files[0], name, time_format)
        if time_format != "gaia":
            raise InputError(f"{name}: Gaia DataLink times are BJD - 2455197.5 already; use time format 'gaia'")
        g_points, other_bands, spectra, notes = _read_products(files, keep_variability_rejected)
    ids = sorted(set(g_points) | set(spectra))
    if not ids:
        raise InputError(f"{name}: no light curve or XP spectrum found")
    if source_id is None:
        if len(ids) > 1:
            shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise InputError(f"{name}: holds {len(ids)} sources ({shown}); choose one with source_id")
        source_id = ids[0]
    elif int(source_id) not in ids:
        raise InputError(f"{name}: source_id {source_id} is not in the file")
    source_id = int(source_id)

    data = QueryData(source_id=source_id, notes=notes)
    if g_points.get(source_id, [[]])[0]:
        t, m, e = (np.asarray(v, np.float64) for v in g_points[source_id])
        if t.size > MAX_EPOCHS:
            raise InputError(f"{name}: source_id {source_id} has {t.size} G epochs; at most {MAX_EPOCHS} are accepted "
                             "for one light curve")
        checked_light_curve(t, m, e, f"{name}: source_id {source_id}")  # bounds, before any work
        data.light_curve = (t, m, e)
        data.notes.append(f"{name}: source_id {source_id}: {t.size} G epochs used")
        ignored = [f"{band} ({n} epochs)" for band, n in other_bands.get(source_id, {}).items() if n]
        if ignored:
            data.notes.append(f"{name}: bands {', '.join(ignored)} ignored: latentcat compares G light curves only")
    if source_id in spectra:
        data.xp = spectra[source_id]
        data.notes.append(f"{name}: source_id {source_id}: XP continuous spectrum sampled on the catalogue grid")
    if data.light_curve is None and data.xp is None:
        raise InputError(f"{name}: source_id {source_id} has no G epochs and no XP spectrum")
    return data


def similar_to_file(cat, path: str | Path, k: int = 10, modality: str = "space", where: str | None = None,
                    time_format: str = "gaia", source_id: int | None = None,
                    bp_rp: float | None = None, with_meta=True) -> tuple[pa.Table, dict]:
    """`read_query_file` then `similar_to_data`: the neighbours of the data in a file.

    Returns
    -------
    neighbours : pyarrow.Table
    query_info : dict
        As `similar_to_data`, plus ``source_id`` (DataLink files), ``notes`` (what was read,
        dropped and ignored) and ``light_curve`` (the (time, mag, err) read, Gaia time, or None).
    """
    settings = catalogue_settings(cat.path, cat.info()["build_info"])
    data = read_query_file(path, time_format, source_id, settings["keep_variability_rejected"])
    neighbours, info = similar_to_data(cat, data.light_curve, data.xp, k=k, modality=modality, where=where,
                                       bp_rp=bp_rp, with_meta=with_meta)
    notes = data.notes + ([f"{info['duplicate_epochs']} epochs at a repeated time dropped "
                           f"({info['conflicting_epochs']} with another magnitude): the first listed is kept"]
                          if info["duplicate_epochs"] else [])
    return neighbours, {**info, "time_format": time_format, "source_id": data.source_id, "notes": notes,
                        "light_curve": data.light_curve}
