"""Response times of the web explorer (`latentcat serve`) on a synthetic catalogue.

Builds a catalogue of --n sources (tests/catalog_fixtures.py: the schemas of docs/schemas.md,
clusters per class, faint sources without XP, feature arrays for the thumbnails, feature
shards of 20,000 sources in source_id order as a build writes them) with a 2-D map (one blob
per class), starts the explorer in this process on a free port and times real
HTTP requests from one client, one at a time:

- source page: the HTML of ``/?source_id=ID`` with its 10 neighbours (Catalog.similar with
  metadata, the source's metadata, predictions and outlier ranks, the map section), each
  request a different source, so no cache helps; also with a ``where`` filter;
- map view: a PNG of the whole map (all n points binned) and of a window 1/8 as wide, each
  request a slightly different window, so no cached image is reused; and a click (the
  nearest source to a pixel, answered by a redirect);
- figures: one source's fold / XP / dm-dt figure (`latentcat.plots.plot_similar`, matplotlib)
  and its small thumbnail (Pillow), never drawn before;
- the whole source page as a browser loads it: the HTML, the map PNG, the source's figure and
  its 10 neighbours' thumbnails, none drawn before, one after the other;
- the map script's requests: a hover name (``/api/nearest``), a box of about 1,000 sources
  (``/selection``, the HTML of its first page of 50; their thumbnails are images of their own), a lasso (a
  circle of 40 corners inside that box) and "more like these" of the box (``/like``: `Catalog.like` of its
  members, the top 100 listed, with the self-check).

    OMP_NUM_THREADS=1 python3 benchmarks/serve.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from catalog_fixtures import CLASSES, write_inputs  # noqa: E402

from latentcat.catalog.store import write_catalog, write_map  # noqa: E402
from latentcat.features import SHARD_SIZE  # noqa: E402
from latentcat.query import open as open_catalog  # noqa: E402
from latentcat.serve import make_server  # noqa: E402
from latentcat.serve.mapview import View  # noqa: E402


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        return response.read()


def _timed(fn, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t
    return out * 1e3  # ms


def _write_map(cat_dir: Path, seed: int, kind: str = "blobs") -> int:
    """A map table: one Gaussian blob per DR3 class (unlabelled sources spread over all), or
    with ``kind="fitted"`` the map a build fits (`latentcat.analyse.fit_map_model`: the
    parametric map of the search space), on which a box holds sources alike in the space."""
    if kind == "fitted":
        from latentcat.analyse import fit_map_model

        with open_catalog(cat_dir) as cat:
            xy, _ = fit_map_model(cat, seed=seed)
        return write_map(cat_dir, xy)
    with open_catalog(cat_dir) as cat:
        rows = cat.sql("SELECT e.source_id, l.best_class_name FROM embeddings e LEFT JOIN labels l USING (source_id) "
                       "ORDER BY e.source_id").to_pydict()
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    centres = rng.uniform(-10, 10, size=(len(names) + 1, 2))
    which = np.array([names.index(c) if c in names else len(names) for c in rows["best_class_name"]])
    xy = centres[which] + rng.normal(0, 1.2, size=(which.size, 2))
    xy[which == len(names)] = rng.uniform(-12, 12, size=((which == len(names)).sum(), 2))
    table = pa.table({"source_id": pa.array(rows["source_id"], pa.int64()),
                      "x": pa.array(xy[:, 0], pa.float32()), "y": pa.array(xy[:, 1], pa.float32()),
                      "blocks": pa.array(["dmdt+fold+colour"] * which.size, pa.string())})
    return write_map(cat_dir, table)


def main(argv: list[str] | None = None) -> None:
    """Build a synthetic catalogue, serve it, print the response-time table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of sources (default 100k)")
    ap.add_argument("--requests", type=int, default=200, help="page and map requests timed, each")
    ap.add_argument("--thumbnails", type=int, default=20, help="source figures (matplotlib) timed")
    ap.add_argument("--full-pages", type=int, default=10, help="whole source pages (HTML, map, figure, thumbnails) timed")
    ap.add_argument("--selections", type=int, default=5, help="box selections of ~1,000 sources (and their like) timed")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the catalogue here")
    ap.add_argument("--map", choices=("blobs", "fitted"), default="blobs",
                    help="the map: one blob per class (quick), or fitted on the search space as a build does")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentcat-bench-serve-")
        args.workdir = Path(tmp.name)
    t = time.perf_counter()
    # feature and embedding shards of SHARD_SIZE sources in source_id order, as a build writes them
    inputs = write_inputs(args.workdir / "inputs", n=args.n, seed=args.seed, n_shards=max(1, args.n // SHARD_SIZE))
    t_inputs = time.perf_counter() - t
    t = time.perf_counter()
    cat_dir = args.workdir / "cat"
    write_catalog(cat_dir, build_info={"seed": args.seed}, seed=args.seed, **inputs)
    shutil.copytree(inputs["features_dir"], cat_dir / "features")  # as a build leaves them, for the thumbnails
    n_map = _write_map(cat_dir, args.seed, args.map)
    t_build = time.perf_counter() - t

    t = time.perf_counter()
    server = make_server(cat_dir, port=0)
    t_start = time.perf_counter() - t
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = server.url
    explorer = server.explorer
    try:
        with open_catalog(cat_dir) as cat:
            ids = cat.sql("SELECT source_id FROM embeddings WHERE has_dmdt ORDER BY source_id")["source_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(ids, size=min(ids.size, 5 * args.requests + args.thumbnails + 20 * args.full_pages),
                          replace=False)
        queue = iter(pick.tolist())

        t_first = _timed(lambda i: _get(f"{base}?source_id={next(queue)}"), 1)[0]
        page = _timed(lambda i: _get(f"{base}?source_id={next(queue)}"), args.requests)
        where = urllib.parse.quote("phot_g_mean_mag < 16")
        page_where = _timed(lambda i: _get(f"{base}?source_id={next(queue)}&where={where}"), args.requests)

        full = explorer.map.full

        def jitter(view: View, i: int) -> View:  # a new window each time: no cached image
            return view.panned(1e-4 * (i + 1), 0)

        map_full = _timed(lambda i: _get(f"{base}map.png?view={jitter(full, i).param()}"), args.requests)
        centres = explorer.map.x[rng.integers(0, explorer.map.n, args.requests)], \
            explorer.map.y[rng.integers(0, explorer.map.n, args.requests)]
        zoomed = [full.zoomed(8, (float(centres[0][i]), float(centres[1][i]))) for i in range(args.requests)]
        map_zoom = _timed(lambda i: _get(f"{base}map.png?view={zoomed[i].param()}&colour=period"), args.requests)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(NoRedirect)

        def click(i: int) -> None:
            url = f"{base}click?at.x={rng.integers(0, 880)}&at.y={rng.integers(0, 600)}&view={zoomed[i].param()}"
            try:
                opener.open(url, timeout=300).read()
            except urllib.error.HTTPError as err:  # the 303 redirect
                err.read()

        clicks = _timed(click, args.requests)
        figures = _timed(lambda i: _get(f"{base}plot/source.png?source_id={next(queue)}"), args.thumbnails)
        thumbs = _timed(lambda i: _get(f"{base}plot/thumb.png?source_id={next(queue)}"), args.requests)

        def whole_page(i: int) -> None:
            sid = next(queue)
            html = _get(f"{base}?source_id={sid}").decode()
            _get(f"{base}map.png?source_id={sid}")
            for src in re.findall(r'src="(/plot/(?:source|thumb)\.png\?source_id=\d+)"', html):
                _get(base.rstrip("/") + src)

        whole = _timed(whole_page, args.full_pages)
        hover = _timed(lambda i: _get(f"{base}api/nearest?view={zoomed[i].param()}&px={rng.integers(0, 880)}"
                                      f"&py={rng.integers(0, 600)}"), args.requests)

        def box_of(i: int, size: int = 1000) -> str:  # a square box around a random point holding ~size sources
            c = int(rng.integers(0, explorer.map.n))
            far = np.maximum(np.abs(explorer.map.x - explorer.map.x[c]), np.abs(explorer.map.y - explorer.map.y[c]))
            half = float(np.partition(far, min(size, far.size - 1))[min(size, far.size - 1)])
            cx, cy = float(explorer.map.x[c]), float(explorer.map.y[c])
            return View(cx - half, cx + half, cy - half, cy + half).param()

        boxes = [box_of(i) for i in range(args.selections)]
        selections = _timed(lambda i: _get(f"{base}selection?box={boxes[i]}"), args.selections)

        def lasso_of(box: str) -> str:  # the circle inscribed in a box, 40 corners
            x0, x1, y0, y1 = (float(v) for v in box.split(","))
            t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            xs, ys = (x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t), (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)
            return ",".join(f"{v:.6g}" for xy in zip(xs, ys) for v in xy)

        lassos = _timed(lambda i: _get(f"{base}selection?lasso={lasso_of(boxes[i])}"), args.selections)
        likes = _timed(lambda i: _get(f"{base}like?box={boxes[i]}"), args.selections)
        import faiss  # the same with FAISS on every core, as a `latentcat serve` started without OMP_NUM_THREADS runs

        one = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        likes_all = _timed(lambda i: _get(f"{base}like?box={boxes[i]}"), args.selections)
        faiss.omp_set_num_threads(one)
    finally:
        server.shutdown()
        server.server_close()
        if tmp is not None:
            tmp.cleanup()

    p = lambda a, q: f"{np.percentile(a, q):9.1f}"  # noqa: E731
    print(f"latentcat serve benchmark: n={args.n:,} sources, {n_map:,} on the map ({args.map}), one client, "
          "requests one at a time")
    print(f"inputs written in {t_inputs:.1f} s, catalogue and map in {t_build:.1f} s; "
          f"explorer started (open + map loaded) in {t_start * 1e3:.0f} ms")
    print()
    print(f"{'request':<58}{'p50 ms':>9}{'p99 ms':>10}{'n':>6}")
    rows = [
        ("first source page (cold)", np.array([t_first])),
        ("source page, 10 neighbours (HTML)", page),
        ("source page, 10 neighbours, where phot_g_mean_mag < 16", page_where),
        (f"map view PNG, whole map ({n_map:,} points)", map_full),
        ("map view PNG, window 1/8 wide, coloured by period", map_zoom),
        ("map click -> nearest source (redirect)", clicks),
        ("source figure PNG (plot_similar, matplotlib, not cached)", figures),
        ("thumbnail PNG (Pillow, not cached)", thumbs),
        ("whole source page: HTML, map, figure, 10 thumbnails", whole),
        ("hover name (api/nearest, JSON)", hover),
        ("box of ~1,000 sources: selection page 1 (HTML)", selections),
        ("lasso (40 corners) inside that box: selection page 1", lassos),
        ("box of ~1,000 sources: more like these (like(), top 100)", likes),
        (f"the same, FAISS on {os.cpu_count()} threads (serve's default)", likes_all),
    ]
    for name, values in rows:
        print(f"{name:<58}{p(values, 50)} {p(values, 99)}{values.size:6d}")


if __name__ == "__main__":
    main()
