"""The web explorer under load: many clients at once, with slow filters among them.

Builds the synthetic catalogue of benchmarks/serve.py (--n sources, a 2-D map, feature shards
for the thumbnails), starts the explorer in this process with its query time limit
(--timeout, `latentcat serve --timeout`), and sends --requests requests from --concurrency
clients at once: source pages with their neighbours, the same with a plain ``where`` filter,
map views, thumbnails, and --slow source pages whose filter is a cross join that would run for
minutes. It prints, per kind of request, p50 / p99 / max response time and the errors (no
answer, or an HTTP status other than the expected one), and checks that every slow filter is
stopped at the time limit with a message page while the other requests keep being answered.

    OMP_NUM_THREADS=1 python3 benchmarks/serve_load.py --n 20000
    OMP_NUM_THREADS=1 python3 benchmarks/serve_load.py --n 100000 --requests 1000 --concurrency 50
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_fixtures import write_inputs  # noqa: E402
from serve import _write_map  # noqa: E402  (benchmarks/serve.py: one blob per class)

from latentcat.catalog.store import write_catalog  # noqa: E402
from latentcat.features import SHARD_SIZE  # noqa: E402
from latentcat.query import open as open_catalog  # noqa: E402
from latentcat.serve import make_server  # noqa: E402

SLOW = "(SELECT count(*) FROM range(200000) a, range(200000) b WHERE a.range + b.range = 7) > 0"
"""A filter that would run for minutes: the explorer must stop it at its time limit."""


def _request(url: str) -> tuple[int, float, bytes]:
    """(HTTP status or 0 for no answer, seconds, body)."""
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=300) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    except (urllib.error.URLError, OSError) as err:
        body, status = str(err).encode(), 0
    return status, time.perf_counter() - t, body


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="sources in the synthetic catalogue (default 20k)")
    ap.add_argument("--requests", type=int, default=200, help="requests in all (default 200)")
    ap.add_argument("--concurrency", type=int, default=50, help="clients at once (default 50)")
    ap.add_argument("--slow", type=int, default=5, help="requests among them with the slow filter (default 5)")
    ap.add_argument("--timeout", type=float, default=5.0, help="the explorer's query time limit, s (default 5)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the catalogue here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentcat-bench-load-")
        args.workdir = Path(tmp.name)
    cat_dir = args.workdir / "cat"
    if not (cat_dir / "catalog.duckdb").exists():
        inputs = write_inputs(args.workdir / "inputs", n=args.n, seed=args.seed, n_shards=max(1, args.n // SHARD_SIZE))
        write_catalog(cat_dir, build_info={"seed": args.seed}, seed=args.seed, **inputs)
        shutil.copytree(inputs["features_dir"], cat_dir / "features")
        _write_map(cat_dir, args.seed)
    with open_catalog(cat_dir) as cat:
        ids = cat.sql("SELECT source_id FROM embeddings WHERE has_dmdt ORDER BY source_id")["source_id"].to_numpy()

    server = make_server(cat_dir, port=0, timeout=args.timeout)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = server.url
    full = server.explorer.map.full
    rng = np.random.default_rng(args.seed)
    where = urllib.parse.quote("phot_g_mean_mag < 16")
    kinds = {  # kind -> (make a URL, the status it must answer with)
        "source page, 10 neighbours": (lambda sid, i: f"{base}?source_id={sid}", 200),
        "source page, where phot_g_mean_mag < 16": (lambda sid, i: f"{base}?source_id={sid}&where={where}", 200),
        "map view PNG (a new window each time)": (lambda sid, i: f"{base}map.png?view={full.panned(1e-4 * i, 0).param()}", 200),
        "thumbnail PNG": (lambda sid, i: f"{base}plot/thumb.png?source_id={sid}", 200),
    }
    plan = [list(kinds)[i % len(kinds)] for i in range(args.requests - args.slow)] + ["slow filter"] * args.slow
    rng.shuffle(plan)
    urls = []
    for i, kind in enumerate(plan):
        sid = int(rng.choice(ids))
        if kind == "slow filter":
            urls.append(f"{base}?source_id={sid}&where={urllib.parse.quote(SLOW)}")
        else:
            urls.append(kinds[kind][0](sid, i))
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            answers = list(pool.map(_request, urls))
    finally:
        wall = time.perf_counter() - t0
        server.shutdown()
        server.server_close()
        if tmp is not None:
            tmp.cleanup()

    print(f"latentcat serve under load: n={args.n:,} sources, {args.requests} requests from {args.concurrency} "
          f"clients at once, {args.slow} with a slow filter, time limit {args.timeout:g} s; {wall:.1f} s in all")
    print()
    print(f"{'request':<44}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}")
    errors_total = 0
    for kind in [*kinds, "slow filter"]:
        got = [a for a, k in zip(answers, plan) if k == kind]
        if not got:
            continue
        ms = np.array([s for _, s, _ in got]) * 1e3
        if kind == "slow filter":
            bad = sum(not (status == 200 and b"stopped after" in body) for status, _, body in got)
        else:
            bad = sum(status != kinds[kind][1] for status, _, _ in got)
        errors_total += bad
        print(f"{kind:<44}{len(got):5d}{np.percentile(ms, 50):10.0f}{np.percentile(ms, 99):10.0f}{ms.max():10.0f}{bad:8d}")
    print()
    print(f"errors: {errors_total} (a slow filter counts as one unless stopped at the time limit with a message page)")
    if errors_total:
        sys.exit(1)


if __name__ == "__main__":
    main()
