"""Ragged light curves as NaN-padded 2-D arrays.

Every feature function works on a batch of sources at once: row ``i`` of a ``(n_sources,
max_len)`` array holds the epochs of source ``i``, and the unused tail of the row is NaN.
A boolean ``valid`` array of the same shape says which cells hold data.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def list_lengths(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Number of values in each list of an Arrow list column (0 for a null list).

    Parameters
    ----------
    column : pyarrow list array

    Returns
    -------
    numpy.ndarray of int64, one entry per row.
    """
    lengths = pc.list_value_length(column)
    return np.asarray(pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def pad_lists(column: pa.Array | pa.ChunkedArray, dtype=np.float32, width: int | None = None) -> np.ndarray:
    """Turn an Arrow list column into a NaN-padded 2-D array.

    Parameters
    ----------
    column : pyarrow list array
        One list per source; null lists become all-NaN rows.
    dtype : numpy dtype
        Floating dtype of the result (float64 for times, float32 for magnitudes).
    width : int, optional
        Number of columns; at least the longest list (default: the longest list).

    Returns
    -------
    numpy.ndarray of shape (n_rows, width)
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = list_lengths(column)
    n = len(lengths)
    if width is None:
        width = int(lengths.max()) if n else 0
    out = np.full((n, width), np.nan, dtype=dtype)
    if lengths.sum() == 0:
        return out
    values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    cols = np.arange(len(values)) - np.repeat(starts, lengths)
    out[rows, cols] = values
    return out


def compact(keep: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Move the kept cells of each row to its front, keeping their order, and NaN-pad the rest.

    Parameters
    ----------
    keep : bool array (n, m)
        Cells to keep.
    *arrays : float arrays (n, m)
        Arrays to compact in the same way.

    Returns
    -------
    lengths : int64 array (n,)
        Number of kept cells per row.
    compacted : list of arrays (n, max(lengths))
    """
    lengths = keep.sum(axis=1).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    valid = np.arange(width)[None, :] < lengths[:, None]
    out = []
    for a in arrays:
        b = np.take_along_axis(a, order, axis=1)
        b[~valid] = np.nan
        out.append(b)
    return lengths, out


def to_list_array(values: np.ndarray, lengths: np.ndarray, present: np.ndarray, dtype=pa.float32()) -> pa.Array:
    """Build an Arrow list column from a padded 2-D array.

    Parameters
    ----------
    values : array (n, m)
        Row ``i`` holds ``lengths[i]`` values at its front.
    lengths : int array (n,)
        Number of values of each row.
    present : bool array (n,)
        False rows become null lists.
    dtype : pyarrow DataType
        Type of the list items.

    Returns
    -------
    pyarrow.ListArray
    """
    lengths = np.where(present, lengths, 0).astype(np.int64)
    n, m = values.shape if values.ndim == 2 else (len(lengths), 0)
    mask = np.arange(m)[None, :] < lengths[:, None]
    flat = values[mask] if m else np.zeros(0, dtype=np.float32)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets, type=pa.int32()),
        pa.array(flat, type=dtype),
        mask=pa.array(~np.asarray(present, dtype=bool)),
    )
