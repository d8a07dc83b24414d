"""The feature stage: staging area -> sharded model inputs (docs/schemas.md, "Features").

Every source of ``light_curves.parquet`` or ``xp.parquet`` gets one row, sorted by
``source_id`` and cut into shards of ``shard_size`` rows: ``features-00000.parquet``, ...
A shard is written under a temporary name and renamed when complete, so a shard file that
exists is finished; a killed run started again with ``resume=True`` only computes the shards
that are missing. ``_features_plan.json`` records the shard boundaries and settings so that a
resumed run cannot mix shards of different inputs.

Light-curve features are null, with ``lc_reason``, for a source that has:

- ``no_light_curve``: no G epochs in the staging area;
- ``too_few_epochs``: fewer than ``min_epochs`` G epochs left after cleaning;
- ``no_time_span``: all epochs at the same time (no period can be searched).

``n_obs`` and ``n_clipped`` are always filled (0 without a light curve). XP reasons are
listed in :mod:`latentcat.features.xp`.
"""

from __future__ import annotations

import hashlib
import json
import time as _time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from latentcat.atomic import write_file
from latentcat.compute import check_folders, check_scheduler, check_written, shard_runner, write_parquet
from latentcat.errors import InputError
from latentcat.features import MIN_EPOCHS, SHARD_SIZE, clean, colour, dmdt, fold, period, stats, xp
from latentcat.features.ragged import compact, list_lengths, pad_lists, to_list_array
from latentcat.layout import INGEST_REPORT, staged

FEATURES_SCHEMA = pa.schema(
    [
        ("source_id", pa.int64()),
        ("n_obs", pa.int32()),
        ("n_clipped", pa.int32()),
        ("g_mean", pa.float32()),
        ("g_median", pa.float32()),
        ("g_std", pa.float32()),
        ("g_amplitude", pa.float32()),
        ("g_skew", pa.float32()),
        ("time_span", pa.float32()),
        ("dmdt", pa.list_(pa.float32())),
        ("dmdt_err", pa.list_(pa.float32())),
        ("period", pa.float64()),
        ("period_fap", pa.float64()),
        ("period_power", pa.float32()),
        ("period_coherence", pa.float32()),
        ("period_reliable", pa.bool_()),
        ("colour_slope", pa.float32()),
        ("colour_slope_err", pa.float32()),
        ("fold_phase", pa.list_(pa.float32())),
        ("fold_mag", pa.list_(pa.float32())),
        ("fold_err", pa.list_(pa.float32())),
        ("xp_flux", pa.list_(pa.float32())),
        ("xp_flux_error", pa.list_(pa.float32())),
        ("xp_scale", pa.float32()),
        ("lc_reason", pa.string()),
        ("xp_reason", pa.string()),
    ]
)

