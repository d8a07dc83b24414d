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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentcat.blocks import block_set_name, BLOCKS, parse_block_set, SPACE
from latentcat.errors import InputError, LatentcatError
from latentcat.layout import MODELS_DIR
from latentcat.features import MIN_EPOCHS

TIME_FORMATS = ("gaia", "bjd", "jd", "mjd")
"""Accepted ``time_format`` values."""

GAIA_TIME_ZERO_JD = 2455197.5
"""JD (TCB) of Gaia time 0: Gaia DR3 epoch times are BJD(TCB) - 2455197.5 d."""

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


def to_gaia_time(time, time_format: str = "gaia") -> np.ndarray:
    """Convert times to Gaia's axis, BJD(TCB) - 2455197.5 d.

    Parameters
    ----------
    time : array_like
        Times in ``time_format``.
    time_format : {"gaia", "bjd", "jd", "mjd"}
        ``"gaia"``: already BJD - 2455197.5; ``"bjd"``/``"jd"``: Julian dates; ``"mjd"``:
        JD - 2400000.5. Converted by offset only, on the TCB scale, with no barycentric
        correction (see the module docstring).

    Returns
    -------
    float64 array
    """
    t = np.asarray(time, dtype=np.float64)
    if time_format not in TIME_FORMATS:
        raise LatentcatError(f"unknown time format {time_format!r}: use one of {', '.join(TIME_FORMATS)}")
    if time_format == "gaia":
        return t
    from astropy.time import Time

    fmt = "mjd" if time_format == "mjd" else "jd"
    zero = Time(GAIA_TIME_ZERO_JD, format="jd", scale="tcb")
    return np.asarray((Time(t, format=fmt, scale="tcb") - zero).jd, dtype=np.float64)


