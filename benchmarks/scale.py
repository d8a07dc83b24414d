"""What a latentcat build costs as the survey grows: time, throughput, peak memory, disk.

Two parts, one table each.

1. The whole build at each of --sizes simulated sources (default 10k): simulate, ingest,
   features, train, embed, catalogue, analyse. Every stage runs in its own process, so its
   peak RSS is its own (``os.wait4``). Training runs --train-epochs epochs per model (the
   full training is a GPU job; the table gives its samples/s, and the time of one epoch at
   4M). The last columns extrapolate each stage linearly from the largest size to 4M sources
   on this machine, and to a 16-core machine for the stages that run per shard in parallel
   (features, embed: their throughput is per worker process; the other stages are counted
   as serial, which overestimates them: ingest reads its files in parallel too, and the
   analyse stage fits its map on a capped sample).

2. The query side at --query-n sources (default 1M; 4M by hand): a synthetic catalogue with
   the exact schemas (tests/catalog_fixtures.py) is written with `write_catalog`, then the
   FAISS index build, the DuckDB file size, similar() p50/p99 and recall@10 against exact
   search, and the analyse stage as a build runs it on its labelled sources: the default
   classifier (cross-validated on a capped sample, fitted once, predictions for every source),
   both outlier rankings over every source and the 2-D map, each with its peak RSS, next to
   the targets.

    python benchmarks/scale.py                              # 10k build + 1M query side (~10 min)
    python benchmarks/scale.py --sizes 10000 100000         # by hand
    python benchmarks/scale.py --sizes --query-n 4000000    # the 4M query side only, by hand
    python benchmarks/scale.py --sizes --query-n 4000000 --keep /data/bench   # keep its catalogue,
    python benchmarks/scale.py --sizes --reuse /data/bench/latentcat-scale-q4000000-XXXX  # and re-time it
    python benchmarks/scale.py --sizes --reuse /data/bench/latentcat-scale-q4000000-XXXX --steps map  # one step
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = 4_000_000
CORES_BIG = 16
PARALLEL_STAGES = {"features", "embed"}
PIPELINE = ("simulate", "ingest", "features", "train", "embed", "catalog", "analyse")


# ---- one stage in its own process -------------------------------------------------------

def _config_text(n: int, epochs: int, workers: int) -> str:
    """build/demo.toml with the survey size, training epochs and worker count replaced."""
    import tomllib

    raw = tomllib.loads((ROOT / "build" / "demo.toml").read_text())
    raw["inputs"]["simulate_n"] = n
    raw["features"]["workers"] = workers
    for m in ("xp", "dmdt", "fold"):
        raw["models"][m]["max_epochs"] = epochs
        raw["models"][m]["patience"] = epochs
    raw["models"]["progress"] = False
    lines = [f"seed = {raw.pop('seed', 0)}"]
    for table, body in raw.items():
        flat = {k: v for k, v in body.items() if not isinstance(v, dict)}
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in flat.items()]
        for sub, sbody in body.items():
            if isinstance(sbody, dict):
                lines.append(f"[{table}.{sub}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in sbody.items()]
    return "\n".join(lines) + "\n"


def run_stage(stage: str, work: Path) -> dict:
    """Run one build stage on the folders under ``work``; return its count and report."""
    from latentcat.config import load_build_config

    cfg = load_build_config(work / "config.toml")
    stage_dir, feat, models, emb, cat = (work / d for d in ("stage", "features", "models", "embeddings", "cat"))
    if stage == "simulate":
        from latentcat.gaia.simulate import simulate_survey

        simulate_survey(n=int(cfg.inputs["simulate_n"]), seed=cfg.seed, out=work / "simulated")
        return {"n": int(cfg.inputs["simulate_n"])}
    if stage == "ingest":
        from latentcat.gaia.ingest import ingest

        ingest([work / "simulated" / "archive"], stage_dir, n_workers=int(cfg.features["workers"]))
        return {"n": int(cfg.inputs["simulate_n"])}
    if stage == "features":
        from latentcat.features.extract import extract_features

        rep = extract_features(stage_dir, feat, shard_size=int(cfg.features["shard_size"]),
                               n_workers=int(cfg.features["workers"]), resume=False)
        return {"n": int(cfg.inputs["simulate_n"]), "workers": int(cfg.features["workers"]), "report": rep}
    if stage == "train":
        from latentcat.models.trainer import train

        rep = train(feat, models, config=cfg.train, device="cpu")
        samples = sum(r.get("n_train", 0) * r.get("epochs", 0) for r in rep.get("models", rep).values()
                      if isinstance(r, dict))
        return {"n": int(cfg.inputs["simulate_n"]), "samples": samples, "report": rep}
    if stage == "embed":
        from latentcat.models.embed import embed

        workers = int(cfg.features["workers"])
        rep = embed(feat, models, emb, device="cpu", threads=1, n_workers=workers)
        return {"n": rep["n_sources"], "workers": workers, "report": rep}
    if stage == "catalog":
        from latentcat.catalog.store import write_catalog

        cat.mkdir(exist_ok=True)
        rep = write_catalog(cat, stage_dir, feat, emb, {"seed": cfg.seed}, seed=cfg.seed)
        return {"n": int(cfg.inputs["simulate_n"]), "report": rep}
    if stage == "analyse":
        from latentcat.build import analyse

        rep = analyse(cat, cfg)
        return {"n": int(cfg.inputs["simulate_n"]), "report": rep}
    raise SystemExit(f"unknown stage {stage!r}")


def _in_process(args: list[str]) -> tuple[dict, float, float]:
    """Run ``scale.py _stage ...`` in a child; return its JSON result, wall seconds, peak RSS MiB."""
    out = Path(args[-1]) / "stage_result.json"
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "_stage", *args],
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {args[0]} failed (exit {os.waitstatus_to_exitcode(status)})")
    return json.loads(out.read_text()), seconds, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def _du(path: Path) -> float:
    """Size on disk of a file or folder, MiB."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


