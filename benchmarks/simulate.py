"""Speed of the survey simulator in sources per second.

Usage: python benchmarks/simulate.py [N ...]   (default: 20000)

For each size, ``simulate_tables(N, seed=0)`` then ``write_tables`` into a temporary folder
(Parquet epoch photometry; together what ``simulate_survey`` does), split into: XP spectra (``latentcat.gaia.simulate_xp``), the rest of the
simulation, and writing the files. Run on one core (the simulator is single-threaded numpy).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from latentcat.gaia import simulate as sim


def run(n: int, seed: int = 0) -> dict:
    """Time ``simulate_tables`` (its XP part separately) and ``write_tables``."""
    xp_seconds = []
    original = sim._simulate_xp

    def timed_xp(*args, **kwargs):
        t = time.perf_counter()
        out = original(*args, **kwargs)
        xp_seconds.append(time.perf_counter() - t)
        return out

    sim._simulate_xp = timed_xp
    try:
        t0 = time.perf_counter()
        tables = sim.simulate_tables(n, seed)
        t_tables = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            sim.write_tables(tables, Path(tmp))
            t_write = time.perf_counter() - t0
    finally:
        sim._simulate_xp = original
    return {"epochs": int(tables["epoch_photometry"].column("n_transits").to_numpy().sum()),
            "with_xp": int(tables["truth"].column("has_xp").to_numpy(zero_copy_only=False).sum()),
            "tables": t_tables, "xp": xp_seconds[0], "write": t_write}


def main(argv: list[str]) -> None:
    """Print one table row per size given on the command line."""
    sizes = [int(a) for a in argv] or [20_000]
    sim.simulate_tables(100, 0)  # imports and first-call costs out of the timings
    print(f"{'sources':>8} {'epochs':>10} {'with XP':>8} {'XP s':>6} {'other s':>8} {'write s':>8} "
          f"{'total s':>8} {'sources/s':>10} {'sources/s without XP':>21}")
    for n in sizes:
        r = run(n)
        write = r["write"]
        other = r["tables"] - r["xp"]
        print(f"{n:>8,} {r['epochs']:>10,} {r['with_xp']:>8,} {r['xp']:>6.2f} {other:>8.2f} {write:>8.2f} "
              f"{r['tables'] + write:>8.2f} {n / (r['tables'] + write):>10,.0f} {n / (other + write):>21,.0f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main(sys.argv[1:])