LC_FILE = staged(".", "light_curves").name
XP_FILE = staged(".", "xp").name
PLAN_FILE = "_features_plan.json"  # a leading underscore: Arrow datasets skip it
SHARED = "stage_dir and out"  # the folders every worker must reach
_LC_BATCH = 2_000  # light curves processed together inside a shard (bounds memory)


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``features-NNNNN.parquet``."""
    return f"features-{index:05d}.parquet"


def extract_features(
    stage_dir: Path,
    out: Path,
    shard_size: int = SHARD_SIZE,
    n_workers: int = 1,
    resume: bool = True,
    min_epochs: int = MIN_EPOCHS,
    scheduler: str = "processes",
    address: str | None = None,
) -> dict:
    """Compute the model inputs of every staged source, shard by shard.

    Parameters
    ----------
    stage_dir : Path
        Staging folder with ``light_curves.parquet`` and/or ``xp.parquet``.
    out : Path
        Folder for the ``features-NNNNN.parquet`` shards (created if needed).
    shard_size : int
        Sources per shard.
    n_workers : int
        Processes computing shards in parallel (local processes, or the workers of a Dask
        LocalCluster); the shards do not depend on it.
    resume : bool
        Keep finished shards of an earlier run with the same inputs and settings; when
        False, every shard is recomputed.
    min_epochs : int
        Fewest cleaned G epochs for light-curve features.
    scheduler : {"processes", "dask"}
        Where the shards are computed (`latentcat.compute`): local processes, or one Dask task
        per shard. With "dask", ``stage_dir`` and ``out`` must be paths every worker reaches.
    address : str or None
        Address of a running Dask scheduler (``"tcp://host:8786"``); None starts a
        LocalCluster of ``n_workers`` processes for this call.

    Returns
    -------
    dict
        Counts of sources, shards written and skipped, features present, reasons, timing.
    """
    t_start = _time.perf_counter()
    stage_dir, out = Path(stage_dir), Path(out)
    if shard_size < 1 or n_workers < 1 or min_epochs < 3:
        raise InputError("extract_features: shard_size and n_workers must be >= 1 and min_epochs >= 3")
    check_scheduler(scheduler, address, n_workers)
    lc_path, xp_path = stage_dir / LC_FILE, stage_dir / XP_FILE
    if not lc_path.exists() and not xp_path.exists():
        raise InputError(f"{stage_dir}: neither {LC_FILE} nor {XP_FILE} found")
    _check_staging(stage_dir)
    ids = _all_source_ids([p for p in (lc_path, xp_path) if p.exists()])
    starts = range(0, len(ids), shard_size)
    bounds = [(int(ids[lo]), int(ids[min(lo + shard_size, len(ids)) - 1])) for lo in starts]
    plan = {
        "n_sources": int(len(ids)),
        "source_id_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
        "shard_size": int(shard_size),
        "min_epochs": int(min_epochs),
        "inputs": sorted(p.name for p in (lc_path, xp_path) if p.exists()),
        # per shard: file, first and last source_id, rows, and a checksum of its source_ids
        "shards": [[shard_name(k), lo, hi, int(min(shard_size, len(ids) - start)),
                    hashlib.sha256(ids[start:start + shard_size].tobytes()).hexdigest()]
                   for k, ((lo, hi), start) in enumerate(zip(bounds, starts))],
    }

    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".features-*.parquet.tmp-*"), *out.glob("features-*.parquet.tmp*")]:  # left by a killed worker
        stale.unlink()
    plan_path = out / PLAN_FILE
    if resume and plan_path.exists():
        if json.loads(plan_path.read_text()) != plan:
            raise InputError(f"{out}: holds features of other inputs or settings; use resume=False or another folder")
    else:
        for old in out.glob("features-*.parquet"):
            old.unlink()
    write_file(plan_path, lambda tmp: tmp.write_text(json.dumps(plan, indent=1)))

    redone = [k for k in range(len(bounds)) if (out / shard_name(k)).exists() and not _shard_intact(out, plan["shards"][k])]
    for k in redone:  # truncated, or another shard's file: computed again
        (out / shard_name(k)).unlink()
    todo = [k for k in range(len(bounds)) if not (out / shard_name(k)).exists()]
    where = stage_dir.resolve(), out.resolve()  # absolute: a worker's working folder is its own
    jobs = [(str(where[0]), str(where[1] / shard_name(k)), bounds[k][0], bounds[k][1], min_epochs) for k in todo]
    with Progress(TextColumn("features"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("features", total=len(jobs))
        if jobs:  # a resumed run with every shard done starts no pool or cluster
            with shard_runner(scheduler, address, n_workers) as run:
                for _ in run(_write_shard, jobs):
                    bar.advance(task)
    check_written([job[1] for job in jobs], SHARED)

    seconds = _time.perf_counter() - t_start
    reasons = pq.read_table([str(out / shard_name(k)) for k in range(len(bounds))], columns=["lc_reason", "xp_reason"]) if bounds else None
    report = {
        "stage_dir": str(stage_dir),
        "out": str(out),
        "n_sources": int(len(ids)),
        "n_shards": len(bounds),
        "shards_written": len(todo),
        "shards_skipped": len(bounds) - len(todo),
        "shards_redone": len(redone),
        "scheduler": scheduler,
        "seconds": round(seconds, 3),
        "lc_features": 0,
        "xp_features": 0,
        "lc_reasons": {},
        "xp_reasons": {},
    }
    if reasons is not None:
        for col, key in (("lc_reason", "lc"), ("xp_reason", "xp")):
            counts = pc.value_counts(reasons[col].combine_chunks()).to_pylist()
            report[f"{key}_reasons"] = {c["values"]: c["counts"] for c in counts if c["values"] is not None}
            report[f"{key}_features"] = int(reasons[col].null_count)
    return report


def compute_shard(stage_dir: Path, lo: int, hi: int, min_epochs: int = MIN_EPOCHS) -> pa.Table:
    """Features of the sources with ``lo <= source_id <= hi``, as a table in FEATURES_SCHEMA.

    Parameters
    ----------
    stage_dir : Path
        Staging folder.
    lo, hi : int
        Inclusive source_id range.
    min_epochs : int
        Fewest cleaned G epochs for light-curve features.

    Returns
    -------
    pyarrow.Table, sorted by source_id.
    """
    stage_dir = Path(stage_dir)
    columns = ["source_id", *(f"{b}_{c}" for b in ("g", "bp", "rp") for c in ("time", "mag", "mag_err"))]
    try:  # BP and RP epochs where the staged table has them (the colour slope); read errors: _read_range says them
        names = set(pq.read_schema(stage_dir / LC_FILE).names)
        columns = [c for c in columns if c in names or not c.startswith(("bp_", "rp_"))]
    except (OSError, pa.ArrowInvalid):
        pass
    lc = _read_range(stage_dir / LC_FILE, lo, hi, columns)
    xpt = _read_range(stage_dir / XP_FILE, lo, hi, ["source_id", "bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"])
    return features_table(lc, xpt, min_epochs, stage_dir / LC_FILE, stage_dir / XP_FILE)


def features_table(lc: pa.Table | None, xpt: pa.Table | None, min_epochs: int = MIN_EPOCHS,
                   lc_name: Path | str = LC_FILE, xp_name: Path | str = XP_FILE) -> pa.Table:
    """Features of staged rows held in memory (the ``light_curves`` and ``xp`` tables of
    docs/schemas.md, sorted by source_id; either may be None), as a table in FEATURES_SCHEMA:
    what `compute_shard` computes for a shard, without files. ``lc_name`` and ``xp_name`` name
    the tables in errors."""
    lc_ids = lc["source_id"].to_numpy() if lc is not None else np.zeros(0, np.int64)
    xp_ids = xpt["source_id"].to_numpy() if xpt is not None else np.zeros(0, np.int64)
    ids = np.union1d(lc_ids, xp_ids)
    n = len(ids)
    columns: dict[str, pa.Array] = {"source_id": pa.array(ids, pa.int64())}
    columns.update(_light_curve_columns(lc_name, lc, ids, min_epochs))
    columns.update(_xp_columns(xp_name, xpt, ids))
    return pa.table([columns[f.name] for f in FEATURES_SCHEMA], schema=FEATURES_SCHEMA) if n else FEATURES_SCHEMA.empty_table()


def light_curve_features(time: np.ndarray, mag: np.ndarray, err: np.ndarray, min_epochs: int = MIN_EPOCHS,
                         bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """All light-curve features of a batch of NaN-padded G light curves.

    Parameters
    ----------
    time : float64 array (n, m)
        Epochs (d), ascending, NaN-padded at the end of each row.
    mag, err : float arrays (n, m)
        Magnitudes and errors, NaN-padded likewise.
    min_epochs : int
        Fewest cleaned epochs for features.
    bands : dict, optional
        ``"bp"`` and ``"rp"`` -> (time, mag, err) NaN-padded arrays of the same sources, for
        the colour slope (`latentcat.features.colour`); without them it is NaN.

    Returns
    -------
    dict
        ``n_obs``, ``n_clipped``, ``lc_reason`` (object, None where features exist), the
        summary statistics, ``dmdt``/``dmdt_err`` (n, 200), ``period``, ``period_fap``,
        ``period_power``, ``period_coherence``, ``period_reliable``, ``colour_slope``,
        ``colour_slope_err``, and
        ``fold_phase``/``fold_mag``/``fold_err`` (n, m) padded arrays (folded at twice the
        period where it is reliable, else in time order: `latentcat.features.fold`).
        Rows with a reason hold NaN (``period_reliable`` False).
    """
    n = time.shape[0]
    n_raw = np.isfinite(mag).sum(axis=1)
    keep = clean.clean_mask(mag, err)
    n_obs, (t, m, e) = compact(keep, time, mag.astype(np.float64), err.astype(np.float64))
    last = np.take_along_axis(t, np.maximum(n_obs - 1, 0)[:, None], axis=1)[:, 0] if t.shape[1] else np.full(n, np.nan)
    has_span = (n_obs >= 2) & (last > t[:, 0] if t.shape[1] else False)
    ok = (n_obs >= min_epochs) & has_span
    reason = np.full(n, None, dtype=object)
    reason[(n_obs >= min_epochs) & ~has_span] = "no_time_span"
    reason[n_obs < min_epochs] = "too_few_epochs"
    reason[n_raw == 0] = "no_light_curve"

    res: dict[str, np.ndarray] = {
        "n_obs": n_obs.astype(np.int32),
        "n_clipped": (n_raw - n_obs).astype(np.int32),
        "lc_reason": reason,
    }
    width = t.shape[1]
    nan = lambda *shape, dt=np.float32: np.full(shape, np.nan, dtype=dt)  # noqa: E731
    for key in ("g_mean", "g_median", "g_std", "g_amplitude", "g_skew", "time_span", "period_power", "period_coherence",
                "colour_slope", "colour_slope_err"):
        res[key] = nan(n)
    for key in ("period", "period_fap"):
        res[key] = nan(n, dt=np.float64)
    res["period_reliable"] = np.zeros(n, bool)
    for key in ("dmdt", "dmdt_err"):
        res[key] = nan(n, dmdt.N_CELLS)
    for key in ("fold_phase", "fold_mag", "fold_err"):
        res[key] = nan(n, width)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return res
    w = int(n_obs[idx].max())
    t, m, e = t[idx, :w], m[idx, :w], e[idx, :w]
    for key, value in stats.summary_stats(t, m).items():
        if key != "n_obs":
            res[key][idx] = value
    res["dmdt"][idx], res["dmdt_err"][idx] = dmdt.dmdt_maps(t, m)
    if bands is not None:
        res["colour_slope"][idx], res["colour_slope_err"][idx] = colour.colour_slopes(
            t, m, {b: tuple(a[idx] for a in arrays) for b, arrays in bands.items()})
    per = period.find_periods(t, m, e)
    for key in ("period", "period_fap", "period_power", "period_coherence", "period_reliable"):
        res[key][idx] = per[key]
    span = res["time_span"][idx]
    reliable = per["period_reliable"]
    ph, fm, fe = fold.fold_curves(t, m, e, fold.fold_periods(per["period"], reliable, span), align=reliable)
    res["fold_phase"][idx, :w], res["fold_mag"][idx, :w], res["fold_err"][idx, :w] = ph, fm, fe
    return res


# ----------------------------------------------------------------------------- internals


def _check_staging(stage_dir: Path) -> None:
    """The staging folder holds what its ``ingest_report.json`` says ingest wrote: every table
    it lists, with that many rows (a table removed or replaced since is an input error)."""
    report_path = stage_dir / INGEST_REPORT
    if not report_path.exists():
        return
    try:
        tables = json.loads(report_path.read_text()).get("tables", {})
    except (OSError, ValueError) as exc:
        raise InputError(f"{report_path}: not a readable ingest report ({exc})") from None
    for name in ("light_curves", "xp"):
        if name not in tables:
            continue
        path, rows = stage_dir / tables[name]["file"], int(tables[name]["rows"])
        if not path.exists():
            raise InputError(f"{path}: missing, but {report_path.name} says ingest wrote it with {rows} rows")
        try:
            found = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
        if found != rows:
            raise InputError(f"{path}: {found} rows, but {report_path.name} says ingest wrote {rows}")


def _shard_intact(out: Path, planned: list) -> bool:
    """Whether a finished shard file is the planned one: readable, with its rows' source_ids."""
    name, _, _, rows, checksum = planned
    try:
        sid = pq.read_table(out / name, columns=["source_id"]).column("source_id").to_numpy()
    except (OSError, pa.ArrowInvalid, KeyError):
        return False
    return len(sid) == rows and hashlib.sha256(sid.astype(np.int64).tobytes()).hexdigest() == checksum


