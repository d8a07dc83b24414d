"""XP continuous -> sampled spectra: latentcat's batched conversion against GaiaXPy.

Usage: python benchmarks/xp.py [N ...]   (default: 1000 5000)

The rows are the real Gaia DR3 XP_CONTINUOUS rows of ``tests/data/gaia_dr3/XP_CONTINUOUS_RAW.csv``
(both bands present), replicated to N rows with distinct source_ids. Both converters get the
same rows already in memory: GaiaXPy a pandas DataFrame with array cells
(``gaiaxpy.convert(df, sampling=XP_SAMPLING, truncation=False, save_file=False)``, through its
internal ``_convert`` with ``disable_info=True`` so no progress bar is drawn),
latentcat an Arrow table (``latentcat.gaia.xp.convert_xp``); both sample BP and RP on the
catalogue's 55-point grid with errors from the full covariance. Times are wall-clock and CPU
(``time.process_time``) with BLAS held to one thread; the last column is the largest
difference between the two results, relative to each spectrum's peak flux or flux error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import threadpool_limits

from latentcat.gaia.xp import XP_SAMPLING, convert_xp

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "gaia_dr3" / "XP_CONTINUOUS_RAW.csv"
ARRAYS = ("coefficients", "coefficient_errors", "coefficient_correlations")


def real_rows() -> pd.DataFrame:
    """The fixture's archive rows with their "(v1, v2, ...)" array cells parsed into float arrays."""
    df = pd.read_csv(FIXTURE)
    for column in [c for c in df.columns if c.endswith(ARRAYS)]:
        df[column] = [np.array(cell.strip("()").split(","), dtype=np.float64) for cell in df[column]]
    return df


def replicate(df: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pa.Table]:
    """``n`` rows cycling through ``df`` with source_ids 1..n, as a DataFrame and as an Arrow table."""
    rows = df.iloc[np.arange(n) % len(df)].reset_index(drop=True)
    rows["source_id"] = np.arange(1, n + 1, dtype=np.int64)
    columns = {"source_id": pa.array(rows["source_id"].to_numpy())}
    for band in ("bp", "rp"):
        for name in ARRAYS:
            values = np.stack(rows[f"{band}_{name}"].to_numpy())
            offsets = pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32))
            columns[f"{band}_{name}"] = pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))
    return rows, pa.table(columns)


def timed(fn, *args, **kwargs):
    """Call ``fn``; return its result, wall seconds and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def largest_difference(ours: pa.Table, ref: pd.DataFrame, n_check: int = 50) -> float:
    """Largest |ours - GaiaXPy| over the first rows, relative to each spectrum's peak value."""
    ref = ref.set_index(["source_id", "xp"])
    worst = 0.0
    for i in range(min(n_check, ours.num_rows)):
        sid = int(ours["source_id"][i].as_py())
        for band in ("bp", "rp"):
            row = ref.loc[(sid, band.upper())]
            for col, ref_col in ((f"{band}_flux", "flux"), (f"{band}_flux_error", "flux_error")):
                got, want = np.array(ours[col][i].as_py()), np.asarray(row[ref_col], dtype=float)
                worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return worst


def main(argv: list[str]) -> None:
    """Print one table row per size."""
    # GaiaXPy's convert() without its progress bar (the public function always draws one)
    from gaiaxpy.converter.converter import _convert as gaiaxpy_convert

    sizes = [int(a) for a in argv] or [1000, 5000]
    base = real_rows()
    _, small = replicate(base, 4)
    convert_xp(small)  # bases and first-call costs out of the timings
    gaiaxpy_convert(replicate(base, 4)[0], sampling=XP_SAMPLING, truncation=False, save_file=False,
                    disable_info=True)
    print(f"real DR3 rows ({FIXTURE.name}) replicated; BP + RP on {XP_SAMPLING.size} samples each; "
          "times wall/cpu s")
    print(f"{'rows':>7} {'gaiaxpy s':>11} {'latentcat s':>12} {'gaiaxpy rows/s cpu':>19} {'latentcat rows/s cpu':>21} "
          f"{'ratio (cpu)':>12} {'max rel diff':>13}")
    for n in sizes:
        frame, table = replicate(base, n)
        ours, w_ours, c_ours = timed(convert_xp, table)
        (ref, _), w_ref, c_ref = timed(gaiaxpy_convert, frame, sampling=XP_SAMPLING, truncation=False,
                                       save_file=False, disable_info=True)
        print(f"{n:>7,} {w_ref:>5.2f}/{c_ref:<5.2f} {w_ours:>6.3f}/{c_ours:<5.3f} {n / c_ref:>19,.0f} "
              f"{n / c_ours:>21,.0f} {c_ref / c_ours:>11.0f}x {largest_difference(ours, ref):>13.1e}")


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main(sys.argv[1:])