# ---- part 1: the whole build at growing sizes ---------------------------------------------

def pipeline(sizes: list[int], epochs: int, workers: int, keep: Path | None) -> list[dict]:
    """Run the build stage by stage at each size; one row per (size, stage)."""
    rows = []
    for n in sizes:
        tmp = tempfile.mkdtemp(prefix=f"latentcat-scale-{n}-", dir=keep)
        work = Path(tmp)
        (work / "config.toml").write_text(_config_text(n, epochs, workers))
        for stage in PIPELINE:
            res, seconds, rss = _in_process([stage, str(work)])
            units = res.get("samples") if stage == "train" else res["n"]
            row = {"n": n, "stage": stage, "seconds": seconds, "rss_mib": rss, "units": units,
                   "workers": res.get("workers", 1)}
            if stage == "catalog":
                row["disk_mib"] = _du(work / "cat")
                row["duckdb_mib"] = _du(work / "cat" / "catalog.duckdb")
            rows.append(row)
            print(f"  n={n:,} {stage:<9} {seconds:8.1f} s  peak RSS {rss:7.0f} MiB", flush=True)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def print_pipeline(rows: list[dict], epochs: int) -> None:
    """The stage table with the 4M extrapolation from the largest size."""
    largest = max(r["n"] for r in rows)
    print(f"\nwhole build, stage by stage (training: {epochs} epoch(s) per model)")
    print(f"{'sources':>9} {'stage':<9} {'seconds':>9} {'per s':>10} {'peak MiB':>9} {'disk MiB':>9}"
          f" {'4M here':>9} {'4M 16-core':>11}")
    total_here = total_big = 0.0
    for r in rows:
        rate = r["units"] / r["seconds"] if r["seconds"] else float("nan")
        unit = "samples" if r["stage"] == "train" else ""
        here = big = float("nan")
        if r["n"] == largest and r["stage"] != "simulate":
            scale = FULL / r["n"]
            here = r["seconds"] * scale
            par = CORES_BIG / r["workers"] if r["stage"] in PARALLEL_STAGES else 1
            big = here / par
            total_here += here
            total_big += big
        disk = f"{r['disk_mib']:9.0f}" if "disk_mib" in r else f"{'':>9}"
        ext = f" {_hm(here):>9} {_hm(big):>11}" if here == here else ""
        print(f"{r['n']:>9,} {r['stage']:<9} {r['seconds']:9.1f} {rate:10,.0f} {r['rss_mib']:9.0f} {disk}{ext}"
              + (f"  ({unit}/s)" if unit else ""))
    print(f"{'':>9} {'total':<9} {'':>9} {'':>10} {'':>9} {'':>9} {_hm(total_here):>9} {_hm(total_big):>11}"
          f"  (train: {epochs} epoch(s); a full training is a GPU job)")
    cat = [r for r in rows if r["stage"] == "catalog" and r["n"] == largest]
    if cat:
        print(f"catalogue on disk at {largest:,}: {cat[0]['disk_mib']:.0f} MiB"
              f" (catalog.duckdb {cat[0]['duckdb_mib']:.0f} MiB) -> 4M ~{cat[0]['disk_mib'] * FULL / largest / 1024:.1f} GiB")


