"""New sources through a catalogue's own pipeline: the one path that encodes data not in it.

    >>> from latentcat.encode import catalogue_settings, checked_light_curve, encode_sources, light_curve_table
    >>> settings = catalogue_settings(cat.path, cat.info()["build_info"])
    >>> (t, m, e), dropped = checked_light_curve(time, mag, err, name="obs.csv")
    >>> features, embeddings = encode_sources(cat.path, light_curve_table([-1], [(t, m, e)]), None,
    ...                                       settings["min_epochs"])

A query by example (``similar --from-file``, the explorer's upload, ``Catalog.similar(light_curve=...)``)
encodes its one source here, in memory: the feature code of `latentcat.features.extract`
(`features_table`: the same cleaning, dm-dt map, period search and fold, with the catalogue's
``min_epochs``) and the catalogue's trained encoders (`latentcat.models.embed.encode_table`).
``latentcat add`` runs the same two functions shard by shard over the staged sources, with the
same settings (`catalogue_settings`). Nothing is retrained, and the read side imports nothing
that writes a catalogue.

Rules for a light curve given by a user (`checked_light_curve`), checked before any work:

- at most `latentcat.limits.MAX_EPOCHS` epochs; times within `latentcat.limits.TIME_RANGE`
  (Gaia time, BJD - 2455197.5 d), magnitudes within `latentcat.limits.MAG_RANGE`, errors
  positive and at most `latentcat.limits.MAG_ERR_MAX`; every value finite. A value outside
  these is refused, naming the point: nothing is silently mended.
- repeated times: the epoch listed first is kept and the others dropped, as ``latentcat
  ingest`` keeps the first input's epoch; the drops are counted (``duplicate_epochs``, and
  ``conflicting_epochs`` where the magnitude differs) in what the caller reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from latentcat.errors import LatentcatError
from latentcat.features import MIN_EPOCHS, SHARD_SIZE
from latentcat.layout import FEATURES_DIR, MODELS_DIR
from latentcat.limits import MAG_ERR_MAX, MAG_RANGE, MAX_EPOCHS, TIME_RANGE

XP_BANDS = ("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error")
"""The sampled XP columns of a staged ``xp`` row (docs/schemas.md)."""

TIME_FORMATS = {"gaia": "Gaia (BJD - 2455197.5)", "bjd": "BJD", "jd": "JD", "mjd": "MJD"}
"""Accepted ``time_format`` values of a light curve sent to be compared, with what each is."""

GAIA_TIME_ZERO_JD = 2455197.5
"""JD (TCB) of Gaia time 0: Gaia DR3 epoch times are BJD(TCB) - 2455197.5 d."""


def to_gaia_time(time, time_format: str = "gaia") -> np.ndarray:
    """Convert times to Gaia's axis, BJD(TCB) - 2455197.5 d.

    Parameters
    ----------
    time : array_like
        Times in ``time_format``.
    time_format : {"gaia", "bjd", "jd", "mjd"}
        ``"gaia"``: already BJD - 2455197.5; ``"bjd"``/``"jd"``: Julian dates; ``"mjd"``:
        JD - 2400000.5. Converted by offset only, on the TCB scale, with no barycentric
        correction: give barycentric times (a geocentric JD is off by up to ~8.3 min).

    Returns
    -------
    float64 array
    """
    if time_format not in TIME_FORMATS:
        raise LatentcatError(f"unknown time format {time_format!r}: use one of {', '.join(TIME_FORMATS)}")
    try:
        t = np.asarray(time, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LatentcatError(f"times must be numbers ({exc})") from None
    if time_format == "gaia":
        return t
    from astropy.time import Time

    fmt = "mjd" if time_format == "mjd" else "jd"
    zero = Time(GAIA_TIME_ZERO_JD, format="jd", scale="tcb")
    return np.asarray((Time(t, format=fmt, scale="tcb") - zero).jd, dtype=np.float64)


def catalogue_settings(cat_dir: Path, build_info: dict) -> dict:
    """The feature and ingest settings a catalogue was built with, which new sources must share.

    Parameters
    ----------
    cat_dir : Path
        Catalogue folder (its ``features/_features_plan.json`` is read when present).
    build_info : dict
        The catalogue's build record (``Catalog.info()["build_info"]``).

    Returns
    -------
    dict
        ``min_epochs``, ``shard_size``, ``keep_variability_rejected`` and ``device``.
    """
    config = build_info.get("config") or {}
    features = config.get("features") or {}
    plan_path = Path(cat_dir) / FEATURES_DIR / "_features_plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
    return {
        "min_epochs": int(plan.get("min_epochs", features.get("min_epochs", MIN_EPOCHS))),
        "shard_size": int(plan.get("shard_size", features.get("shard_size", SHARD_SIZE))),
        "keep_variability_rejected": bool((config.get("inputs") or {}).get("keep_variability_rejected", False)),
        "device": str((config.get("models") or {}).get("device", "auto")),
    }


def checked_light_curve(time, mag, err, name: str = "light curve",
                        time_format: str = "gaia") -> tuple[tuple[np.ndarray, ...], dict]:
    """A user's G light curve checked against the bounds above (its shape and length before
    anything is converted), on Gaia's time axis, sorted by time, repeated times reduced to
    their first epoch.

    Parameters
    ----------
    time, mag, err : array_like
        Times, G magnitudes and their errors, in the order the user gave them.
    name : str
        Names the curve (its file) in errors.
    time_format : {"gaia", "bjd", "jd", "mjd"}
        The system of ``time`` (`to_gaia_time`).

    Returns
    -------
    (time, mag, err) : float64 arrays, ascending in time
    dropped : dict
        ``duplicate_epochs`` (epochs dropped for a repeated time) and ``conflicting_epochs``
        (those of them whose magnitude differed from the kept one).

    Raises
    ------
    LatentcatError
        One line naming ``name`` and the first bad point.
    """
    try:
        arrays = [np.asarray(a, dtype=np.float64) for a in (time, mag, err)]
    except (TypeError, ValueError) as exc:
        raise LatentcatError(f"{name}: give (time, mag, mag_err) arrays of numbers ({exc})") from None
    t, m, e = arrays
    if not (t.ndim == m.ndim == e.ndim == 1) or not (t.size == m.size == e.size):
        raise LatentcatError(f"{name}: time, mag and mag_err must be 1-D of one length, got {t.shape}, {m.shape}, {e.shape}")
    if t.size > MAX_EPOCHS:
        raise LatentcatError(f"{name}: {t.size} epochs; at most {MAX_EPOCHS} are accepted for one light curve")
    t = to_gaia_time(t, time_format)
    checks = (("time", t, *TIME_RANGE, "from {:g} to {:g} d (Gaia time, BJD - 2455197.5)"),
              ("mag", m, *MAG_RANGE, "from {:g} to {:g} mag"),
              ("mag_err", e, 0.0, MAG_ERR_MAX, "above {:g} and at most {:g} mag"))
    for column, values, lo, hi, allowed in checks:
        with np.errstate(invalid="ignore"):
            inside = (values >= lo) & (values <= hi) & ((values > 0) if column == "mag_err" else True)
        bad = np.flatnonzero(~inside)  # NaN is never inside
        if bad.size:
            i = int(bad[0])
            raise LatentcatError(f"{name}: point {i + 1} has {column} {values[i]:.6g}; "
                                 f"give finite values {allowed.format(lo, hi)}")
    order = np.argsort(t, kind="stable")  # ties keep the order given: the first listed comes first
    t, m, e = t[order], m[order], e[order]
    repeat = np.zeros(t.size, bool)
    repeat[1:] = t[1:] == t[:-1]
    first = np.maximum.accumulate(np.where(repeat, 0, np.arange(t.size)))  # each epoch's first of its time
    dropped = {"duplicate_epochs": int(repeat.sum()), "conflicting_epochs": int((repeat & (m != m[first])).sum())}
    keep = ~repeat
    return (t[keep], m[keep], e[keep]), dropped


def light_curve_table(source_ids, curves) -> pa.Table:
    """Staged ``light_curves`` rows (docs/schemas.md) of G curves ``(time, mag, err)``."""
    curves = list(curves)
    return pa.table({
        "source_id": pa.array(source_ids, pa.int64()),
        "n_g": pa.array([c[0].size for c in curves], pa.int32()),
        "g_time": pa.array([np.asarray(c[0], np.float64) for c in curves], pa.list_(pa.float64())),
        "g_mag": pa.array([np.asarray(c[1], np.float32) for c in curves], pa.list_(pa.float32())),
        "g_mag_err": pa.array([np.asarray(c[2], np.float32) for c in curves], pa.list_(pa.float32())),
    })


def xp_table(source_ids, spectra) -> pa.Table:
    """Staged ``xp`` rows of sampled spectra ``(bp_flux, bp_flux_error, rp_flux, rp_flux_error)``
    (a band may be None)."""
    spectra = list(spectra)
    return pa.table({"source_id": pa.array(source_ids, pa.int64()),
                     **{c: pa.array([s[i] for s in spectra], pa.list_(pa.float32())) for i, c in enumerate(XP_BANDS)}})


def encode_sources(cat_dir: Path, light_curves: pa.Table | None, xp: pa.Table | None,
                   min_epochs: int = MIN_EPOCHS, device: str = "cpu", name: str = "query") -> tuple[pa.Table, pa.Table]:
    """Features and latent codes of staged sources held in memory, with a catalogue's models.

    Parameters
    ----------
    cat_dir : Path
        Catalogue folder (its ``models/`` are used).
    light_curves, xp : pyarrow.Table or None
        Staged rows (`light_curve_table`, `xp_table`), sorted by source_id.
    min_epochs : int
        The catalogue's fewest cleaned G epochs (`catalogue_settings`).
    device : str
        Where the encoders run.
    name : str
        Names the data in errors.

    Returns
    -------
    features, embeddings : pyarrow.Table
        One row per source, in the schemas of docs/schemas.md.
    """
    from latentcat.features.extract import features_table
    from latentcat.models.embed import encode_table, load_models

    models_dir = Path(cat_dir) / MODELS_DIR
    if not models_dir.is_dir():
        raise LatentcatError(f"{models_dir}: the catalogue has no trained models to encode new data with")
    features = features_table(light_curves, xp, min_epochs, name, name)
    return features, encode_table(features, load_models(models_dir, dev=device), device=device, name=name)
