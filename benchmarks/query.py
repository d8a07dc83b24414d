"""Query speed and quality of a latentcat catalogue, each measure beside its target.

Builds a synthetic catalogue of --n sources (the schemas of docs/schemas.md, clusters per
class, faint sources without XP, 8% without a colour), then prints:

- the catalogue: sources, the joint search-space index (flat or IVF, nprobe, build recall),
  the time to open it and the first query (which loads source_meta and the search space);
- p50/p99 latencies, each as a ratio to a bare FAISS search of the same index (index.search,
  one thread, the index as latentcat opens it), measured interleaved (one of each per query,
  in turn) so that a busy machine slows every row alike:
  similar(vector, with_meta=False), similar(source_id, with_meta=False), similar(source_id)
  with every source_meta column and with the four of `FEW_COLUMNS` (with_meta as a list), the
  first with a where filter that ~20% of the sources pass, and bare FAISS as
  latentcat opened memory-mapped IVF indexes before (FAISS's 32 prefetch threads per search);
- batch: one Catalog.similar call for --batch source_ids against as many single calls
  (metadata joined in both), as a throughput ratio;
- like(): a set of 40 sources of one class, its time and its self-check;
- recall@10 of similar() against exact search (FAISS flat, same vectors);
- SQL: a plain DuckDB scan of the search-space vectors (one FLOAT[16] column, the query a
  constant), every macro (similar_to, the indexed similar_to_approx with its recall against
  similar_to, the latent macros, similar_to_many and similar_to_many_approx of 100 ids), and
  the plain scan, similar_to and similar_to_approx again in the ``duckdb`` shell (DuckDB 1.x).

    OMP_NUM_THREADS=1 python3 benchmarks/query.py --n 100000                     # flat indexes
    OMP_NUM_THREADS=1 python3 benchmarks/query.py --n 100000 --exact-max 50000   # IVF-Flat
    OMP_NUM_THREADS=1 python3 benchmarks/query.py --n 4000000 --workdir /data/q4m --sql-only   # the SQL rows
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))  # the latentcat of this checkout
from catalog_fixtures import write_inputs  # noqa: E402

from latentcat.catalog import index as lc_index  # noqa: E402
from latentcat.catalog.store import write_catalog  # noqa: E402
from latentcat.query import open as open_catalog  # noqa: E402

JOINT = ("xp", "dmdt", "fold", "colour")
FEW_COLUMNS = ["phot_g_mean_mag", "bp_rp", "best_class_name", "period"]


def _timed(fn, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t
    return out * 1e3  # ms


def _interleaved(fns: dict, repeats: int) -> dict[str, np.ndarray]:
    """Latencies (ms) of several calls, one of each per query in turn."""
    out = {name: np.empty(repeats) for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(i)
            out[name][i] = time.perf_counter() - t
    return {name: v * 1e3 for name, v in out.items()}


def _sql_side(cat_dir: Path, q_ids: list[int], k: int) -> list[tuple[str, float, str]]:
    """(name, p50 ms, note) of the plain scan and each SQL macro, through DuckDB in Python."""
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    full = con.execute("SELECT part_set FROM space_query WHERE parts = 'xp+dmdt+fold+colour' LIMIT 1").fetchone()[0]
    vec = {sid: con.execute("SELECT v::VARCHAR FROM space_query WHERE source_id = ?", [sid]).fetchone()[0] for sid in q_ids}
    codes = {sid: con.execute("SELECT z::VARCHAR || '::FLOAT[15]' FROM embeddings WHERE source_id = ?",
                              [sid]).fetchone()[0] for sid in q_ids}

    def p50(sql) -> float:  # sql(source_id) -> text: ids as literals, as a user or the shell writes them
        con.execute(sql(q_ids[0])).fetchall()
        return float(np.median(_timed(lambda i: con.execute(sql(q_ids[i])).fetchall(), len(q_ids))))

    rows = [("plain scan: array_distance over one FLOAT[16] column",
             p50(lambda sid: f"SELECT source_id, array_distance(v, {vec[sid]}::FLOAT[16]) AS d FROM space_search "
                             f"WHERE part_set = {full} ORDER BY d, source_id LIMIT {k + 1}"),
             "the rows of the query's part set, the vector a constant")]
    exact = {sid: [r[0] for r in con.execute(f"SELECT source_id FROM similar_to({sid}, {k})").fetchall()] for sid in q_ids}
    rows.append(("similar_to(id, k): exact", p50(lambda sid: f"SELECT * FROM similar_to({sid}, {k})"), "<= 1.5x plain"))
    approx = {sid: [r[0] for r in con.execute(f"SELECT source_id FROM similar_to_approx({sid}, {k}, NULL)").fetchall()]
              for sid in q_ids}
    recall = np.mean([len(set(approx[s]) & set(exact[s])) / max(1, len(exact[s])) for s in q_ids])
    nprobe = con.execute(f"SELECT any_value(nprobe), count(*) FROM space_lists WHERE part_set = {full}").fetchone()
    t_approx = p50(lambda sid: f"SELECT * FROM similar_to_approx({sid}, {k}, NULL)")
    rows.append(("similar_to_approx(id, k, NULL): IVF lists in DuckDB", t_approx,
                 f"recall@10 {recall:.3f} vs similar_to; nprobe {nprobe[0]} of {nprobe[1]} lists; "
                 f"{rows[1][1] / t_approx:.1f}x faster than exact (target >= 20x, recall >= 0.95)"))
    for name in ("similar_to_latents", "similar_to_fold", "similar_to_available"):
        rows.append((f"{name}(id, k)", p50(lambda sid, m=name: f"SELECT * FROM {m}({sid}, {k})"),
                     "latent codes (embeddings table)"))
    rows.append(("similar_to_vector(z, k)", p50(lambda sid: f"SELECT * FROM similar_to_vector({codes[sid]}, {k})"), ""))
    many = [int(s) for s in con.execute("SELECT source_id FROM space WHERE parts <> '' "
                                        "ORDER BY hash(source_id) LIMIT 100").fetchnumpy()["source_id"]]
    for name, sql, target in (("similar_to_many(100 ids, k): exact", "SELECT * FROM similar_to_many(?, ?)", "<= 10 s at 4M"),
                              ("similar_to_many_approx(100 ids, k, NULL)", "SELECT * FROM similar_to_many_approx(?, ?, NULL)", "")):
        t = time.perf_counter()
        con.execute(sql, [many, k]).fetchall()
        rows.append((name, (time.perf_counter() - t) * 1e3, target))
    con.close()
    return rows


def _shell_side(cat_dir: Path, q_ids: list[int], k: int) -> list[tuple[str, float, str]]:
    """The plain scan, similar_to and similar_to_approx timed by the ``duckdb`` shell (DuckDB 1.x), p50 of 5."""
    import re
    import shutil
    import subprocess

    beside = Path(sys.executable).parent / "duckdb"
    shell = str(beside) if beside.is_file() else shutil.which("duckdb")
    if shell is None:
        return []
    db = cat_dir / "catalog.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    vec = {sid: con.execute("SELECT v::VARCHAR FROM space_query WHERE source_id = ?", [sid]).fetchone()[0] for sid in q_ids}
    full = con.execute("SELECT part_set FROM space_query WHERE source_id = ?", [q_ids[0]]).fetchone()[0]
    con.close()
    version = subprocess.run([shell, "--version"], capture_output=True, text=True).stdout.split()[0]
    queries = {
        "plain scan": [f"SELECT source_id, array_distance(v, '{vec[s]}'::FLOAT[16]) AS d FROM space_search "
                       f"WHERE part_set = {full} ORDER BY d, source_id LIMIT {k + 1};" for s in q_ids],
        "similar_to": [f"SELECT * FROM similar_to({s}, {k});" for s in q_ids],
        "similar_to_approx": [f"SELECT * FROM similar_to_approx({s}, {k}, NULL);" for s in q_ids],
    }
    rows = []
    for name, statements in queries.items():
        script = ".timer on\n.output /dev/null\n" + "\n".join(statements[:1] + statements) + "\n"
        run = subprocess.run([shell, "-readonly", str(db)], input=script, capture_output=True, text=True, timeout=600)
        times = [float(t) for t in re.findall(r"Run Time \(s\): real ([0-9.]+)", run.stdout + run.stderr)][1:]
        if times:
            rows.append((f"shell {version}: {name}", float(np.median(times)) * 1e3, "x: against the shell's plain scan"))
    return rows


def _print_sql(rows: list[tuple[str, float, str]], n_queries: int, bare_ms: float | None) -> None:
    """The SQL table: each row's p50 and its ratio to the plain scan (the shell's rows to the shell's)."""
    print()
    print(f"SQL (DuckDB {duckdb.__version__}, its default threads; the same {n_queries} sources with every part "
          f"as queries)")
    print(f"{'measure':<58}{'p50 ms':>10}{'x plain':>9}   note")
    plain = {False: rows[0][1], True: next((ms for name, ms, _ in rows if name.startswith("shell")), 1.0)}
    for name, ms, note in rows:
        print(f"{name:<58}{ms:10.1f}{ms / plain[name.startswith('shell')]:9.2f}   {note}")
    if bare_ms is not None:
        print(f"  (bare FAISS on the same index: {bare_ms:.3f} ms p50)")