def _hm(seconds: float) -> str:
    if seconds != seconds:
        return ""
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


# ---- part 2: the query side at 1M / 4M ----------------------------------------------------

def run_query_stage(stage: str, work: Path) -> dict:
    """One step of the query-side benchmark on the synthetic catalogue under ``work``."""
    import numpy as np

    params = json.loads((work / "params.json").read_text())
    if stage == "catalog":
        sys.path.insert(0, str(ROOT / "tests"))
        from catalog_fixtures import write_inputs

        from latentcat.catalog.store import write_catalog

        inputs = write_inputs(work / "inputs", n=params["n"], seed=0, n_shards=8, with_arrays=False, shuffle=True)
        t = time.perf_counter()
        rep = write_catalog(work / "cat", build_info={"seed": 0}, seed=0, **inputs)
        shutil.rmtree(work / "inputs")
        joint = rep["indexes"]["xp+dmdt+fold"]
        return {"seconds": time.perf_counter() - t, "index": joint,
                "index_seconds": sum(v.get("build_seconds", 0.0) for v in rep["indexes"].values()),
                "duckdb_mib": _du(work / "cat" / "catalog.duckdb"), "disk_mib": _du(work / "cat")}
    from latentcat.query import open as open_catalog
    from latentcat.analyse import fit_classifier, fit_map_model, fit_outliers

    with open_catalog(work / "cat") as cat:
        if stage == "similar":
            import faiss

            # the search space of the sources with every part: what similar() searches by default
            table = cat.sql("SELECT source_id, list_concat(list_concat(list_concat(s_xp, s_dmdt), s_fold), s_colour) "
                            "AS v FROM space WHERE parts = 'xp+dmdt+fold+colour' ORDER BY source_id")
            ids = table.column("source_id").to_numpy()
            v = table.column("v").combine_chunks()
            x = v.flatten().to_numpy().astype(np.float32).reshape(len(v), -1)
            pick = np.random.default_rng(1).choice(len(ids), size=params["queries"], replace=False)
            cat.similar(int(ids[pick[0]]), k=10)  # loads the index
            lat, lat_ids, found = [], [], []
            for i in pick:
                t = time.perf_counter()
                found.append(cat.similar(int(ids[i]), k=10).column("source_id").to_numpy())
                lat.append(time.perf_counter() - t)
                t = time.perf_counter()
                cat.similar(int(ids[i]), k=10, with_meta=False)
                lat_ids.append(time.perf_counter() - t)
            exact = faiss.IndexFlatL2(x.shape[1])
            exact.add(x)
            _, nn = exact.search(x[pick], 11)
            hits = [len(set(f) & set(ids[[j for j in row if j != pick[r]][:10]])) for r, (f, row) in enumerate(zip(found, nn))]
            ms = lambda a, q: float(np.percentile(a, q) * 1e3)  # noqa: E731
            return {"p50_ms": ms(lat, 50), "p99_ms": ms(lat, 99), "ids_p50_ms": ms(lat_ids, 50),
                    "ids_p99_ms": ms(lat_ids, 99), "recall_at_10": float(np.mean(hits) / 10)}
        if stage == "classify":  # the build's default: hgb, cross-validated on a capped sample, fitted once
            t = time.perf_counter()
            res = fit_classifier(cat, seed=0)
            return {"seconds": time.perf_counter() - t, "rows": res.predictions.num_rows,
                    "labelled": int(sum(res.report.column("support").to_pylist())), "macro_f1": res.macro_f1}
        if stage == "outliers":  # both rankings the build writes
            t = time.perf_counter()
            out = fit_outliers(cat, seed=0)[0]
            fit_outliers(cat, "recon_loss", "all", seed=0)
            return {"seconds": time.perf_counter() - t, "rows": out.num_rows}
        if stage == "map":
            t = time.perf_counter()
            rows = fit_map_model(cat, seed=0)[0]
            return {"seconds": time.perf_counter() - t, "rows": rows.num_rows}
    raise SystemExit(f"unknown stage {stage!r}")


QUERY_STEPS = ("similar", "classify", "outliers", "map")


