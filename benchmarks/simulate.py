"""Speed of the survey simulator in sources per second, wall-clock and per core.

Usage: python benchmarks/simulate.py [N ...] [--repeat R]   (default: 20000, 2 runs each)

For each size, ``simulate_tables(N, seed=0)`` then ``write_tables`` into a temporary folder
(Parquet epoch photometry; together what ``simulate_survey`` does), split into: XP spectra
(``latentcat.gaia.simulate_xp``), the rest of the simulation, and writing the files.

The simulator is single-threaded numpy; BLAS is held to one thread here (threadpoolctl), so
the CPU time (``time.process_time``, user + system of this process) is one core's work. On a
shared machine the wall-clock rate depends on the load; the CPU rate does not. The target is
10,000 sources/s on one core: at most 100 us of CPU per source, XP and writing included.
The first run of a size in a fresh process also pays the kernel for first-touching its
memory (system time, large on virtual machines); later runs reuse that memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from latentcat.gaia import simulate as sim


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run(n: int, seed: int = 0) -> dict:
    """Time ``simulate_tables`` (its XP part separately) and ``write_tables``: (wall, cpu) seconds each."""
    xp_times = []
    original = sim._simulate_xp

    def timed_xp(*args, **kwargs):
        w, c = _clock()
        out = original(*args, **kwargs)
        w2, c2 = _clock()
        xp_times.append((w2 - w, c2 - c))
        return out

    sim._simulate_xp = timed_xp
    try:
        w0, c0 = _clock()
        tables = sim.simulate_tables(n, seed)
        w1, c1 = _clock()
        with tempfile.TemporaryDirectory() as tmp:
            sim.write_tables(tables, Path(tmp))
            w2, c2 = _clock()
    finally:
        sim._simulate_xp = original
    xp_wall, xp_cpu = xp_times[0]
    return {"epochs": int(tables["epoch_photometry"].column("n_transits").to_numpy().sum()),
            "with_xp": int(tables["truth"].column("has_xp").to_numpy(zero_copy_only=False).sum()),
            "xp": (xp_wall, xp_cpu), "other": (w1 - w0 - xp_wall, c1 - c0 - xp_cpu),
            "write": (w2 - w1, c2 - c1), "total": (w2 - w0, c2 - c0)}


def main(argv: list[str]) -> None:
    """Print one table row per run of each size given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[20_000])
    parser.add_argument("--repeat", type=int, default=2, help="runs per size (default 2)")
    args = parser.parse_args(argv)
    sim.simulate_tables(100, 0)  # imports and first-call costs out of the timings
    print("times in s, wall/cpu; rates in sources/s; cpu = process_time of this process (one core)")
    print(f"{'sources':>8} {'run':>3} {'epochs':>10} {'with XP':>8} {'XP':>11} {'other':>11} {'write':>11} "
          f"{'total':>11} {'wall rate':>10} {'cpu rate':>9} {'cpu us/src':>11} {'XP cpu us/row':>14}")
    for n in args.sizes:
        for run_no in range(1, args.repeat + 1):
            r = run(n)
            cells = " ".join(f"{r[k][0]:>5.2f}/{r[k][1]:<5.2f}" for k in ("xp", "other", "write", "total"))
            wall, cpu = r["total"]
            print(f"{n:>8,} {run_no:>3} {r['epochs']:>10,} {r['with_xp']:>8,} {cells} {n / wall:>10,.0f} "
                  f"{n / cpu:>9,.0f} {cpu / n * 1e6:>11.1f} {r['xp'][1] / max(r['with_xp'], 1) * 1e6:>14.1f}")


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main(sys.argv[1:])