def main(argv: list[str] | None = None) -> None:
    """Build a synthetic catalogue and print the query benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of sources (default 100k)")
    ap.add_argument("--queries", type=int, default=300, help="queries timed per latency row")
    ap.add_argument("--batch", type=int, default=10_000, help="queries of the batch row")
    ap.add_argument("--sql-queries", type=int, default=20, help="similar_to calls timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--exact-max", type=int, default=lc_index.EXACT_MAX,
                    help="largest exact index; smaller gives IVF-Flat")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the catalogue here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sql-only", action="store_true", help="print the SQL rows only (the macros, the shell)")
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentcat-bench-")
        args.workdir = Path(tmp.name)
    cat_dir = args.workdir / "cat"
    t = time.perf_counter()
    if not (cat_dir / "catalog.duckdb").is_file():  # a catalogue kept in --workdir is reused
        inputs = write_inputs(args.workdir / "inputs", n=args.n, seed=args.seed, n_shards=4,
                              with_arrays=False, shuffle=True)
        write_catalog(cat_dir, build_info={"seed": args.seed}, exact_max=args.exact_max,
                      seed=args.seed, **inputs)
    t_build = time.perf_counter() - t
    k = args.k

    if args.sql_only:
        con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
        ids = [int(r[0]) for r in con.execute("SELECT source_id FROM space WHERE parts = 'xp+dmdt+fold+colour' "
                                              f"ORDER BY hash(source_id + {args.seed}) LIMIT {args.sql_queries}").fetchall()]
        con.close()
        _print_sql(_sql_side(cat_dir, ids, k) + _shell_side(cat_dir, ids[:5], k), len(ids), None)
        return
    t_open = np.median(_timed(lambda i: open_catalog(cat_dir).close(), 5))
    cat = open_catalog(cat_dir)
    info = cat.info()["build_info"]["indexes"][lc_index.index_key(JOINT, True)]
    space = cat.sql("SELECT source_id, parts, list_concat(list_concat(list_concat(s_xp, s_dmdt), s_fold), s_colour) "
                    "AS v FROM space WHERE parts <> '' ORDER BY source_id")
    all_ids = space.column("source_id").to_numpy()
    full = pc.equal(space.column("parts"), "+".join(JOINT)).to_numpy(zero_copy_only=False)
    ids = all_ids[full]
    v = space.filter(full).column("v").combine_chunks()
    x = v.flatten().to_numpy().astype(np.float32).reshape(len(v), -1)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(ids), size=args.queries, replace=False)
    q_ids = [int(s) for s in ids[pick]]
    q_x = x[pick]

    t = time.perf_counter()
    cat.similar(q_ids[0], k=k)
    t_first = (time.perf_counter() - t) * 1e3

    g = np.sort(cat.sql("SELECT phot_g_mean_mag FROM source_meta WHERE phot_g_mean_mag IS NOT NULL")
                .column("phot_g_mean_mag").to_numpy())
    where = f"phot_g_mean_mag < {g[int(0.2 * len(g))]:.3f}"
    passing = cat.sql(f"SELECT count(*) AS n FROM source_meta WHERE {where}").column("n")[0].as_py()
    total = cat.sql("SELECT count(*) AS n FROM source_meta").column("n")[0].as_py()

    index = cat._index(JOINT, space=True)  # the index the Catalog searches
    before = faiss.read_index(str(cat_dir / info["file"]), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    threads = faiss.omp_get_max_threads()

    def bare(i, idx=index):
        faiss.omp_set_num_threads(1)
        idx.search(q_x[i][None], k + 1)
        faiss.omp_set_num_threads(threads)

    fns = {
        "bare FAISS index.search (1 thread)": bare,
        "similar(vector, with_meta=False)": lambda i: cat.similar(q_x[i], k=k, with_meta=False),
        "similar(source_id, with_meta=False)": lambda i: cat.similar(q_ids[i], k=k, with_meta=False),
        "similar(source_id), metadata": lambda i: cat.similar(q_ids[i], k=k),
        "similar(source_id), 4 meta columns": lambda i: cat.similar(q_ids[i], k=k, with_meta=FEW_COLUMNS),
        "similar(source_id, where: 20% pass)": lambda i: cat.similar(q_ids[i], k=k, where=where),
        "bare FAISS, index opened as before": lambda i: bare(i, before),
    }
    for i in range(args.queries):  # warm: the memory-mapped lists, the loaded tables, the filter
        for fn in fns.values():
            fn(i)
    lat = _interleaved(fns, args.queries)
    p50 = {name: float(np.median(v)) for name, v in lat.items()}
    base = p50["bare FAISS index.search (1 thread)"]

    # batch against single calls, the same source_ids (any part set), metadata joined in both
    batch_ids = [int(s) for s in rng.choice(all_ids, size=min(args.batch, len(all_ids)), replace=False)]
    t = time.perf_counter()
    answer = cat.similar(batch_ids, k=k)
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    for sid in batch_ids:
        cat.similar(sid, k=k)
    t_single = time.perf_counter() - t
    # the most a batch can gain: bare FAISS, one call for the batch against one call per vector
    bare_x = x[rng.choice(len(x), size=len(batch_ids))]
    t = time.perf_counter()
    index.search(bare_x, k + 1)
    t_bare_batch = time.perf_counter() - t
    n_one = min(1000, len(bare_x))
    t_bare_single = np.sum(_timed(lambda i: bare(i % len(q_x)), n_one)) / 1e3 * len(bare_x) / n_one

    # more like these: 40 sources of one class
    labelled = cat.sql("SELECT source_id FROM labels JOIN space USING (source_id) WHERE best_class_name = 'RRAB' "
                       "AND parts <> '' ORDER BY source_id").column("source_id").to_numpy()
    members = rng.choice(labelled, size=min(40, len(labelled)), replace=False)
    like_ms = _timed(lambda i: cat.like(members, top=100), 3)
    like_info = json.loads(cat.like(members, top=100).schema.metadata[b"like_info"])

    # recall@10 against exact search on the same vectors, the query itself excluded
    found = [cat.similar(s, k=k, with_meta=False).column("source_id").to_numpy() for s in q_ids]
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    _, nn = exact.search(q_x, k + 1)
    truth = np.array([[ids[j] for j in row if j != pick[r]][:k] for r, row in enumerate(nn)])
    recall = lc_index.recall_at_k(np.array(found), truth)

    sql_rows = _sql_side(cat_dir, q_ids[: min(args.sql_queries, args.queries)], k)
    shell_rows = _shell_side(cat_dir, q_ids[:5], k)

    kind = info["type"] + (f", nlist {info['nlist']}, nprobe {info['nprobe']}" if info["type"] != "flat" else "")
    print(f"latentcat query benchmark: n={args.n:,} sources, {len(ids):,} with every search-space part, k={k}")
    print(f"joint search-space index: {kind}, build recall@10 {info['recall_at_10']}; built in {t_build:.1f} s; "
          f"open {t_open:.1f} ms; first similar() {t_first:.0f} ms (loads source_meta and the search space)")
    print()
    print(f"{'measure':<40}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}   target")
    targets = {"similar(source_id), 4 meta columns": "<= 1.5x", "similar(source_id, where: 20% pass)": "<= 3x"}
    for name, v in lat.items():
        print(f"{name:<40}{np.median(v):9.3f}{np.percentile(v, 99):9.3f}{np.median(v) / base:8.1f}   "
              f"{targets.get(name, '')}")
    print(f"  (where {where!r}: {passing:,} of {total:,} sources pass, {passing / total:.0%})")
    print()
    n_b = len(batch_ids)
    print(f"batch of {n_b:,} source_ids, metadata joined: {t_batch:.2f} s ({t_batch / n_b * 1e3:.3f} ms per query, "
          f"{answer.num_rows:,} rows); {n_b:,} single calls: {t_single:.2f} s; "
          f"throughput {t_single / t_batch:.1f}x the single calls (target >= 20x)")
    print(f"  bare FAISS on the joint index, {n_b:,} vectors in one call: {t_bare_batch:.2f} s; one call each: "
          f"{t_bare_single:.2f} s (from {n_one:,}); the batch gain bare FAISS allows: {t_bare_single / t_bare_batch:.1f}x")
    check = like_info["self_check"]
    print(f"like(): {len(members)} RRAB sources, top 100: {np.median(like_ms):.0f} ms p50 of 3 "
          f"({np.median(like_ms) / base:.0f}x bare) on {like_info['blocks']}, {like_info['ranked']:,} sources ranked; "
          f"self-check: {check['recall']:.0%} of {check['held_out']} held-out members in the top 1% "
          f"(chance 1%), median rank {check['median_rank']:g}")
    print(f"  (RRAB is {len(labelled) / total:.0%} of this synthetic catalogue, one tight cluster: its members "
          f"are all alike, so the top 1% can hold few of them; the self-check finding a rare class hidden in a crowd is "
          f"tested in tests/test_query_like.py)")
    print(f"recall@10 of similar() against exact search ({args.queries} queries): {recall:.4f}")
    _print_sql(sql_rows + shell_rows, len(q_ids[:args.sql_queries]), base)
    cat.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
