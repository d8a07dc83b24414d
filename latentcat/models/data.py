"""Read feature shards into model batches, one shard in memory at a time (or, for training,
every shard's selected rows kept in memory across epochs while they fit: `ShardCache`).

Each modality uses these columns of a ``features-NNNNN.parquet`` shard (docs/schemas.md):

- ``xp``: ``xp_flux``, ``xp_flux_error`` (fixed length, 110 by default)
- ``dmdt``: ``dmdt``, ``dmdt_err`` (200), and its context ``g_mean`` (`dmdt_context`)
- ``fold``: ``fold_phase``, ``fold_mag``, ``fold_err`` (ragged; padded per batch), and the
  fold's context from ``period``, ``period_reliable``, ``time_span`` and ``g_amplitude``
  (`fold_context`)

The context of a model is what its input's normalisation took away; a model with
``context = "coordinates"`` makes it coordinates of the code.

A source has a modality when its columns are non-null. Bad values raise `InputError`
naming the file, the column and the source_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from latentcat.errors import InputError

# training batches of folds are drawn from windows of this many batches sorted by length
BUCKET_WINDOW = 32
#: Bytes of selected shard arrays a `ShardCache` keeps in memory; shards beyond it are read
#: again each epoch.
CACHE_BYTES = 2 * 1024**3

COLUMNS = {
    "xp": ("xp_flux", "xp_flux_error"),
    "dmdt": ("dmdt", "dmdt_err"),
    "fold": ("fold_phase", "fold_mag", "fold_err"),
}
#: The feature columns each model's context comes from (`dmdt_context`, `fold_context`).
CONTEXT_COLUMNS = {"dmdt": ("g_mean",), "fold": ("period", "period_reliable", "time_span", "g_amplitude")}
#: Feature columns a context takes when the shard has them (features written before they
#: existed lack them; a model that needs them says so).
OPTIONAL_CONTEXT_COLUMNS = {"dmdt": ("colour_slope", "colour_slope_err"), "fold": ("colour_slope", "colour_slope_err")}
#: Smallest amplitude (mag) the context's logarithm takes.
MIN_AMPLITUDE = 1e-3
#: Prior of the colour slope d(BP - RP)/dG (mean, standard deviation) that a source's measured
#: slope is combined with (`colour_coordinate`): between nearly grey binaries (~0) and pulsating
#: stars (~0.5), and as wide as that gap, so a slope measured to better than ~0.1 keeps its
#: value and one that is not measured (no BP or RP epochs, no variability) sits at 0.3.
COLOUR_SLOPE_PRIOR = (0.3, 0.25)


def dmdt_context(g_mean: np.ndarray, colour_slope: np.ndarray | None = None,
                 colour_slope_err: np.ndarray | None = None) -> np.ndarray:
    """What a dm-dt map leaves out, per source: the mean G magnitude ``g_mean`` (mag) and,
    when given, the colour slope (`colour_coordinate`).

    The map holds magnitude differences only, so a bright and a faint source of the same
    variability look alike except for their noise. Returns float32 array (n, 1), or (n, 2)
    with the colour slope.
    """
    cols = [np.asarray(g_mean, np.float64)]
    if colour_slope is not None:
        cols.append(colour_coordinate(colour_slope, colour_slope_err))
    return np.stack(cols, axis=1).astype(np.float32)


def colour_coordinate(colour_slope: np.ndarray, colour_slope_err: np.ndarray) -> np.ndarray:
    """The colour slope d(BP - RP)/dG (`latentcat.features.colour`) combined with
    `COLOUR_SLOPE_PRIOR` by inverse-variance weights: the measured slope where it is precise,
    the prior's mean where it is missing. float64 array (n,)."""
    slope = np.asarray(colour_slope, np.float64)
    err = np.asarray(colour_slope_err, np.float64)
    mean, sd = COLOUR_SLOPE_PRIOR
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.isfinite(slope) & np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
    return (w * np.nan_to_num(slope) + mean / sd**2) / (w + 1 / sd**2)


