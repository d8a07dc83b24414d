"""Active discovery against a fixed outlier ranking: interesting sources found in the first 100 shown.

On demo catalogues of simulated surveys (build/demo.toml; the survey's truth.parquet is the
oracle), an oracle calls the rare classes interesting (default: DCEP, T2CEP and MIRA, under
4 % of the sources) and everything else not. For each catalogue it prints how many
interesting sources are among the first 100 shown by

- the plain isolation forest (the catalogue's ``isolation_forest:space`` outlier ranking);
- ``Catalog.like`` seeded with the first interesting source of that ranking (its top 100);
- ``Catalog.discover`` answered by the oracle (the forest's ranking moved by each answer's
  neighbourhood, `latentcat.analysis.discover`), with its seconds per answer;
- where coniferest is installed, its AADForest and PineForest in the same loop on the same
  vectors (the active anomaly detectors latentcat compared and did not choose);

beside the target (discovery >= 3x the plain isolation forest). With ``--scale-n`` it also
times a session on that many random search-space-sized vectors (start, and seconds per answer).

    python benchmarks/discover.py --seeds 41 51              # two 20,000-source catalogues (~10 min)
    python benchmarks/discover.py --catalog demo_catalog     # an existing demo catalogue
    python benchmarks/discover.py --catalog demo_catalog --scale-n 1000000
    python benchmarks/discover.py --catalog demo_catalog --rare DCEP T2CEP   # Cepheids only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import latentcat
from latentcat.analysis.discover import Discovery

SHOWN = 100
TARGET = 3.0


def oracle_loop(session, interesting: dict[int, bool], n: int = SHOWN) -> list[int]:
    """Answer the first ``n`` sources a session shows; the source_ids called interesting."""
    found = []
    for _ in range(n):
        sid = session.next()
        if sid is None:
            break
        session.label(sid, interesting[sid])
        if interesting[sid]:
            found.append(sid)
    return found


def by_class(ids, cls: dict[int, str]) -> str:
    """``"MIRA 60, DCEP 30"``: the classes of ``ids``, most common first."""
    names, counts = np.unique([cls[int(s)] for s in ids], return_counts=True)
    return ", ".join(f"{names[i]} {counts[i]}" for i in np.argsort(-counts, kind="stable")) or "-"


def coniferest_loop(kind: str, x: np.ndarray, good: np.ndarray, seed: int, n: int = SHOWN) -> int | None:
    """The same loop with coniferest's AADForest or PineForest (100 trees of 256 sources; the
    model refitted on every answer); None where coniferest is not installed."""
    try:
        from coniferest.aadforest import AADForest
        from coniferest.label import Label
        from coniferest.pineforest import PineForest
    except ImportError:
        return None
    if kind == "aad":
        model = AADForest(n_trees=100, n_subsamples=256, random_seed=seed).fit(x)
    else:
        model = PineForest(n_trees=100, n_spare_trees=400, n_subsamples=256, random_seed=seed).fit(x)
    shown, labels = [], []
    for _ in range(n):
        score = model.score_samples(x)  # lower = more anomalous
        score[shown] = np.inf
        i = int(np.argmin(score))
        shown.append(i)
        labels.append(Label.A if good[i] else Label.R)
        model.fit_known(x, x[shown], np.array(labels))
    return int(good[shown].sum())


def one_catalogue(path: Path, rare: list[str], seed: int) -> dict:
    truth = pq.read_table(path / "truth.parquet", columns=["source_id", "class"]).to_pandas()
    good = dict(zip(truth["source_id"].to_numpy(np.int64).tolist(), truth["class"].isin(rare).tolist()))
    cls = dict(zip(truth["source_id"].to_numpy(np.int64).tolist(), truth["class"].tolist()))
    with latentcat.open(path) as cat:
        top_if = cat.sql("SELECT source_id FROM outlier_scores WHERE method = 'isolation_forest:space' "
                         "ORDER BY rank").column("source_id").to_numpy()
        first = next((int(s) for s in top_if if good[int(s)]), None)
        liked = cat.like([first], top=SHOWN, with_meta=False).column("source_id").to_pylist() if first else []
        t0 = time.perf_counter()
        session = cat.discover(seed=seed)
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = oracle_loop(session, good)
        per_answer = (time.perf_counter() - t0) / SHOWN
        truth_of_rows = np.array([good[int(s)] for s in session.ids])
        others = {k: coniferest_loop(k, session.x, truth_of_rows, seed) for k in ("aad", "pine")}
    return {
        "catalogue": str(path), "sources": len(good), "share": float(np.mean(list(good.values()))),
        "if": int(sum(good[int(s)] for s in top_if[:SHOWN])),
        "first_at": int(np.flatnonzero([good[int(s)] for s in top_if])[0]) + 1 if first else None,
        "like": int(sum(good[s] for s in liked)), "found": len(found), **others,
        "classes": {"IF": by_class([s for s in top_if[:SHOWN] if good[int(s)]], cls),
                    "like": by_class([s for s in liked if good[s]], cls), "discover": by_class(found, cls)},
        "start_s": start, "answer_s": per_answer, "parts": session.parts,
    }


def scale_row(n: int, dim: int, seed: int, answers: int = 20) -> tuple[float, float]:
    """Seconds to start a session on ``n`` random vectors (with given outlier scores) and per
    answer over ``answers`` answers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[: n // 100] += 4.0  # a rare cluster to find
    anomaly = np.linalg.norm(x, axis=1)
    t0 = time.perf_counter()
    session = Discovery(np.arange(n, dtype=np.int64), x, anomaly)
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(answers):
        sid = session.next()
        session.label(sid, sid < n // 100)
    return start, (time.perf_counter() - t0) / answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, action="append", default=[],
                        help="an existing demo catalogue with its truth.parquet (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="build a demo catalogue per survey seed")
    parser.add_argument("--n", type=int, default=20_000, help="sources per built catalogue (default 20000)")
    parser.add_argument("--rare", nargs="+", default=["DCEP", "T2CEP", "MIRA"], help="classes the oracle calls interesting")
    parser.add_argument("--forest-seed", type=int, default=0, help="seed of the coniferest forests, and of a forest fitted where a catalogue stores no outlier scores")
    parser.add_argument("--scale-n", type=int, default=0, help="also time a session on this many random vectors")
    args = parser.parse_args()
    if not args.catalog and not args.seeds:
        args.seeds = [41, 51]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(args.catalog)
        for s in args.seeds:
            from latentcat.build import build
            from latentcat.demo import demo_config

            out = Path(tmp) / f"seed{s}"
            t0 = time.perf_counter()
            build(demo_config(args.n, s), out=out)
            print(f"built the demo catalogue of survey seed {s} ({args.n} sources) in {time.perf_counter() - t0:.0f} s")
            paths.append(out)
        for p in paths:
            rows.append(one_catalogue(p, args.rare, args.forest_seed))

    print(f"\nInteresting sources ({', '.join(args.rare)}) in the first {SHOWN} shown; forest seed {args.forest_seed}\n")
    head = (f"{'catalogue':<20}{'sources':>8}{'share':>7}{'IF':>5}{'like':>6}{'discover':>10}{'x IF':>7}"
            f"{'s/answer':>10}{'AAD':>6}{'Pine':>6}   target")
    print(head)
    for r in rows:
        ratio = f"{r['found'] / r['if']:.1f}" if r["if"] else "-"
        met = "met" if r["found"] >= TARGET * r["if"] and r["found"] > 0 else "NOT met"
        name = Path(r["catalogue"]).name
        other = "".join(f"{'-' if r[k] is None else r[k]:>6}" for k in ("aad", "pine"))
        print(f"{name:<20}{r['sources']:>8}{r['share']:>7.1%}{r['if']:>5}{r['like']:>6}{r['found']:>10}{ratio:>7}"
              f"{r['answer_s']:>10.3f}{other}   discover >= {TARGET:g}x IF: {met}")
    for r in rows:
        print(f"  {Path(r['catalogue']).name}: vectors {r['parts']}; session start {r['start_s']:.2f} s; "
              f"like() seeded with the IF ranking's first interesting source (rank {r['first_at']})")
        for what, classes in r["classes"].items():
            print(f"    {what:<9} found {classes}")
    if args.scale_n:
        start, answer = scale_row(args.scale_n, 11, args.forest_seed)
        print(f"\nscale: {args.scale_n:,} random 11-D vectors: session start {start:.1f} s, {answer:.2f} s per answer")


if __name__ == "__main__":
    main()
