"""Speed and peak memory of the ingest stage on simulated archive files.

Usage: python benchmarks/ingest.py [N ...] [--chunk-rows R] [--seed S]   (default: 2000 10000)

For each size N, ``simulate_survey(N)`` writes the archive products (bulk epoch photometry
as Parquet, XP continuous spectra, gaia_source and vari_classifier_result CSVs) into a
temporary folder; then ``latentcat.gaia.ingest.ingest`` runs on that folder in a fresh
Python process. The table gives sources/s and G epochs/s (input G transits) of the ingest,
its CPU time (the child's user + system time, DuckDB's threads included) and the PEAK
RESIDENT MEMORY of that process (``ru_maxrss`` from ``os.wait4``, the per-child form of
``getrusage(RUSAGE_CHILDREN)``). A first row gives the peak memory of a process that only
imports the ingest module, the floor under every other row. Linux counts the parent's
resident memory at the fork in a child's peak, so the survey is simulated in a child as well
and this process stays small.

``ingest`` reads its inputs in batches of ``chunk_rows`` (bulk-array and XP rows count
``WIDE_ROW_WEIGHT`` times), so the peak memory should follow ``--chunk-rows``, not N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_INGEST = """
import json, sys, time
from pathlib import Path
from latentcat.gaia.ingest import ingest
wall, cpu = time.perf_counter(), time.process_time()
report = ingest([Path(sys.argv[1])], Path(sys.argv[2]), chunk_rows=int(sys.argv[3]))
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "rows": {t: v["rows"] for t, v in report["tables"].items()}}))
"""
CHILD_IMPORT = "import latentcat.gaia.ingest\n"
CHILD_SIMULATE = """
import json, sys
from pathlib import Path
import pyarrow.compute as pc
import pyarrow.parquet as pq
from latentcat.gaia.simulate import simulate_survey
sim = Path(sys.argv[1])
simulate_survey(int(sys.argv[2]), int(sys.argv[3]), sim)
epochs = pc.sum(pq.read_table(sim / "truth.parquet", columns=["n_g_transits"]).column("n_g_transits")).as_py()
print(json.dumps({"epochs": int(epochs), "bytes": sum(p.stat().st_size for p in (sim / "archive").iterdir())}))
"""


def run_child(code: str, *args: str) -> tuple[str, float, float]:
    """Run ``code`` in a fresh interpreter; return its stdout, peak RSS (MiB) and CPU seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, peak RSS included
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"child failed:\n{err.read()}")
        return out.read(), usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> None:
    """Print one table row per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2000, 10000])
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="ingest chunk_rows (default: ingest's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    _, base_rss, _ = run_child(CHILD_IMPORT)
    print(f"ingest of simulated archive files, chunk_rows={args.chunk_rows:,}; "
          f"peak RSS of a process that only imports the ingest: {base_rss:,.0f} MiB")
    print(f"{'sources':>8} {'G epochs':>10} {'input MB':>9} {'wall s':>7} {'cpu s':>6} {'sources/s':>10} "
          f"{'epochs/s':>10} {'peak RSS MiB':>13} {'above import':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            sim = Path(tmp) / f"sim{n}"
            # simulated in a child too: a child's peak RSS includes its parent's at the fork
            sim_out, _, _ = run_child(CHILD_SIMULATE, str(sim), str(n), str(args.seed))
            s = json.loads(sim_out.strip().splitlines()[-1])
            epochs, size_mb = s["epochs"], s["bytes"] / 1e6
            out, rss, child_cpu = run_child(CHILD_INGEST, str(sim / "archive"), str(Path(tmp) / f"stage{n}"),
                                            str(args.chunk_rows))
            r = json.loads(out.strip().splitlines()[-1])
            if r["rows"].get("light_curves") != n:
                raise SystemExit(f"ingest wrote {r['rows']} rows for {n} sources")
            print(f"{n:>8,} {epochs:>10,} {size_mb:>9,.0f} {r['wall']:>7.2f} {r['cpu']:>6.2f} "
                  f"{n / r['wall']:>10,.0f} {epochs / r['wall']:>10,.0f} {rss:>13,.0f} {rss - base_rss:>13,.0f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - start:.0f} s in all)")
