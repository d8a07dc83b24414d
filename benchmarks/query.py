"""Query speed and quality of a latentcat catalogue.

Builds a synthetic catalogue of --n sources (the schemas of docs/schemas.md, clusters per
class, faint sources without XP), then prints one table:

- open: time to open the catalogue read-only (median of 5), and the first query (index load);
  then one untimed pass of the queries warms the page cache of the memory-mapped index;
- similar(): p50/p99 latency of Catalog.similar by source_id, with and without a where filter;
- faiss: p50 of a bare FAISS search of the same joint index, and the ratio similar / faiss;
- recall@10 of Catalog.similar against exact search (numpy brute force on the same vectors);
- SQL macro: p50/p99 of the exact similar_to() table macro from a bare DuckDB connection.

    python benchmarks/query.py              # 100k sources (a minute or two)
    python benchmarks/query.py --n 1000000  # by hand
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from catalog_fixtures import write_inputs  # noqa: E402

from latentcat.catalog import index as lc_index  # noqa: E402
from latentcat.catalog.store import write_catalog  # noqa: E402
from latentcat.query import open as open_catalog  # noqa: E402


def _timed(fn, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t
    return out * 1e3  # ms


def main(argv: list[str] | None = None) -> None:
    """Build a synthetic catalogue and print the query benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of sources (default 100k)")
    ap.add_argument("--queries", type=int, default=200, help="similar() calls timed")
    ap.add_argument("--sql-queries", type=int, default=20, help="SQL macro calls timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--exact-max", type=int, default=lc_index.EXACT_MAX,
                    help="largest exact index; smaller gives IVF-Flat")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the catalogue here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentcat-bench-")
        args.workdir = Path(tmp.name)
    t = time.perf_counter()
    inputs = write_inputs(args.workdir / "inputs", n=args.n, seed=args.seed, n_shards=4,
                          with_arrays=False, shuffle=True)
    t_inputs = time.perf_counter() - t
    t = time.perf_counter()
    info = write_catalog(args.workdir / "cat", build_info={"seed": args.seed},
                         exact_max=args.exact_max, seed=args.seed, **inputs)
    t_build = time.perf_counter() - t
    joint = info["indexes"]["xp+dmdt+fold"]

    cat_dir = args.workdir / "cat"
    t_open = np.median(_timed(lambda i: open_catalog(cat_dir).close(), 5))
    cat = open_catalog(cat_dir)
    bare = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    rows = bare.sql("SELECT source_id, z FROM embeddings WHERE z IS NOT NULL ORDER BY source_id")
    table = rows.to_arrow_table()
    ids = table.column("source_id").to_numpy()
    x = np.asarray(table.column("z").combine_chunks().values, np.float32).reshape(-1, 15)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(ids), size=args.queries, replace=False)
    k = args.k

    t_first = _timed(lambda i: cat.similar(int(ids[pick[0]]), k=k), 1)[0]
    # the index is memory-mapped: touch the lists these queries probe once, so that every timed
    # row below (Catalog and bare FAISS alike) sees the same warm page cache
    for i in range(args.queries):
        cat.similar(x[pick[i]], k=k, with_meta=False)
    found = {}

    def similar(i):
        found[i] = cat.similar(int(ids[pick[i]]), k=k).column("source_id").to_numpy()

    lat = _timed(similar, args.queries)
    lat_ids = _timed(lambda i: cat.similar(int(ids[pick[i]]), k=k, with_meta=False), args.queries)
    lat_vec = _timed(lambda i: cat.similar(x[pick[i]], k=k, with_meta=False), args.queries)
    lat_where = _timed(lambda i: cat.similar(int(ids[pick[i]]), k=k, where="phot_g_mean_mag < 16"),
                       args.queries)

    index = lc_index.read_index(cat_dir / joint["file"])
    lat_faiss = _timed(lambda i: lc_index.search(index, x[pick[i]], k + 1), args.queries)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as Catalog.similar searches one vector
    lat_faiss_raw = _timed(lambda i: index.search(x[pick[i]][None], k + 1), args.queries)
    faiss.omp_set_num_threads(threads)

    # exact neighbours of the same queries, the query itself excluded
    exact = faiss.IndexFlatL2(15)
    exact.add(x)
    _, nn = exact.search(x[pick], k + 1)
    truth = np.array([[ids[j] for j in row if j != pick[r]][:k] for r, row in enumerate(nn)])
    recall = lc_index.recall_at_k(np.array([found[i] for i in range(args.queries)]), truth)

    n_sql = min(args.sql_queries, args.queries)
    lat_sql = _timed(
        lambda i: bare.execute("SELECT * FROM similar_to(?, ?)", [int(ids[pick[i]]), k]).fetchall(),
        n_sql)

    p = lambda a, q: f"{np.percentile(a, q):8.2f}"  # noqa: E731
    print(f"latentcat query benchmark: n={args.n:,} sources, {len(ids):,} with all blocks, k={k}")
    print(f"joint index: {joint['type']}"
          + (f" nlist={joint['nlist']} nprobe={joint['nprobe']}" if joint["type"] != "flat" else "")
          + f", build recall@10={joint['recall_at_10']}")
    print(f"inputs written in {t_inputs:.1f} s, catalogue built in {t_build:.1f} s")
    print()
    print(f"{'measure':<40}{'p50 ms':>8}{'p99 ms':>9}")
    print(f"{'open (read-only)':<40}{t_open:8.2f}{'':>9}")
    print(f"{'first similar() (loads the index)':<40}{t_first:8.2f}{'':>9}")
    print(f"{'similar(source_id)':<40}{p(lat, 50)} {p(lat, 99)}")
    print(f"{'similar(source_id, with_meta=False)':<40}{p(lat_ids, 50)} {p(lat_ids, 99)}")
    print(f"{'similar(vector, with_meta=False)':<40}{p(lat_vec, 50)} {p(lat_vec, 99)}")
    print(f"{'similar(source_id, where=G<16)':<40}{p(lat_where, 50)} {p(lat_where, 99)}")
    print(f"{'bare faiss index.search (1 thread)':<40}{p(lat_faiss_raw, 50)} {p(lat_faiss_raw, 99)}")
    print(f"{'latentcat.catalog.index.search':<40}{p(lat_faiss, 50)} {p(lat_faiss, 99)}")
    print(f"{'SQL macro similar_to (exact, DuckDB)':<40}{p(lat_sql, 50)} {p(lat_sql, 99)}")
    print()
    ratio = np.median(lat) / np.median(lat_faiss_raw)
    print(f"overhead similar() with metadata / bare faiss (p50): {ratio:.1f}x")
    print(f"overhead similar(source_id, ids and distances only) / bare faiss (p50): "
          f"{np.median(lat_ids) / np.median(lat_faiss_raw):.1f}x")
    print(f"overhead similar(vector, ids and distances only) / bare faiss (p50): "
          f"{np.median(lat_vec) / np.median(lat_faiss_raw):.1f}x")
    print(f"recall@10 of similar() vs exact search ({args.queries} queries): {recall:.4f}")
    cat.close()
    bare.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