def _all_source_ids(paths: list[Path]) -> np.ndarray:
    """Sorted union of the source_ids of the staged tables; a duplicate is an input error."""
    parts = []
    for path in paths:
        try:
            sid = pq.read_table(path, columns=["source_id"])["source_id"]
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise InputError(f"{path}: cannot read a source_id column ({exc})") from None
        if sid.null_count:
            raise InputError(f"{path}: source_id is null in {sid.null_count} rows")
        ids = np.sort(sid.to_numpy())
        dup = ids[1:][ids[1:] == ids[:-1]]
        if len(dup):
            raise InputError(f"{path}: source_id {dup[0]} appears more than once")
        parts.append(ids)
    return np.union1d(*parts) if len(parts) == 2 else parts[0]


def _read_range(path: Path, lo: int, hi: int, columns: list[str]) -> pa.Table | None:
    """Rows of a staged table with lo <= source_id <= hi, sorted by source_id (None if no file)."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path, columns=columns, filters=[("source_id", ">=", lo), ("source_id", "<=", hi)])
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read columns {columns} ({exc})") from None
    return table.sort_by("source_id").combine_chunks()


def _light_curve_columns(path: Path, lc: pa.Table | None, ids: np.ndarray, min_epochs: int) -> dict[str, pa.Array]:
    """The light-curve columns of a shard, for the sources ``ids`` (sorted)."""
    n = len(ids)
    res = {
        "n_obs": np.zeros(n, np.int32),
        "n_clipped": np.zeros(n, np.int32),
        "lc_reason": np.full(n, "no_light_curve", dtype=object),
    }
    lists = {"dmdt": [], "dmdt_err": [], "fold_phase": [], "fold_mag": [], "fold_err": []}
    list_rows = []
    scalars = ("g_mean", "g_median", "g_std", "g_amplitude", "g_skew", "time_span", "period", "period_fap", "period_power",
               "period_coherence", "colour_slope", "colour_slope_err")
    for key in scalars:
        res[key] = np.full(n, np.nan, np.float64 if key in ("period", "period_fap") else np.float32)
    res["period_reliable"] = np.zeros(n, bool)
    if lc is not None and lc.num_rows:
        pos = np.searchsorted(ids, lc["source_id"].to_numpy())
        for lo in range(0, lc.num_rows, _LC_BATCH):
            batch = lc.slice(lo, _LC_BATCH)
            time, mag, err = _validated_light_curves(path, batch)
            feats = light_curve_features(time, mag, err, min_epochs, _band_curves(path, batch))
            rows = pos[lo : lo + batch.num_rows]
            for key in ("n_obs", "n_clipped", "lc_reason", "period_reliable", *scalars):
                res[key][rows] = feats[key]
            for key in lists:
                lists[key].append(feats[key])
            list_rows.append((rows, feats["n_obs"], feats["lc_reason"]))
    out = {}
    present = np.equal(res["lc_reason"], None)
    for key in ("n_obs", "n_clipped"):
        out[key] = pa.array(res[key], pa.int32())
    for key in scalars:
        typ = pa.float64() if key in ("period", "period_fap") else pa.float32()
        out[key] = pa.array(res[key], typ, from_pandas=True)
    out["period_reliable"] = pa.array(res["period_reliable"], pa.bool_(), mask=~present)
    out["lc_reason"] = pa.array(res["lc_reason"].tolist(), pa.string())
    for key, parts in lists.items():
        width = dmdt.N_CELLS if key.startswith("dmdt") else max([p.shape[1] for p in parts], default=0)
        full = np.full((n, width), np.nan, np.float32)
        lengths = np.zeros(n, np.int64)
        for part, (rows, n_obs, _) in zip(parts, list_rows):
            full[rows, : part.shape[1]] = part
            lengths[rows] = dmdt.N_CELLS if key.startswith("dmdt") else n_obs
        out[key] = to_list_array(full, lengths, present)
    return out


def _validated_light_curves(path: Path, batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded G time/mag/err arrays of a batch, checked against the staging contract."""
    sid = batch["source_id"].to_numpy()
    lens = [list_lengths(batch[c]) for c in ("g_time", "g_mag", "g_mag_err")]
    bad = np.flatnonzero((lens[0] != lens[1]) | (lens[0] != lens[2]))
    if len(bad):
        raise InputError(f"{path}: g_time, g_mag and g_mag_err have different lengths for source_id {sid[bad[0]]}")
    width = int(lens[0].max()) if len(sid) else 0
    time = pad_lists(batch["g_time"], np.float64, width)
    mag = pad_lists(batch["g_mag"], np.float64, width)
    err = pad_lists(batch["g_mag_err"], np.float64, width)
    inside = np.arange(width)[None, :] < lens[0][:, None]
    for name, arr in (("g_time", time), ("g_mag", mag), ("g_mag_err", err)):
        rows = np.flatnonzero((inside & ~np.isfinite(arr)).any(axis=1))
        if len(rows):
            raise InputError(f"{path}: {name} has a null or non-finite value for source_id {sid[rows[0]]}")
    rows = np.flatnonzero((inside & (err <= 0)).any(axis=1))
    if len(rows):
        raise InputError(f"{path}: g_mag_err is not positive for source_id {sid[rows[0]]}")
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero((np.diff(time, axis=1) < 0).any(axis=1))
    if len(rows):
        raise InputError(f"{path}: g_time is not sorted ascending for source_id {sid[rows[0]]}")
    return time, mag, err


