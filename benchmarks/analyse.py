"""Speed of the analyses on the latent codes: classifiers, isolation forest, the 2-D map.

Builds a synthetic catalogue of --n sources (the schemas of docs/schemas.md, clusters per
class, faint sources without XP), then times through the read-only Catalog:

- classify: cross-validation (--cv folds) + final fit + predictions for every source, per
  model, with the cross-validated macro F1;
- isolation forest: one forest per block set, every source scored;
- recon_loss: the reconstruction-loss score;
- map: the parametric map fitted (on at most --map-fit sources) and applied to every
  source with all three blocks, with its trustworthiness on a 5k sample.

    python benchmarks/analyse.py --n 20000        # a quick run
    python benchmarks/analyse.py                  # 100k sources
    python benchmarks/analyse.py --n 1000000      # by hand
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.manifold import trustworthiness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from catalog_fixtures import write_inputs  # noqa: E402

from latentcat.analyse import fit_classifier, fit_map_model, fit_outliers  # noqa: E402
from latentcat.catalog.index import codes_to_numpy, vectors_for  # noqa: E402
from latentcat.catalog.store import write_catalog  # noqa: E402
from latentcat.query import open as open_catalog  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    """Build a synthetic catalogue and print the analysis benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of sources (default 100k)")
    ap.add_argument("--models", default="logreg,rf,hgb", help="comma-separated classifiers")
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--map-fit", type=int, default=100_000, help="largest map training sample")
    ap.add_argument("--map-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="latentcat-bench-") as tmp:
        inputs = write_inputs(Path(tmp) / "in", n=args.n, seed=args.seed, n_shards=4,
                              with_arrays=False)
        _, t_build = _timed(lambda: write_catalog(Path(tmp) / "cat", build_info={}, **inputs))
        rows = [("build catalogue", t_build, "")]
        with open_catalog(Path(tmp) / "cat") as cat:
            for model in args.models.split(","):
                res, t = _timed(lambda: fit_classifier(cat, model=model, cv=args.cv, seed=args.seed))
                rows.append((f"classify {model} (cv {args.cv} + fit + predict)", t,
                             f"macro F1 {res.macro_f1:.3f}, {res.predictions.num_rows} predicted"))
            out, t = _timed(lambda: fit_outliers(cat, seed=args.seed)[0])
            rows.append(("isolation forest (all sources)", t, f"{out.num_rows} scored"))
            out, t = _timed(lambda: fit_outliers(cat, method="recon_loss")[0])
            rows.append(("recon_loss score", t, f"{out.num_rows} scored"))
            xy, t = _timed(lambda: fit_map_model(cat, seed=args.seed, max_fit=args.map_fit,
                                               n_steps=args.map_steps)[0])
            codes = cat.sql(
                "SELECT source_id, z_xp, z_dmdt, z_fold FROM embeddings ORDER BY source_id"
            )
            ids, blocks = codes_to_numpy(codes)
            _, z = vectors_for(ids, blocks, ("xp", "dmdt", "fold"))
            pick = np.random.default_rng(0).choice(len(z), min(5000, len(z)), replace=False)
            xy_np = np.column_stack([xy.column("x").to_numpy(), xy.column("y").to_numpy()])
            tw = trustworthiness(z[pick], xy_np[pick], n_neighbors=10)
            rows.append((f"map (fit on <= {args.map_fit}, {args.map_steps} steps, apply all)", t,
                         f"{xy.num_rows} mapped, trustworthiness@10 {tw:.3f}"))

    print(f"\nlatentcat analyse benchmark: n = {args.n}")
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'seconds':>8}  notes")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:8.2f}  {note}")


if __name__ == "__main__":
    main()