def query_side(n: int, queries: int, keep: Path | None, reuse: Path | None = None,
               steps: tuple[str, ...] = QUERY_STEPS) -> None:
    """Build a synthetic catalogue of ``n`` sources (or reuse a kept one) and time the query-side ``steps``."""
    work = reuse or Path(tempfile.mkdtemp(prefix=f"latentcat-scale-q{n}-", dir=keep))
    if reuse is None:
        (work / "params.json").write_text(json.dumps({"n": n, "queries": queries}))
    results = {}
    if reuse is not None:
        results["catalog"] = json.loads((work / "catalog_result.json").read_text())
        n = json.loads((work / "params.json").read_text())["n"]
    for stage in ("catalog", *steps):
        if stage in results:
            continue
        res, seconds, rss = _in_process(["query:" + stage, str(work)])
        if stage == "catalog":
            (work / "catalog_result.json").write_text(json.dumps({**res, "wall": seconds, "rss": rss}))
        results[stage] = {**res, "wall": seconds, "rss": rss}
        print(f"  n={n:,} {stage:<9} {seconds:8.1f} s  peak RSS {rss:7.0f} MiB", flush=True)
    if keep is None and reuse is None:
        shutil.rmtree(work, ignore_errors=True)
    c = results["catalog"]
    idx = c["index"]
    kind = idx["type"] + (f" nlist={idx['nlist']} nprobe={idx['nprobe']}" if idx["type"] != "flat" else "")
    print(f"\nquery side at {n:,} sources (synthetic latents, exact schemas); joint index {kind}")
    print(f"{'step':<44}{'measured':>22}{'peak MiB':>10}   target at 4M")
    print(f"{'catalogue write (tables + all FAISS indexes)':<44}{c['seconds']:>20.1f} s{c['rss']:>10.0f}")
    print(f"{'  FAISS index builds (all block sets)':<44}{c['index_seconds']:>20.1f} s{'':>10}   < 5 min")
    print(f"{'  catalog.duckdb size':<44}{c['duckdb_mib']:>18.0f} MiB{'':>10}   < 2 GB")
    print(f"{'  catalogue folder size':<44}{c['disk_mib']:>18.0f} MiB")
    if "similar" in results:
        s = results["similar"]
        print(f"{'similar(), ids and distances, p50 / p99':<44}{s['ids_p50_ms']:>10.2f} / {s['ids_p99_ms']:6.2f} ms{s['rss']:>10.0f}   p50 < 5 ms")
        print(f"{'similar() with metadata, p50 / p99':<44}{s['p50_ms']:>10.2f} / {s['p99_ms']:6.2f} ms")
        print(f"{'similar() recall@10 vs exact':<44}{s['recall_at_10']:>22.3f}{'':>10}   >= 0.95")
    names = {"classify": "analyse: classifier (hgb, CV 20k, fit 200k)",
             "outliers": "analyse: isolation forest + loss ranking, all",
             "map": "analyse: 2-D map (fit on <= 100k, place all)"}
    timed = [results[x] for x in names if x in results]
    for x, label in names.items():
        if x in results:
            print(f"{label:<44}{results[x]['seconds']:>20.1f} s{results[x]['rss']:>10.0f}")
    if len(timed) == len(names):
        whole = sum(r["seconds"] for r in timed)
        print(f"{'analyse, the three together':<44}{whole:>20.1f} s{max(r['rss'] for r in timed):>10.0f}   < 10 min")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and print the two tables."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":  # a child process: run one stage, write its result
        stage, work = argv[1], Path(argv[2])
        if stage.startswith("query:"):
            res = run_query_stage(stage.split(":", 1)[1], work)
        else:
            res = run_stage(stage, work)
        (work / "stage_result.json").write_text(json.dumps(res, default=str))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000], help="survey sizes for the whole build")
    ap.add_argument("--train-epochs", type=int, default=1, help="epochs per model in the build (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="feature-stage worker processes (default 2)")
    ap.add_argument("--query-n", type=int, default=1_000_000, help="sources for the query side (0: skip)")
    ap.add_argument("--queries", type=int, default=200, help="similar() calls timed")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folders under this folder")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a query-side work folder kept by --keep: time the queries again without rebuilding")
    ap.add_argument("--steps", nargs="*", choices=QUERY_STEPS, default=list(QUERY_STEPS),
                    help="query-side steps to time (default all), e.g. --reuse DIR --steps map")
    args = ap.parse_args(argv)
    print(f"latentcat scale benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if args.sizes:
        print_pipeline(pipeline(args.sizes, args.train_epochs, args.workers, args.keep), args.train_epochs)
    if args.query_n or args.reuse:
        query_side(args.query_n, args.queries, args.keep, args.reuse, tuple(args.steps))


if __name__ == "__main__":
    main()
