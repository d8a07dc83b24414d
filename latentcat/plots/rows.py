"""Fetching the feature rows of a few sources from the feature shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from latentcat.errors import LatentcatError

SHARD_GLOB = "features-*.parquet"


def read_feature_rows(features_dir: Path, source_ids: Sequence[int]) -> pa.Table:
    """The feature rows of the given sources, in the order given.

    Only the row groups whose ``source_id`` statistics can hold a wanted id are read, so a
    handful of sources comes back quickly from a large feature folder.

    Parameters
    ----------
    features_dir : Path
        Folder of ``features-NNNNN.parquet`` shards (docs/schemas.md, "Features").
    source_ids : sequence of int
        Gaia source_ids; repeats are allowed and repeated in the answer.

    Returns
    -------
    pyarrow.Table
        One row per requested id, in the requested order, with the shards' columns.

    Raises
    ------
    LatentcatError
        No shards in ``features_dir``, or an id that is in none of them (the first one is named).
    """
    features_dir = Path(features_dir)
    shards = sorted(features_dir.glob(SHARD_GLOB))
    if not shards:
        raise LatentcatError(f"{features_dir}: no {SHARD_GLOB} feature shards found")
    wanted = np.asarray(source_ids, dtype=np.int64).reshape(-1)
    unique = np.unique(wanted)
    dataset = ds.dataset([str(p) for p in shards], format="parquet")
    table = dataset.to_table(filter=pc.field("source_id").isin(pa.array(unique, pa.int64())))
    found = table.column("source_id").to_numpy()
    order = np.argsort(found, kind="stable")
    found_sorted = found[order]
    pos = np.minimum(np.searchsorted(found_sorted, wanted), max(found_sorted.size - 1, 0))
    hit = found_sorted[pos] == wanted if found_sorted.size else np.zeros(wanted.size, bool)
    if not hit.all():
        raise LatentcatError(f"{features_dir}: source_id {int(wanted[~hit][0])} is not in the feature shards")
    if np.unique(found).size != found.size:
        dup = found_sorted[1:][found_sorted[1:] == found_sorted[:-1]][0]
        raise LatentcatError(f"{features_dir}: source_id {int(dup)} appears in more than one feature row")
    return table.take(pa.array(order[pos], pa.int64()))