def fold_context(period: np.ndarray, reliable: np.ndarray, time_span: np.ndarray, amplitude: np.ndarray,
                 colour_slope: np.ndarray | None = None, colour_slope_err: np.ndarray | None = None) -> np.ndarray:
    """What the fold stage's normalisation takes away from a light curve, per source, and
    what the G fold does not hold.

    Columns: log10 of the period the curve was folded at (d; twice ``period`` where it is
    reliable, else the time span: `latentcat.features.fold.fold_periods`), log10 of the
    5-95 % amplitude ``g_amplitude`` (mag, at least ``MIN_AMPLITUDE``) and, when given, the
    colour slope (`colour_coordinate`).

    Returns
    -------
    float32 array (n, 2), or (n, 3) with the colour slope
    """
    from latentcat.features.fold import fold_periods

    fold_period = fold_periods(np.asarray(period, np.float64), np.asarray(reliable, bool), np.asarray(time_span, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = [np.log10(fold_period), np.log10(np.maximum(np.asarray(amplitude, np.float64), MIN_AMPLITUDE))]
        if colour_slope is not None:
            cols.append(colour_coordinate(colour_slope, colour_slope_err))
        return np.stack(cols, axis=1).astype(np.float32)


def list_shards(features_dir: Path) -> list[Path]:
    """The ``features-*.parquet`` shards of a features folder, in name order."""
    features_dir = Path(features_dir)
    shards = sorted(features_dir.glob("features-*.parquet"))
    if not shards:
        raise InputError(f"{features_dir}: no features-*.parquet shards found")
    return shards


def validation_mask(source_id: np.ndarray, fraction: float) -> np.ndarray:
    """True for sources in the validation split, decided by a hash of source_id alone.

    The hash is splitmix64's finaliser, so the split is the same whatever the shard
    layout, the row order or the seed.
    """
    return validation_mask_value(source_id) < fraction


def sample_key(source_id: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per source, from a hash of its source_id alone (salted, so it
    is independent of `validation_mask`): sources with the smallest keys form a training sample."""
    return validation_mask_value(np.asarray(source_id, np.int64) ^ np.int64(0x5DEECE66D))


def validation_mask_value(source_id: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of source_id as a float in [0, 1)."""
    with np.errstate(over="ignore"):
        h = np.asarray(source_id, dtype=np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


#: Magnitude bins of the training sample: 1 mag wide in G (sources without a G mean, XP only,
#: form one more bin).
SAMPLE_BIN_EDGES = np.arange(8.0, 21.5, 1.0)


def magnitude_bin(g_mean: np.ndarray) -> np.ndarray:
    """Training-sample stratum of each source: its 1-mag G bin (`SAMPLE_BIN_EDGES`), or the last
    stratum without a G mean."""
    g = np.asarray(g_mean, np.float64)
    b = np.clip(np.digitize(g, SAMPLE_BIN_EDGES), 0, len(SAMPLE_BIN_EDGES))
    return np.where(np.isfinite(g), b, len(SAMPLE_BIN_EDGES) + 1)


def sample_cuts(bins: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Per stratum, the largest `sample_key` in a sample of ``n`` sources drawn in proportion
    to the strata's sizes (each stratum keeps its sources with the smallest keys).

    Returns float (n_strata,): a source is in the sample when its key is <= its stratum's cut
    (-1 for a stratum with none taken; every stratum is whole when ``n`` is not smaller than
    the number of sources).
    """
    n_strata = len(SAMPLE_BIN_EDGES) + 2
    cuts = np.full(n_strata, -1.0)
    total = len(keys)
    for s in range(n_strata):
        k = np.sort(keys[bins == s])
        if k.size == 0:
            continue
        take = k.size if n >= total else int(round(n * k.size / total))
        if take > 0:
            cuts[s] = k[min(take, k.size) - 1]
    return cuts


@dataclass
class ModalityArrays:
    """One shard's data for one modality.

    Attributes
    ----------
    path : Path
        The shard it came from.
    source_id : ndarray (n_rows,) int64
        Every row of the shard.
    present : ndarray (n_rows,) bool
        Rows that have this modality.
    values : dict of ndarray
        For the rows with the modality only: ``x``, ``err`` (n, in_dim) float32 for xp/dmdt;
        ``offsets`` (n + 1,) int64 and flat ``phase``, ``mag``, ``err`` float32 for fold; and
        ``context`` float32 (dmdt (n, 1), `dmdt_context`; fold (n, 2), `fold_context`) when
        the shard has its columns.
    """

    path: Path
    source_id: np.ndarray
    present: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        """Number of rows with this modality."""
        return int(self.present.sum())

    def select(self, keep: np.ndarray) -> "ModalityArrays":
        """The subset of present rows where ``keep`` (length n) is True."""
        keep = np.asarray(keep, dtype=bool)
        present = self.present.copy()
        present[present] = keep
        if "offsets" not in self.values:
            values = {k: v[keep] for k, v in self.values.items()}
        else:
            off = self.values["offsets"]
            lengths = np.diff(off)[keep]
            flat = _ragged_index(off[:-1][keep], lengths)
            values = {k: self.values[k][flat] for k in ("phase", "mag", "err")}
            values["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            if "context" in self.values:
                values["context"] = self.values["context"][keep]
        return ModalityArrays(self.path, self.source_id, present, values)


def _ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of the ranges [start, start + length) concatenated, without a loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts - row_start, lengths) + np.arange(total)


def _column(table: pa.Table, name: str, path: Path) -> pa.Array:
    if name not in table.column_names:
        raise InputError(f"{path}: missing column {name}")
    return table.column(name).combine_chunks()


def _first_bad(path: Path, column: str, source_id: np.ndarray, bad: np.ndarray, what: str) -> InputError:
    sid = int(source_id[np.argmax(bad)])
    return InputError(f"{path}: column {column}, source_id {sid}: {what}")


def load_modality(path: Path, modality: str, in_dim: int | None = None) -> ModalityArrays:
    """Read and check one modality of one feature shard.

    Parameters
    ----------
    path : Path
        A ``features-NNNNN.parquet`` shard.
    modality : {'xp', 'dmdt', 'fold'}
    in_dim : int, optional
        Required vector length for xp/dmdt (default: 110 / 200).

    Returns
    -------
    ModalityArrays
    """
    path = Path(path)
    columns = [*COLUMNS[modality], *CONTEXT_COLUMNS.get(modality, ()), *OPTIONAL_CONTEXT_COLUMNS.get(modality, ())]
    try:
        schema_names = pq.read_schema(path).names
        table = pq.read_table(path, columns=["source_id", *[c for c in columns if c in schema_names]])
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: cannot read Parquet file ({exc})") from None
    return modality_arrays(table, modality, in_dim, path)


def modality_arrays(table: pa.Table, modality: str, in_dim: int | None = None,
                    path: Path | str = "features") -> ModalityArrays:
    """Check one modality of a features table (`latentcat.features.extract.FEATURES_SCHEMA`)
    and return its arrays: `load_modality` for a table in memory; ``path`` names it in errors."""
    columns = COLUMNS[modality]
    schema_names = table.column_names
    if "source_id" not in table.column_names:
        raise InputError(f"{path}: missing column source_id")
    source_id = table.column("source_id").to_numpy().astype(np.int64)
    arrays = {c: _column(table, c, path) for c in columns}
    nulls = {c: np.asarray(arrays[c].is_null()) for c in columns}
    present = ~nulls[columns[0]]
    for c in columns[1:]:
        mismatch = nulls[c] != ~present
        if mismatch.any():
            raise _first_bad(path, c, source_id, mismatch, f"null where {columns[0]} is not (or the reverse)")
    lengths = {c: np.asarray(pc.list_value_length(arrays[c].filter(pa.array(present)))).astype(np.int64) for c in columns}
    flat = {
        c: np.asarray(arrays[c].filter(pa.array(present)).flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        for c in columns
    }
    sid = source_id[present]
    if modality in ("xp", "dmdt"):
        dim = in_dim or (110 if modality == "xp" else 200)
        for c in columns:
            if (lengths[c] != dim).any():
                raise _first_bad(path, c, sid, lengths[c] != dim, f"expected {dim} values, got {lengths[c][lengths[c] != dim][0]}")
        x = flat[columns[0]].reshape(-1, dim)
        err = flat[columns[1]].reshape(-1, dim)
        for c, v in ((columns[0], x), (columns[1], err)):
            bad = ~np.isfinite(v).all(axis=1)
            if bad.any():
                raise _first_bad(path, c, sid, bad, "NaN, infinite or null value")
        if (err < 0).any():
            raise _first_bad(path, columns[1], sid, (err < 0).any(axis=1), "negative uncertainty")
        return ModalityArrays(path, source_id, present,
                              {"x": x, "err": err, **_context(table, path, schema_names, modality, present, sid)})

    n = lengths["fold_phase"]
    for c in columns[1:]:
        if (lengths[c] != n).any():
            raise _first_bad(path, c, sid, lengths[c] != n, "length differs from fold_phase")
    if (n == 0).any():
        raise _first_bad(path, "fold_phase", sid, n == 0, "empty fold")
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    row = np.repeat(np.arange(len(n)), n)
    for c in columns:
        bad_point = ~np.isfinite(flat[c])
        if c == "fold_phase":
            bad_point |= (flat[c] < 0) | (flat[c] >= 1)
        if c == "fold_err":
            bad_point |= flat[c] < 0
        if bad_point.any():
            bad = np.zeros(len(n), dtype=bool)
            bad[row[bad_point]] = True
            what = "value outside [0, 1)" if c == "fold_phase" else "NaN, infinite, null or negative value"
            raise _first_bad(path, c, sid, bad, what)
    values = {"offsets": offsets, "phase": flat["fold_phase"], "mag": flat["fold_mag"], "err": flat["fold_err"]}
    return ModalityArrays(path, source_id, present, {**values, **_context(table, path, schema_names, modality, present, sid)})


def _context(table: pa.Table, path: Path, schema_names: list[str], modality: str, present: np.ndarray,
             sid: np.ndarray) -> dict[str, np.ndarray]:
    """``{"context": array}`` of the present rows, or {} where the shard lacks its columns."""
    columns = CONTEXT_COLUMNS.get(modality, ())
    if not columns or not all(c in schema_names for c in columns):
        return {}
    optional = OPTIONAL_CONTEXT_COLUMNS.get(modality, ())
    if all(c in schema_names for c in optional):
        columns = (*columns, *optional)
    table = table.select(list(columns)).filter(pa.array(present))
    values = [table.column(c).to_numpy(zero_copy_only=False) for c in columns]
    context = dmdt_context(*values) if modality == "dmdt" else fold_context(*values)
    bad = ~np.isfinite(context).all(axis=1)
    if bad.any():
        what = "no finite mean magnitude" if modality == "dmdt" else "no finite fold period or amplitude"
        raise _first_bad(path, ", ".join(columns), sid, bad, what)
    return {"context": context}


def make_batch(arrays: ModalityArrays, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of rows ``idx`` (positions among the present rows); folds are padded to the longest.

    Fold points are sorted by phase within each source; padding holds zeros and
    ``mask`` is False there.
    """
    v = arrays.values
    if "offsets" not in v:
        return {k: torch.from_numpy(v[k][idx]).to(device) for k in ("x", "err", "context") if k in v}
    starts = v["offsets"][idx]
    length = v["offsets"][idx + 1] - starts
    width = int(length.max())
    pos = np.arange(width)
    mask = pos[None, :] < length[:, None]
    gather = np.where(mask, starts[:, None] + pos[None, :], 0)
    phase = np.where(mask, v["phase"][gather], np.inf)
    order = np.argsort(phase, axis=1, kind="stable")
    gather = np.take_along_axis(gather, order, axis=1)
    out = {}
    for key in ("phase", "mag", "err"):
        out[key] = torch.from_numpy(np.where(mask, v[key][gather], 0.0).astype(np.float32)).to(device)
    out["mask"] = torch.from_numpy(mask).to(device)
    out["length"] = torch.from_numpy(length.astype(np.int64)).to(device)
    if "context" in v:
        out["context"] = torch.from_numpy(v["context"][idx]).to(device)
    return out


def iter_batches(
    shards: Sequence[Path],
    modality: str,
    batch_size: int,
    *,
    split: str | None = None,
    val_fraction: float = 0.1,
    rng: np.random.Generator | None = None,
    in_dim: int | None = None,
    device: torch.device | str = "cpu",
    sample: np.ndarray | None = None,
    cache: "ShardCache | None" = None,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(source_id, batch)`` over the shards, one shard in memory at a time (all that
    fit, with ``cache``).

    Parameters
    ----------
    split : {'train', 'val', None}
        Keep only the training or validation sources (see `validation_mask`); None keeps all.
    sample : float array, optional
        Per-stratum cuts (`sample_cuts`): keep only the sources of the training sample.
    rng : numpy Generator, optional
        When given, the shard order and the rows within each shard are shuffled. Folds
        are batched by length either way (see `batch_indices`).
    cache : ShardCache, optional
        Keeps each shard's selected rows for the next pass over the same shards and arguments
        (training epochs), instead of reading the shard again; the batches are the same.
    """
    order = np.arange(len(shards)) if rng is None else rng.permutation(len(shards))
    for s in order:
        key = (str(shards[s]), modality, split, val_fraction, in_dim, None if sample is None else sample.tobytes())
        arrays = cache.get(key) if cache is not None else None
        if arrays is None:
            arrays = load_modality(shards[s], modality, in_dim)
            if sample is not None:
                arrays = arrays.select(in_sample(shards[s], arrays, sample))
            if split is not None:
                is_val = validation_mask(arrays.source_id[arrays.present], val_fraction)
                arrays = arrays.select(is_val if split == "val" else ~is_val)
            if cache is not None:
                cache.put(key, arrays)
        sid = arrays.source_id[arrays.present]
        for idx in batch_indices(arrays, batch_size, rng):
            yield sid[idx], make_batch(arrays, idx, device)


class ShardCache:
    """The selected rows of each shard one model trains on, kept in memory across epochs up to
    ``max_bytes`` (`CACHE_BYTES`): a small survey is read from Parquet once, not once per epoch
    and per validation pass; above the budget the remaining shards are streamed as before."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._arrays: dict = {}

    def get(self, key) -> ModalityArrays | None:
        """The arrays kept under ``key``, or None."""
        return self._arrays.get(key)

    def put(self, key, arrays: ModalityArrays) -> None:
        """Keep ``arrays`` under ``key`` if they fit in what is left of the budget."""
        size = arrays.source_id.nbytes + arrays.present.nbytes + sum(v.nbytes for v in arrays.values.values())
        if self.bytes + size <= self.max_bytes:
            self._arrays[key] = arrays
            self.bytes += size


def in_sample(path: Path, arrays: ModalityArrays, cuts: np.ndarray) -> np.ndarray:
    """Which present rows of one shard's modality are in the training sample of ``cuts``."""
    sid = arrays.source_id[arrays.present]
    return sample_key(sid) <= cuts[magnitude_bin(shard_g_mean(path, arrays))]


def shard_g_mean(path: Path, arrays: ModalityArrays) -> np.ndarray:
    """The ``g_mean`` of the present rows of ``arrays`` (NaN where the shard has none)."""
    if "g_mean" not in pq.read_schema(path).names:
        return np.full(arrays.n, np.nan)
    g = pq.read_table(path, columns=["g_mean"]).column("g_mean").combine_chunks()
    return np.asarray(g.to_numpy(zero_copy_only=False), np.float64)[arrays.present]


def batch_indices(arrays: ModalityArrays, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Row positions of each batch; fold batches group sources of similar length.

    Padding a batch of folds to its longest curve costs time in the GRU and the decoder,
    so fold rows are sorted by number of points before they are cut into batches. With
    ``rng`` (training) the rows are shuffled first and sorted only within windows of
    `BUCKET_WINDOW` batches, and the batch order is shuffled, so every batch is still a
    random draw of sources of similar length. Fixed-length modalities are cut in order
    (or shuffled with ``rng``). Each source is encoded on its own (no batch statistics),
    so when encoding the grouping changes speed, not results.
    """
    n = arrays.n
    rows = np.arange(n) if rng is None else rng.permutation(n)
    if "offsets" in arrays.values:
        length = np.diff(arrays.values["offsets"])
        if rng is None:
            rows = np.argsort(length, kind="stable")
        else:
            window = BUCKET_WINDOW * batch_size
            for lo in range(0, n, window):
                chunk = rows[lo : lo + window]
                rows[lo : lo + window] = chunk[np.argsort(length[chunk], kind="stable")]
    batches = [rows[start : start + batch_size] for start in range(0, n, batch_size)]
    if rng is not None and "offsets" in arrays.values:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