def _checked_light_curve(light_curve, min_epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (time, mag, err) arrays as float64, sorted by time; bad values are one clear error."""
    try:
        time, mag, err = (np.asarray(a, dtype=np.float64) for a in light_curve)
    except (TypeError, ValueError) as exc:
        raise LatentcatError(f"light curve: give (time, mag, mag_err) arrays of numbers ({exc})") from None
    if not (time.ndim == mag.ndim == err.ndim == 1) or not (time.size == mag.size == err.size):
        raise LatentcatError(
            f"light curve: time, mag and mag_err must be 1-D of one length, got {time.shape}, {mag.shape}, {err.shape}"
        )
    for name, arr in (("time", time), ("mag", mag), ("mag_err", err)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise LatentcatError(f"light curve: point {bad[0]} has a non-finite {name} ({arr[bad[0]]})")
    bad = np.flatnonzero(err <= 0)
    if bad.size:
        raise LatentcatError(f"light curve: point {bad[0]} has mag_err {err[bad[0]]}, which must be positive")
    if time.size < min_epochs:
        raise LatentcatError(
            f"light curve: {time.size} G points; the catalogue's features need at least {min_epochs}"
        )
    order = np.argsort(time, kind="stable")
    return time[order], mag[order], err[order]


def _checked_xp(xp) -> list[np.ndarray | None]:
    """BP flux, BP error, RP flux, RP error as float32 (55) arrays, or None for a missing band."""
    from latentcat.features.xp import N_SAMPLES

    if len(xp) != 4:
        raise LatentcatError("xp: give (bp_flux, bp_flux_error, rp_flux, rp_flux_error)")
    names = ("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error")
    out = []
    for name, arr in zip(names, xp):
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


def _stage_query(stage: Path, light_curve, xp) -> None:
    """Write the query as a one-source staging area (docs/schemas.md)."""
    stage.mkdir(parents=True)
    sid = pa.array([QUERY_ID], pa.int64())
    if light_curve is not None:
        t, m, e = light_curve
        pq.write_table(pa.table({
            "source_id": sid,
            "n_g": pa.array([t.size], pa.int32()),
            "g_time": pa.array([t], pa.list_(pa.float64())),
            "g_mag": pa.array([m.astype(np.float32)], pa.list_(pa.float32())),
            "g_mag_err": pa.array([e.astype(np.float32)], pa.list_(pa.float32())),
        }), stage / "light_curves.parquet")
    if xp is not None:
        cols = {"source_id": sid}
        for name, arr in zip(("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"), xp):
            cols[name] = pa.array([arr], pa.list_(pa.float32()))
        pq.write_table(pa.table(cols), stage / "xp.parquet")


def encode_query(cat_dir: Path, light_curve=None, xp=None, min_epochs: int = MIN_EPOCHS) -> tuple[dict, dict]:
    """Features and latent codes of one query source, through the catalogue's own pipeline.

    Parameters
    ----------
    cat_dir : Path
        Catalogue folder (its ``models/`` are used).
    light_curve : (time, mag, mag_err), optional
        G light curve on the Gaia time axis.
    xp : (bp_flux, bp_flux_error, rp_flux, rp_flux_error), optional
        Sampled XP spectrum on the catalogue's grid.
    min_epochs : int
        The catalogue's fewest cleaned G epochs.

    Returns
    -------
    features : dict
        The feature row (docs/schemas.md "Features") as Python values.
    embedding : dict
        The embedding row: ``z_xp``... (float32 arrays or None), ``recon_loss_*``, ``has_*``.
    """
    from latentcat.features.extract import compute_shard
    from latentcat.models.embed import embed

    models = Path(cat_dir) / MODELS_DIR
    if not models.is_dir():
        raise LatentcatError(f"{models}: the catalogue has no trained models to encode new data with")
    with tempfile.TemporaryDirectory(prefix="latentcat-query-") as tmp:
        tmp = Path(tmp)
        _stage_query(tmp / "stage", light_curve, xp)
        features = compute_shard(tmp / "stage", QUERY_ID, QUERY_ID, min_epochs)
        (tmp / "features").mkdir()
        pq.write_table(features, tmp / "features" / "features-00000.parquet")
        embed(tmp / "features", models, tmp / "embeddings", device="cpu")
        row = pq.read_table(tmp / "embeddings" / "embeddings-00000.parquet").to_pylist()[0]
    feats = features.to_pylist()[0]
    for key, value in row.items():
        if key.startswith("z_") and value is not None:
            row[key] = np.asarray(value, np.float32)
    return feats, row


def similar_to_data(cat, light_curve=None, xp=None, k: int = 10, modality: str = "space",
                    where: str | None = None, time_format: str = "gaia",
                    bp_rp: float | None = None) -> tuple[pa.Table, dict]:
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

    Returns
    -------
    neighbours : pyarrow.Table
        As `Catalog.similar` returns (rank, source_id, distance, blocks, metadata).
    query_info : dict
        ``blocks`` compared, ``n_obs``, ``n_clipped``, ``period`` (d), ``period_fap``,
        ``amplitude`` (G, 95th - 5th percentile), ``time_span``, ``latents`` (block ->
        float32 array or None), ``recon_loss`` (block -> float or None), ``lc_reason``,
        ``xp_reason`` and ``time_format``.

    Raises
    ------
    LatentcatError
        No data, malformed arrays, too few points, a requested block the query cannot
        have, or a catalogue without models or without the index needed.
    """
    from latentcat.catalog.add import feature_settings

    if light_curve is None and xp is None:
        raise LatentcatError("give a light curve, an XP spectrum or both")
    if bp_rp is not None and not np.isfinite(float(bp_rp)):
        raise LatentcatError(f"bp_rp must be a finite colour (mag), got {bp_rp!r}")
    space = modality == SPACE
    try:
        wanted = BLOCKS if space else parse_block_set(modality)
    except ValueError as err:
        raise LatentcatError(f"{err}, or 'space', the default") from None
    settings = feature_settings(cat.path, cat.info()["build_info"])
    min_epochs = settings["min_epochs"]
    lc = None
    if light_curve is not None:
        time, mag, err = _checked_light_curve(light_curve, min_epochs)
        lc = (to_gaia_time(time, time_format), mag, err)
    xp_arrays = _checked_xp(xp) if xp is not None else None

    feats, emb = encode_query(cat.path, lc, xp_arrays, min_epochs)
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
    neighbours = cat.similar(vector, k=k, modality=searched, where=where)

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
    }
    return neighbours, info


# ----------------------------------------------------------------------------- files


def _plain_csv(path: Path, name: str, time_format: str) -> QueryData:
    """Read a plain time,mag,mag_err CSV (G band) into a QueryData."""
    from latentcat.gaia.formats import iter_batches
    from latentcat.gaia.inputs import find_inputs
    from latentcat.gaia.layouts import cast_column

    files, _ = find_inputs([path], path.parent)
    parts = []
    row0 = 0
    for batch in iter_batches(files[0], 100_000):
        parts.append([cast_column(batch, c, pa.float64(), name, row0) for c in PLAIN_COLUMNS])
        row0 += batch.num_rows
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
    time = to_gaia_time(cols[0], time_format)
    note = f"{name}: {time.size} G points read (time format {time_format})"
    return QueryData(light_curve=(time, cols[1], cols[2]), notes=[note])


