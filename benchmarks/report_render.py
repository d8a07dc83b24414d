"""Report benchmark: how fast the figures draw, and what the HTML report looks like.

Simulates a survey (latentcat.gaia.simulate), ingests it and extracts its features, then

1. times ``plot_map`` on ``--map-points`` points (a mixture of 15 Gaussian clusters, one
   category each: a stand-in for the latent map of a large catalogue, drawn by category
   and by a numeric colour);
2. times ``plot_similar`` (query + 5 neighbours), ``plot_confusion``, ``plot_loss_curves``
   (each drawn to PNG once) and ``write_report``;
3. renders the report in headless Chromium (when ``chromium`` is on PATH) and saves the
   screenshot next to it, so the page can be looked at as a reader sees it.

The report's map, classifier and outliers come from the simulated sources' light-curve
features (dm-dt map, log period, amplitude, skew), projected to 2-D by PCA: a stand-in for
the VAE latents that keeps this benchmark independent of training. The loss curves are the
dm-dt VAE's, trained for ``--epochs`` epochs on the same features.

Run:  python benchmarks/report_render.py                        (300 sources, 200k map points)
      python benchmarks/report_render.py --map-points 4000000   (the DR3-sized map)
      python benchmarks/report_render.py --examples docs/img    (also write the example figures)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def timed(label: str, timings: list, fn, *args, **kwargs):
    """Call ``fn`` and record its wall-clock time under ``label``."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    timings.append((label, time.perf_counter() - start))
    return result


def rendered(plot, *args, **kwargs):
    """Make a figure and render it to PNG once, so that timings include the drawing."""
    from latentcat.plots import figure_png

    fig = plot(*args, **kwargs)
    figure_png(fig)
    return fig