def _band_curves(path: Path, batch: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """NaN-padded (time, mag, mag_err) arrays of the BP and RP epochs of a batch (a source
    without a band: all NaN; a missing value: NaN, left out of the colour slope), or None where
    the table has no BP and RP columns."""
    names = [f"{b}_{c}" for b in ("bp", "rp") for c in ("time", "mag", "mag_err")]
    if not set(names) <= set(batch.column_names):
        return None
    out = {}
    for band in ("bp", "rp"):
        cols = [batch[f"{band}_{c}"] for c in ("time", "mag", "mag_err")]
        lens = [list_lengths(c) for c in cols]
        bad = np.flatnonzero((lens[0] != lens[1]) | (lens[0] != lens[2]))
        if len(bad):
            sid = batch["source_id"].to_numpy()[bad[0]]
            raise InputError(f"{path}: {band}_time, {band}_mag and {band}_mag_err have different lengths for source_id {sid}")
        width = int(lens[0].max()) if batch.num_rows else 0
        out[band] = tuple(pad_lists(col, np.float64, width) for col in cols)
    return out


def _xp_columns(path: Path, xpt: pa.Table | None, ids: np.ndarray) -> dict[str, pa.Array]:
    """The XP columns of a shard, for the sources ``ids`` (sorted)."""
    n = len(ids)
    flux = np.full((n, 2 * xp.N_SAMPLES), np.nan, np.float32)
    ferr = flux.copy()
    scale = np.full(n, np.nan, np.float32)
    reason = np.full(n, "no_xp", dtype=object)
    if xpt is not None and xpt.num_rows:
        sid = xpt["source_id"].to_numpy()
        bands = {}
        for name in ("bp_flux", "bp_flux_error", "rp_flux", "rp_flux_error"):
            col = xpt[name]
            lens = list_lengths(col)
            is_null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
            bad = np.flatnonzero(~is_null & (lens != xp.N_SAMPLES))
            if len(bad):
                raise InputError(f"{path}: {name} has {lens[bad[0]]} values, not {xp.N_SAMPLES}, for source_id {sid[bad[0]]}")
            arr = pad_lists(col, np.float32, xp.N_SAMPLES)
            bad = np.flatnonzero(~is_null & ~np.isfinite(arr).all(axis=1))
            if len(bad):
                raise InputError(f"{path}: {name} has a null or non-finite value for source_id {sid[bad[0]]}")
            bands[name] = arr
        for band in ("bp", "rp"):
            lacks_err = np.isfinite(bands[f"{band}_flux"]).all(axis=1) & ~np.isfinite(bands[f"{band}_flux_error"]).all(axis=1)
            if lacks_err.any():
                raise InputError(f"{path}: {band}_flux_error is null where {band}_flux is not, for source_id {sid[lacks_err][0]}")
        f, e, s, r = xp.xp_vectors(bands["bp_flux"], bands["bp_flux_error"], bands["rp_flux"], bands["rp_flux_error"])
        pos = np.searchsorted(ids, sid)
        flux[pos], ferr[pos], scale[pos], reason[pos] = f, e, s, r
    present = np.equal(reason, None)
    lengths = np.full(n, 2 * xp.N_SAMPLES)
    return {
        "xp_flux": to_list_array(flux, lengths, present),
        "xp_flux_error": to_list_array(ferr, lengths, present),
        "xp_scale": pa.array(scale, pa.float32(), from_pandas=True),
        "xp_reason": pa.array(reason.tolist(), pa.string()),
    }


def _write_shard(stage_dir: str, path: str, lo: int, hi: int, min_epochs: int) -> int:
    """Compute one shard and write it atomically (temporary name, then rename).

    The temporary name is unique to this call, so two workers (possibly on two hosts) that
    compute the same shard never write into one file. The staging and output folders must be
    visible to the process that runs it (on a cluster: a filesystem every worker reaches).
    """
    check_folders((stage_dir, Path(path).parent), SHARED)
    table = compute_shard(Path(stage_dir), lo, hi, min_epochs)
    write_parquet(table, path)
    return table.num_rows