def read_query_file(path: str | Path, time_format: str = "gaia", source_id: int | None = None,
                    keep_variability_rejected: bool = False) -> QueryData:
    """Read a query light curve and/or XP spectrum from a file.

    Accepted files:

    - a plain CSV with a header row and exactly the columns ``time,mag,mag_err`` (Gaia G
      magnitudes; times in ``time_format``);
    - Gaia DataLink products in any format the ingest readers support (VOTable, ECSV,
      CSV, FITS, a zip bundle): EPOCH_PHOTOMETRY (long layout; the G band is used, BP and
      RP are ignored and the notes say so; the ingest rules drop flagged epochs) and/or
      XP_CONTINUOUS (sampled on the catalogue's grid with `latentcat.gaia.xp`). DataLink
      times are already Gaia times, so ``time_format`` must be ``"gaia"``.

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
        Unreadable file, a plain CSV with other columns, bad values (naming the row and
        column), several sources and no ``source_id``, or no usable data.
    """
    from latentcat.gaia.formats import read_columns
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.inputs import find_inputs, sniff_format

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise InputError(f"{name}: no such file")
    if time_format not in TIME_FORMATS:
        raise InputError(f"unknown time format {time_format!r}: use one of {', '.join(TIME_FORMATS)}")
    fmt, _ = sniff_format(path, name)
    if fmt == "csv":
        with tempfile.TemporaryDirectory(prefix="latentcat-query-") as tmp:
            files, _ = find_inputs([path], Path(tmp))
            columns = read_columns(files[0])
        if "source_id" not in columns:
            if sorted(columns) != sorted(PLAIN_COLUMNS):
                raise InputError(
                    f"{name}: a plain light-curve CSV needs exactly the columns time,mag,mag_err "
                    f"(Gaia G magnitudes), got {','.join(columns)}"
                )
            return _plain_csv(path, name, time_format)
    if time_format != "gaia":
        raise InputError(f"{name}: Gaia DataLink times are BJD - 2455197.5 already; use time format 'gaia'")

    with tempfile.TemporaryDirectory(prefix="latentcat-query-") as tmp:
        stage = Path(tmp) / "stage"
        ingest([path], stage, keep_variability_rejected=keep_variability_rejected)
        lc_path, xp_path = stage / "light_curves.parquet", stage / "xp.parquet"
        lc = pq.read_table(lc_path) if lc_path.exists() else None
        xpt = pq.read_table(xp_path) if xp_path.exists() else None
    ids = sorted(set().union(*(t.column("source_id").to_pylist() for t in (lc, xpt) if t is not None)))
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

    data = QueryData(source_id=source_id)
    if lc is not None:
        rows = lc.filter(pc.equal(lc.column("source_id"), source_id)).to_pylist()
        if rows and rows[0]["g_time"]:
            r = rows[0]
            data.light_curve = tuple(np.asarray(r[c], np.float64) for c in ("g_time", "g_mag", "g_mag_err"))
            data.notes.append(f"{name}: source_id {source_id}: {len(r['g_time'])} G epochs used")
            ignored = [f"{band.upper()} ({r[f'n_{band}']} epochs)" for band in ("bp", "rp") if r.get(f"n_{band}")]
            if ignored:
                data.notes.append(
                    f"{name}: bands {', '.join(ignored)} ignored: latentcat compares G light curves only"
                )
    if xpt is not None:
        rows = xpt.filter(pc.equal(xpt.column("source_id"), source_id)).to_pylist()
        if rows:
            r = rows[0]
            data.xp = tuple(None if r[c] is None else np.asarray(r[c], np.float32)
                            for c in ("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"))
            data.notes.append(f"{name}: source_id {source_id}: XP continuous spectrum sampled on the catalogue grid")
    if data.light_curve is None and data.xp is None:
        raise InputError(f"{name}: source_id {source_id} has no G epochs and no XP spectrum")
    return data


def similar_to_file(cat, path: str | Path, k: int = 10, modality: str = "space", where: str | None = None,
                    time_format: str = "gaia", source_id: int | None = None,
                    bp_rp: float | None = None) -> tuple[pa.Table, dict]:
    """`read_query_file` then `similar_to_data`: the neighbours of the data in a file.

    Returns
    -------
    neighbours : pyarrow.Table
    query_info : dict
        As `similar_to_data`, plus ``source_id`` (DataLink files) and ``notes``.
    """
    from latentcat.catalog.add import feature_settings

    settings = feature_settings(cat.path, cat.info()["build_info"])
    data = read_query_file(path, time_format, source_id, settings["keep_variability_rejected"])
    neighbours, info = similar_to_data(cat, data.light_curve, data.xp, k=k, modality=modality, where=where,
                                       bp_rp=bp_rp)
    return neighbours, {**info, "time_format": time_format, "source_id": data.source_id, "notes": data.notes}