def cluster_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points in 15 Gaussian clusters: x, y, category name and a numeric value per point."""
    rng = np.random.default_rng(seed)
    names = np.array(["RRAB", "RRC", "DCEP", "T2CEP", "EA", "EB", "EW", "ELL", "MIRA", "SR", "DSCT",
                      "ROT", "YSO", "AGN", "CONST"])
    weight = rng.dirichlet(np.full(names.size, 2.0))
    centre = rng.uniform(-10, 10, size=(names.size, 2)).astype(np.float32)
    spread = rng.uniform(0.4, 1.6, size=names.size).astype(np.float32)
    code = rng.choice(names.size, size=n, p=weight)
    xy = centre[code] + rng.standard_normal((n, 2), dtype=np.float32) * spread[code, None]
    value = (np.log10(rng.uniform(0.1, 500, names.size))[code] + 0.2 * rng.standard_normal(n)).astype(np.float32)
    return xy[:, 0], xy[:, 1], names[code], value


def lc_feature_matrix(features) -> tuple[np.ndarray, np.ndarray]:
    """Standardised light-curve feature matrix of the sources that have one, and their source_ids."""
    ok = np.array([r is None for r in features.column("lc_reason").to_pylist()])
    t = features.filter(ok)
    dmdt = np.stack(t.column("dmdt").to_numpy(zero_copy_only=False)).astype(np.float32)
    extra = np.column_stack([np.log10(t.column("period").to_numpy()), t.column("g_amplitude").to_numpy(),
                             t.column("g_skew").to_numpy()]).astype(np.float32)
    m = np.hstack([dmdt, extra])
    m = (m - m.mean(axis=0)) / np.maximum(m.std(axis=0), 1e-6)
    return m.astype(np.float32), t.column("source_id").to_numpy()


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="simulated sources (default 300)")
    parser.add_argument("--map-points", type=int, default=200_000, help="points in the timed map (default 200k)")
    parser.add_argument("--epochs", type=int, default=15, help="dm-dt VAE epochs for the loss curves (default 15)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("report_render_out"), help="folder for the report")
    parser.add_argument("--examples", type=Path, default=None, help="also write the example figures here")
    args = parser.parse_args()

    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import NearestNeighbors

    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey
    from latentcat.models.config import TrainConfig
    from latentcat.models.trainer import train
    from latentcat.plots import figure_png, plot_confusion, plot_loss_curves, plot_map, plot_similar, read_feature_rows
    from latentcat.report import write_report

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    work = Path(tempfile.mkdtemp(prefix="report-render-"))
    try:
        simulate_survey(args.n, args.seed, work / "sim")
        ingest([work / "sim" / "archive"], work / "stage")
        extract_features(work / "stage", work / "features", shard_size=max(1, args.n // 3))
        cfg = TrainConfig(seed=args.seed, progress=False)
        cfg.dmdt.max_epochs = args.epochs
        train(work / "features", work / "models", cfg, modalities=("dmdt",), device="cpu")
        features = ds.dataset(work / "features").to_table()
        labels = {r["source_id"]: r["best_class_name"] for r in pq.read_table(work / "stage" / "labels.parquet").to_pylist()}
        g_mag = {r["source_id"]: r["phot_g_mean_mag"] for r in pq.read_table(work / "stage" / "sources.parquet").to_pylist()}
        matrix, ids = lc_feature_matrix(features)

        # the timed map: many points, by category and by a number
        x, y, cat, value = cluster_points(args.map_points, args.seed)
        timed(f"plot_map, {args.map_points:,} points, categories", timings, plot_map, x, y, categories=cat,
              highlight=[0, 1], out=out / "map_categories.png")
        timed(f"plot_map, {args.map_points:,} points, numeric colour", timings, plot_map, x, y, color=value,
              color_label="log10 period (d)", out=out / "map_numeric.png")

        # the report's own content, from the simulated sources
        xy = PCA(n_components=2, random_state=args.seed).fit_transform(matrix)
        classes = np.array([labels.get(int(s)) for s in ids], dtype=object)
        query = int(ids[np.flatnonzero(classes == "RR")[0]]) if (classes == "RR").any() else int(ids[0])
        map_fig = timed(f"plot_map, {ids.size} sources", timings, rendered, plot_map, xy[:, 0], xy[:, 1], categories=classes,
                        highlight={query: f"query {query}"}, ids=ids,
                        title="light-curve features, PCA (stand-in for the latent map)")

        labelled = np.array([c is not None for c in classes])
        y_true = classes[labelled].astype(str)
        y_pred = cross_val_predict(LogisticRegression(max_iter=2000), matrix[labelled], y_true, cv=3)
        names = sorted(set(y_true))
        p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=names, zero_division=0)
        classifier_table = [{"class": c, "sources": int(s), "precision": float(a), "recall": float(b), "F1": float(d)}
                            for c, s, a, b, d in zip(names, support, p, r, f)]
        confusion_fig = timed("plot_confusion", timings, rendered, plot_confusion,
                              confusion_matrix(y_true, y_pred, labels=names), names)

        nn = NearestNeighbors(n_neighbors=6).fit(matrix)
        dist, idx = nn.kneighbors(matrix[ids == query])
        rows = read_feature_rows(work / "features", ids[idx[0]])
        meta = {int(s): {"class": labels.get(int(s)), "g_mag": g_mag.get(int(s)), "distance": float(d)}
                for s, d in zip(ids[idx[0]], dist[0])}
        similar_fig = timed("plot_similar, query + 5", timings, rendered, plot_similar, rows.slice(0, 1), rows.slice(1), meta)

        forest = IsolationForest(random_state=args.seed).fit(matrix)
        score = -forest.score_samples(matrix)
        top = np.argsort(-score)[:5]
        top_rows = read_feature_rows(work / "features", ids[top])
        outliers = []
        for k, (sid, sc) in enumerate(zip(ids[top], score[top])):
            sid = int(sid)
            info = {"class": labels.get(sid), "g_mag": g_mag.get(sid), "distance": None}
            thumb = plot_similar(top_rows.slice(k, 1), [], {sid: info})
            outliers.append({"rank": k + 1, "source_id": sid, "score": float(sc), "class": labels.get(sid),
                             "G": g_mag.get(sid), "thumbnail": figure_png(thumb)})

        loss_fig = timed("plot_loss_curves", timings, rendered, plot_loss_curves, work / "models" / "dmdt" / "losses.csv")
        summary = {"sources": int(features.num_rows), "with light-curve features": int(ids.size),
                   "with XP": int(sum(r is None for r in features.column("xp_reason").to_pylist())),
                   "labelled": int(labelled.sum()), "classes": len(names), "seed": args.seed,
                   "map": "PCA of light-curve features (stand-in for the latents)"}
        report = timed("write_report", timings, write_report, out / "report.html", summary, figure_png(map_fig),
                       classifier_table, figure_png(confusion_fig), outliers,
                       figures={f"Sources like {query}": figure_png(similar_fig),
                                "dm-dt VAE loss curves": figure_png(loss_fig)})
        if args.examples is not None:
            args.examples.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "map_categories.png", args.examples / "map_categories.png")
            for name, fig in (("similar.png", similar_fig), ("confusion.png", confusion_fig),
                              ("loss_curves.png", loss_fig), ("map_catalogue.png", map_fig)):
                (args.examples / name).write_bytes(figure_png(fig))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        with tempfile.TemporaryDirectory() as profile:
            timed("chromium screenshot", timings, subprocess.run,
                  [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run",
                   f"--screenshot={(out / 'report.png').resolve()}", "--window-size=1200,2000",
                   f"--user-data-dir={profile}", report.resolve().as_uri()],
                  check=True, capture_output=True, timeout=120)

    print(f"{'step':<45} {'seconds':>8}")
    for label, seconds in timings:
        print(f"{label:<45} {seconds:8.2f}")
    print(f"report: {report} ({report.stat().st_size / 1e6:.2f} MB)"
          + (f", screenshot: {out / 'report.png'}" if browser else ", no chromium: no screenshot"))


if __name__ == "__main__":
    main()
